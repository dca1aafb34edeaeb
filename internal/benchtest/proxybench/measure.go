package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	errors   int
	// user and sys are the target's CPU per request, in seconds, when the
	// run measured it (throughput mode).
	user, sys float64
}

// runWrk loads t for d and parses wrk's summary (with --latency).
func runWrk(ctx context.Context, t target, threads, conns int, d time.Duration, path string) (wrkResult, error) {
	cmd := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", max(int(d.Seconds()), 1)), "--latency", "-H", "Authorization: "+t.auth, t.url+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", t.name, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w:\n%s", t.name, err, out)
	}
	return r, nil
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50, _ = time.ParseDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99, _ = time.ParseDuration(f[1])
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:") && len(f) == 4:
			r.errors, _ = strconv.Atoi(f[3])
		}
	}
	if r.rps == 0 || r.p99 == 0 {
		return r, fmt.Errorf("no figures in wrk's output")
	}
	return r, nil
}

// mallocs reads go_memstats_mallocs_total from a Prometheus text page.
func mallocs(ctx context.Context, u string) (int64, error) {
	if u == "" {
		return 0, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return 0, fmt.Errorf("%s has no go_memstats_mallocs_total", u)
}

// cpuProfile writes to file the CPU profile of the next seconds that the
// server at base serves on /debug/pprof/profile.
func cpuProfile(ctx context.Context, base string, seconds int, file string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("cpu profile %s: %d %s", base, resp.StatusCode, body)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if err = errors.Join(err, f.Close()); err != nil {
		return fmt.Errorf("cpu profile %s: %w", base, err)
	}
	if n == 0 {
		return fmt.Errorf("cpu profile %s: empty", base)
	}
	return nil
}

// cpuSeconds sums user and system CPU of pids from /proc/<pid>/stat.
func cpuSeconds(pids []int) float64 {
	u, k := cpuTimes(pids)
	return u + k
}

// cpuTimes sums the user and the system CPU of pids, in seconds, from
// /proc/<pid>/stat: what a target spends in its own code and what the
// kernel spends on its system calls (reads, writes, epoll, futex).
func cpuTimes(pids []int) (user, sys float64) {
	const ticks = 100 // USER_HZ on Linux
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		k, _ := strconv.ParseFloat(f[12], 64)
		user += u / ticks
		sys += k / ticks
	}
	return user, sys
}

// rss is a process's resident set in bytes, from /proc/<pid>/status.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// children lists the processes whose parent is pid (nginx's workers).
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s", runtime.NumCPU(), model, runtime.Version())
}

// procs starts the servers under test and stops them all at the end, then
// closes the files they wrote to.
type procs struct {
	cmds  []*exec.Cmd
	files []io.Closer
}

func (p *procs) closeAtStop(f io.Closer) { p.files = append(p.files, f) }

func (p *procs) start(ctx context.Context, bin string, env []string, args ...string) (int, error) {
	return p.startLogged(ctx, os.Stderr, bin, env, args...)
}

func (p *procs) startLogged(ctx context.Context, log io.Writer, bin string, env []string, args ...string) (int, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stderr = log
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	supervise.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", bin, err)
	}
	p.cmds = append(p.cmds, cmd)
	return cmd.Process.Pid, nil
}

// stopOne ends the process pid with SIGTERM and waits for it to exit.
func (p *procs) stopOne(pid int) error {
	for i, c := range p.cmds {
		if c.Process.Pid == pid {
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
			p.cmds = append(p.cmds[:i], p.cmds[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no process %d", pid)
}

func (p *procs) stop() {
	for _, c := range p.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.cmds {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	for _, f := range p.files {
		_ = f.Close()
	}
}
