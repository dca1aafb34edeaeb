package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

const (
	// instrClients is how many keep-alive clients drive a target in the
	// instructions mode, each with a connection of its own.
	instrClients = 16
	// topFunctions is how many functions the broker-minus-bare table lists.
	topFunctions = 25
)

// instructions counts the user-space instructions per request of the bare
// proxy, the broker and the baseline broker when given, each run under
// valgrind's callgrind: after a warm-up of a quarter as many requests,
// exactly o.requests from instrClients keep-alive clients, with
// instrumentation on only for those. Then it lists the functions whose self
// cost per request is the most above the bare proxy's in the broker.
//
// Why: wrk's req/s on this shared 2-core machine moves by several percent
// from run to run; an instruction count of the same binaries repeats to
// about 0.03% (three runs, docs/benchmarks.md), and says where the
// instructions go.
//
// Every target runs with GOGC=off. Under valgrind the broker runs about 50x
// slower, so its allocation rate stays too low for its GC pacer
// (internal/gcpace) to raise GOGC, and collections it would not make at
// full speed would dominate the count; without collection, the count is the
// code's own instructions (allocation included, collection not).
func instructions(ctx context.Context, o options, out io.Writer) (err error) {
	for _, tool := range []string{"valgrind", "callgrind_control", "callgrind_annotate"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (Debian: apt-get install valgrind)", tool)
		}
	}
	// The bare proxy is this program: go run strips it unless told not to.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := hasSymbols(self, "go run ./internal/benchtest/proxybench strips it: add -ldflags=-s=false"); err != nil {
		return err
	}
	if err := hasSymbols(o.broker, "make build strips it (-s): build it without, as make broker-symbols does"); err != nil {
		return err
	}
	version, err := exec.CommandContext(ctx, "valgrind", "--version").Output()
	if err != nil {
		return fmt.Errorf("valgrind --version: %w", err)
	}
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	raw := dir
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
		raw = o.profile
	}
	// Valgrind's own messages (quiet unless something goes wrong) are kept
	// apart from the servers' logs, and shown when the run fails.
	defer func() {
		if err != nil {
			err = errors.Join(err, valgrindLogs(dir))
		}
	}()
	var procs procs
	defer procs.stop()
	s, err := startServers(ctx, o, &procs, dir, false, underCallgrind(dir, raw, o.cacheSim))
	if err != nil {
		return err
	}
	caller, err := s.connect(ctx)
	if err != nil {
		return err
	}
	targets := goTargets(o, s, caller)
	for _, t := range targets {
		if err := sanity(ctx, t); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "proxybench instructions: %s callgrind, user-space instructions over %d requests per target from %d keep-alive "+
		"connections, after %d to warm up; %s; upstream answers %d bytes\n",
		strings.TrimSpace(string(version)), o.requests, instrClients, o.requests/4, machine(), o.body)
	fmt.Fprintln(out, "every target runs with GOGC=off: the figures are the code's instructions, allocation included, collection not")
	fmt.Fprintln(out, requestLine(o))
	if o.baseline != "" {
		fmt.Fprintf(out, "broker: %s; baseline broker: %s\n", o.broker, o.baseline)
	}
	events := make([]map[string]int64, len(targets))
	allocs := make([]float64, len(targets))
	for i, t := range targets {
		if allocs[i], err = countRequests(ctx, t, o.requests); err != nil {
			return err
		}
	}
	// A callgrind process writes one more dump when it exits, to the file
	// its measured dump (.1) is then renamed to.
	for i, t := range targets {
		if err := procs.stopOne(t.pid); err != nil {
			return err
		}
		file := filepath.Join(raw, t.role+".callgrind")
		if err := os.Rename(file+".1", file); err != nil {
			return fmt.Errorf("%s: callgrind dump: %w", t.name, err)
		}
		if events[i], err = readEvents(file); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	head := "\ntarget\tinstructions/req\tvs bare\tallocs/req"
	if o.cacheSim {
		head += "\tL1i misses/req\tL1d misses/req\tlast-level misses/req"
	}
	fmt.Fprintln(tw, head)
	perReq := func(ev map[string]int64, names ...string) float64 {
		var n int64
		for _, name := range names {
			n += ev[name]
		}
		return float64(n) / float64(o.requests)
	}
	for i, t := range targets {
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.1f", t.name, perReq(events[i], "Ir"),
			float64(events[i]["Ir"])/float64(events[0]["Ir"]), allocs[i])
		if o.cacheSim {
			fmt.Fprintf(tw, "\t%.0f\t%.0f\t%.0f", perReq(events[i], "I1mr"), perReq(events[i], "D1mr", "D1mw"),
				perReq(events[i], "ILmr", "DLmr", "DLmw"))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	bare, err := annotate(ctx, filepath.Join(raw, "bare.callgrind"))
	if err != nil {
		return err
	}
	broker, err := annotate(ctx, filepath.Join(raw, "broker.callgrind"))
	if err != nil {
		return err
	}
	top, total := costDiff(broker, bare, o.requests, o.requests, topFunctions)
	fmt.Fprintf(out, "\nself instructions per request by function, broker minus bare (callgrind_annotate --tree=none): "+
		"the %d largest differences; all functions together %+.0f\n", len(top), total)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "broker\tbare\tdifference\t  function")
	for _, d := range top {
		fmt.Fprintf(tw, "%.0f\t%.0f\t%+.0f\t  %s\n", d.a, d.b, d.diff, d.name)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if o.profile != "" {
		fmt.Fprintf(out, "\ncallgrind dumps of the counted requests written to %s; read them with:\n", o.profile)
		for _, t := range targets {
			fmt.Fprintf(out, "  callgrind_annotate %s\n", filepath.Join(o.profile, t.role+".callgrind"))
		}
	}
	return nil
}

// underCallgrind starts a Go server under callgrind with instrumentation
// off, its dumps in raw (role.callgrind.N) and valgrind's messages in dir.
//
// Go programs need asynchronous preemption off under callgrind, which
// otherwise aborts on the preemption signal (Assertion 'sigNum ==
// vgCallgrind_current_state.sig' failed); goroutines are still preempted
// at function calls.
//
// cacheSim adds callgrind's cache simulation (--cache-sim=yes), which counts
// each target's misses of the first-level instruction and data caches and of
// the last level, as valgrind models this machine's: instructions that miss
// cost more than those that hit, so a target that touches more code and
// data per request runs slower than its count alone says.
func underCallgrind(dir, raw string, cacheSim bool) launch {
	return func(role, bin string, env, args []string) (string, []string, []string) {
		if env == nil {
			env = os.Environ()
		}
		env = append(slices.Clip(env), "GODEBUG=asyncpreemptoff=1", "GOGC=off")
		vg := []string{"--tool=callgrind", "--instr-atstart=no", "-q",
			"--callgrind-out-file=" + filepath.Join(raw, role+".callgrind"),
			"--log-file=" + filepath.Join(dir, role+".valgrind")}
		if cacheSim {
			vg = append(vg, "--cache-sim=yes")
		}
		return "valgrind", env, append(append(vg, bin), args...)
	}
}

// countRequests warms t up, then drives exactly n requests with callgrind's
// instrumentation on and dumps the counts (role.callgrind.1). It returns
// the objects allocated per request over the n, read from t's stats before
// and after, outside the counted instructions. As in the cost mode, the
// figure includes about one read's own allocations: 16 objects for the bare
// proxy's counter, 1,900 to 6,000 for the broker's /metrics page (measured),
// under 1 per request at 8,000 requests, up to 15 at -short's 400.
func countRequests(ctx context.Context, t target, n int) (float64, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: instrClients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	// The same clients, on the same connections, warm up and are counted:
	// no connection opens or closes among the counted requests.
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	if err := drive(ctx, client, t, n/4); err != nil {
		return 0, err
	}
	m0, err := mallocs(ctx, t.stats)
	if err != nil {
		return 0, err
	}
	for _, cmd := range [][]string{{"-i", "on"}, {"-z"}} {
		if err := callgrindControl(ctx, t.pid, cmd...); err != nil {
			return 0, err
		}
	}
	if err := drive(ctx, client, t, n); err != nil {
		return 0, err
	}
	for _, cmd := range [][]string{{"-d"}, {"-i", "off"}} {
		if err := callgrindControl(ctx, t.pid, cmd...); err != nil {
			return 0, err
		}
	}
	m1, err := mallocs(ctx, t.stats)
	if err != nil {
		return 0, err
	}
	return float64(m1-m0) / float64(n), nil
}

// drive makes exactly n GET apiPath calls of t from instrClients
// goroutines sharing client.
func drive(ctx context.Context, client *http.Client, t target, n int) error {
	var left atomic.Int64
	left.Store(int64(n))
	errs := make(chan error, instrClients)
	var wg sync.WaitGroup
	for range instrClients {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.url+apiPath, nil)
				req.Header.Set("Authorization", t.auth)
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", t.name, err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s: answered %d", t.name, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// callgrindControl sends a command to the callgrind process pid and waits
// for its answer.
func callgrindControl(ctx context.Context, pid int, args ...string) error {
	out, err := exec.CommandContext(ctx, "callgrind_control", append(args, strconv.Itoa(pid))...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("callgrind_control %s %d: %w: %s", strings.Join(args, " "), pid, err, out)
	}
	return nil
}

func readEvents(file string) (map[string]int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return callgrindEvents(f)
}

// annotate is the per-function self cost of a callgrind dump, every
// function listed (--threshold=100).
func annotate(ctx context.Context, file string) (map[string]int64, error) {
	out, err := exec.CommandContext(ctx, "callgrind_annotate", "--tree=none", "--threshold=100", "--auto=no", "--show=Ir", file).Output()
	if err != nil {
		return nil, fmt.Errorf("callgrind_annotate %s: %w", file, err)
	}
	costs, err := selfCosts(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return costs, nil
}

// hasSymbols fails for a binary without a symbol table, whose functions
// callgrind cannot name; hint says how to build one with it.
func hasSymbols(bin, hint string) error {
	path, err := exec.LookPath(bin)
	if err != nil {
		return err
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer f.Close()
	if _, err := f.Symbols(); err != nil {
		return fmt.Errorf("%s has no symbol table, so callgrind cannot name its functions (%s)", bin, hint)
	}
	return nil
}

// valgrindLogs is what valgrind wrote to its logs in dir, for an error.
func valgrindLogs(dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.valgrind"))
	var errs []error
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) > 0 {
			errs = append(errs, fmt.Errorf("%s:\n%s", filepath.Base(f), b))
		}
	}
	return errors.Join(errs...)
}
