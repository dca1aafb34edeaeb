// Command proxybench measures tokenbroker's proxy side by side with the
// references it is judged against, in one run on one machine: the upstream
// called directly, nginx with upstream keep-alive injecting a static header,
// a bare httputil.ReverseProxy with a tuned transport and a buffer pool, and
// the broker itself (JWT verification, routing, token lookup, header
// filtering, metrics and the default request log all on), connected to the
// same upstream through the real OAuth callback.
//
// Every server is its own process, so that CPU and allocation figures belong
// to one program each; wrk drives them in alternating rounds so that a drift
// of the machine's speed hits every target alike. Only ratios measured in
// one run mean anything on a shared machine. The instructions mode runs the
// bare proxy and the broker under valgrind's callgrind instead and counts
// the instructions of a fixed number of requests, which repeat from run to
// run where req/s does not.
//
//	go run ./internal/benchtest/proxybench -broker bin/broker            # throughput: req/s, p50, p99, ratios
//	go run ./internal/benchtest/proxybench -broker bin/broker -mode cost # allocations/request, CPU per 1,000 req/s, RSS;
//	                                                                     # then RSS after a restart with 1,000 stored connections
//	go run -ldflags=-s=false ./internal/benchtest/proxybench -broker bin/broker-symbols -short # one short round of
//	                                                                     # both, and 400 requests under callgrind (CI)
//	go run ./internal/benchtest/proxybench -broker bin/broker -baseline /tmp/broker-main # and a second broker
//	                                                                     # binary beside it, in the same rounds
//	go run ./internal/benchtest/proxybench -broker bin/broker -profile /tmp/prof # also CPU profiles of the bare proxy and
//	                                                                     # the broker under wrk: /tmp/prof/{bare,broker}.pprof
//	go run -ldflags=-s=false ./internal/benchtest/proxybench -broker bin/broker-symbols -mode instructions
//	                                                                     # user-space instructions per request under
//	                                                                     # callgrind, and the functions the broker spends
//	                                                                     # them in above the bare proxy (both programs with
//	                                                                     # their symbol tables: see make broker-symbols)
//
// It asserts nothing about speed: it prints figures (docs/benchmarks.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	// Child roles: the program re-executes itself so that the upstream and
	// the bare proxy are processes of their own.
	if len(args) > 0 {
		switch args[0] {
		case "upstream":
			return serveUpstream(ctx, args[1:])
		case "bare":
			return serveBare(ctx, args[1:])
		}
	}
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.broker, "broker", "bin/broker", "broker binary")
	fs.StringVar(&o.mode, "mode", "throughput", "throughput, cost, all (both) or instructions (under callgrind)")
	fs.IntVar(&o.requests, "requests", 8000, "requests counted per target in the instructions mode")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each round runs every target once, in turn")
	fs.DurationVar(&o.duration, "duration", 5e9, "wrk duration of one target in one round")
	fs.IntVar(&o.conns, "c", 50, "wrk connections in throughput mode")
	fs.IntVar(&o.threads, "t", 1, "wrk threads")
	fs.IntVar(&o.body, "body", 256, "upstream answer size in bytes in throughput mode")
	fs.BoolVar(&o.short, "short", false, "one round of one second, both modes, and 400 requests in the instructions mode (shows the harness works)")
	fs.StringVar(&o.logLevel, "broker-log-level", "info", "BROKER_LOG_LEVEL of the broker (info: the default request log on)")
	fs.StringVar(&o.baseline, "baseline", "", "a second broker binary (e.g. main before a change) measured beside -broker in the same rounds")
	fs.StringVar(&o.profile, "profile", "", "directory for CPU profiles of the bare proxy and the broker, taken during the first throughput round; "+
		"in the instructions mode, for the callgrind dumps")
	fs.BoolVar(&o.cacheSim, "cache-sim", false, "in the instructions mode, also count L1 instruction, L1 data and last-level cache misses per request "+
		"(callgrind --cache-sim=yes, about twice as slow)")
	sameRequest := fs.Bool("same-request", true, "send every target the broker's request headers (the caller's JWT); false gives the upstream, "+
		"nginx and the bare proxy a short static token instead, as the harness did before 2026-12-03")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.staticFloor = !*sameRequest
	if o.short {
		o.rounds, o.duration, o.mode, o.requests = 1, 1e9, "all", 400
		// The instructions mode first: it adds about 5 s, and it stops at
		// once on a broker without symbols or a machine without valgrind.
		if err := instructions(ctx, o, out); err != nil {
			return err
		}
		fmt.Fprintln(out)
	}
	switch o.mode {
	case "throughput", "cost", "all":
	case "instructions":
		if o.requests < 1 {
			return errors.New("-requests must be at least 1")
		}
		return instructions(ctx, o, out)
	default:
		return errors.New("-mode must be throughput, cost, all or instructions")
	}
	if o.profile != "" && o.mode == "cost" {
		return errors.New("-profile profiles the throughput phase: use -mode throughput or all")
	}
	return bench(ctx, o, out)
}
