package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/tokenbroker/tokenbroker/internal/gcpace"
)

// configureRuntime sizes the Go runtime to the container it runs in and logs
// the result once.
//
// GOMAXPROCS needs nothing here: since Go 1.25 the runtime itself sets it to
// the lower of the CPUs it may run on and the cgroup CPU limit (rounded up, a
// limit below 2 counts as 2), and follows changes of that limit, unless
// GOMAXPROCS is set in the environment.
//
// GOMEMLIMIT is not derived by the runtime. github.com/KimMachineGun/automemlimit
// sets it to 90% of the cgroup memory limit, or of the machine's memory when
// there is no cgroup limit, leaving the rest for memory the Go heap limit does
// not count (stacks, the binary, kernel buffers). A GOMEMLIMIT (or
// AUTOMEMLIMIT=off) in the environment wins and is left untouched. A failure is
// logged and start-up goes on with the runtime's default (no limit).
//
// GOGC, unless set in the environment, is paced by internal/gcpace while
// ctx lasts: raised while allocation runs fast, 100 otherwise. The returned
// function waits for the pacer to stop (after ctx ends).
func configureRuntime(ctx context.Context, log *slog.Logger) (wait func()) {
	source := ""
	from := func(name string, p memlimit.Provider) memlimit.Provider {
		return func() (uint64, error) {
			limit, err := p()
			if err == nil {
				source = name
			}
			return limit, err
		}
	}
	limit, err := memlimit.Set(
		memlimit.WithRatio(0.9),
		memlimit.WithProvider(memlimit.ApplyFallback(
			from("cgroup", memlimit.FromCgroup),
			from("system", memlimit.FromSystem),
		)),
	)
	// The same order as memlimit.Set: the environment, then the providers.
	_, fromEnv := os.LookupEnv("GOMEMLIMIT")
	switch {
	case err != nil:
		log.Warn("could not set GOMEMLIMIT from the container's memory limit; running without one", "error", err)
		source = "none"
	case fromEnv:
		source = "GOMEMLIMIT"
	case os.Getenv("AUTOMEMLIMIT") == "off":
		source = "AUTOMEMLIMIT=off"
	case limit == math.MaxInt64:
		source = "none"
	}
	procs := "runtime" // CPUs or cgroup CPU limit, see above
	if os.Getenv("GOMAXPROCS") != "" {
		procs = "GOMAXPROCS"
	}
	gogc := "paced"
	done := make(chan struct{})
	if _, set := os.LookupEnv("GOGC"); set {
		gogc = "GOGC"
		close(done)
	} else {
		go func() {
			defer close(done)
			gcpace.Run(ctx, gcpace.Config{})
		}()
	}
	log.Info("runtime limits",
		"gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs_source", procs,
		"gomemlimit_bytes", limit, "gomemlimit_source", source, "gogc_source", gogc)
	return func() { <-done }
}
