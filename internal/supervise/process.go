// Package supervise runs child processes for the test harness
// (internal/testenv), the demo and the benchmarks: one supervisor with the
// output kept, a readiness probe at start, SIGTERM then SIGKILL at stop,
// pause and resume, and free loopback addresses to give them.
package supervise

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// stopTimeout is how long SIGTERM gets before SIGKILL. The servers
	// keep nothing on disk and exit within a second; a broker exits after
	// its shutdown grace.
	stopTimeout = 10 * time.Second
	// pollInterval is how often readiness is probed while a process starts.
	pollInterval = 20 * time.Millisecond
	// logTail is how much of a process's output a failure message quotes.
	logTail = 2000
)

// Process is a child process: redis-server, Vault, a broker, the
// simulator. It is the one supervisor of the project: output kept in memory,
// start waits for a readiness probe, Stop is SIGTERM then SIGKILL, Kill is a
// crash, Pause and Resume freeze and thaw it, and Start after Stop runs it
// again with the same arguments (same port).
//
// Methods are safe for concurrent use; Stop and Kill wait for the exit.
// Logs may be called from the readiness probe given to Start.
type Process struct {
	name string
	cmd  func() *exec.Cmd // a fresh exec.Cmd per run

	mu     sync.Mutex
	run    *run // nil when not running
	paused bool
	// last is the output of the current or last run, read without mu so
	// that a readiness probe may look at it while Start holds mu.
	last atomic.Pointer[LogBuffer]
}

// run is one execution of a Process.
type run struct {
	cmd    *exec.Cmd
	logs   *LogBuffer
	exited chan struct{} // closed once cmd is waited for
	err    error         // Wait's result, readable after exited is closed
}

// New returns a Process that is not running yet; cmd makes the exec.Cmd of
// each run (Start after Stop runs a fresh one).
func New(name string, cmd func() *exec.Cmd) *Process {
	return &Process{name: name, cmd: cmd}
}

// Start runs the process and waits until ready answers nil; when the
// process exits first or timeout passes, it is killed and the error quotes
// its output. It does nothing when the process is running.
func (p *Process) Start(timeout time.Duration, ready func(context.Context) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil {
		return nil
	}
	r := &run{cmd: p.cmd(), logs: &LogBuffer{}, exited: make(chan struct{})}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	// A grandchild holding the output pipe must not keep Wait waiting.
	r.cmd.WaitDelay = time.Second
	DieWithParent(r.cmd)
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("%s: exec %s: %w", p.name, r.cmd.Path, err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.exited) }()
	p.last.Store(r.logs)
	p.paused = false

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		last := ready(ctx)
		if last == nil {
			p.run = r
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("%s exited before it was ready (%v): %s", p.name, r.err, r.logs.Tail(logTail))
		case <-ctx.Done():
			_ = r.cmd.Process.Kill()
			<-r.exited
			return fmt.Errorf("%s not ready within %v: %v: %s", p.name, timeout, last, r.logs.Tail(logTail))
		case <-tick.C:
		}
	}
}

// Stop ends the process: SIGTERM, then SIGKILL if it has not exited within
// stopTimeout. A paused process is resumed first, since a stopped process
// does not act on SIGTERM. It does nothing when the process is not running.
func (p *Process) Stop() { p.end(syscall.SIGTERM, stopTimeout) }

// Kill ends the process at once (SIGKILL), as a crash would.
func (p *Process) Kill() { p.end(syscall.SIGKILL, stopTimeout) }

func (p *Process) end(sig syscall.Signal, timeout time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.run
	if r == nil {
		return
	}
	if p.paused {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		p.paused = false
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.exited:
	case <-time.After(timeout):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	p.run = nil
}

// Signal sends sig without waiting for its effect (SIGTERM to watch a
// graceful shutdown; Wait then collects the exit).
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return fmt.Errorf("%s: not running", p.name)
	}
	return p.run.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit error (nil for status 0).
func (p *Process) Wait(timeout time.Duration) error {
	p.mu.Lock()
	r := p.run
	p.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%s: not running", p.name)
	}
	select {
	case <-r.exited:
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", p.name, timeout)
	}
	p.mu.Lock()
	if p.run == r {
		p.run = nil
	}
	p.mu.Unlock()
	return r.err
}

// Pause freezes the process (SIGSTOP): its ports stay open and requests
// hang until Resume, and nothing in memory is lost. It returns once every
// thread has stopped: the kernel stops them asynchronously, and a request
// sent right after kill(2) was seen to be answered 2% of the time.
func (p *Process) Pause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return fmt.Errorf("pause %s: not running", p.name)
	}
	if err := p.run.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", p.name, err)
	}
	p.paused = true
	return waitStopped(p.run.cmd.Process.Pid)
}

// Resume continues a paused process (SIGCONT).
func (p *Process) Resume() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return fmt.Errorf("resume %s: not running", p.name)
	}
	if err := p.run.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume %s: %w", p.name, err)
	}
	p.paused = false
	return nil
}

// Logs returns what the current run (or the last one, once stopped) wrote
// to stdout and stderr.
func (p *Process) Logs() string {
	if l := p.last.Load(); l != nil {
		return l.String()
	}
	return ""
}

// waitStopped waits until every thread of pid is in the stopped state, as
// /proc reports it. Where there is no /proc (not Linux) it gives the kernel a
// moment instead.
func waitStopped(pid int) error {
	taskDir := fmt.Sprintf("/proc/%d/task", pid)
	if _, err := os.Stat(taskDir); err != nil {
		time.Sleep(100 * time.Millisecond)
		return nil
	}
	deadline := time.Now().Add(stopTimeout)
	for {
		stopped, err := allThreadsStopped(taskDir)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped %v after SIGSTOP", pid, stopTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allThreadsStopped(taskDir string) (bool, error) {
	tasks, err := os.ReadDir(taskDir)
	if err != nil {
		return false, err
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(taskDir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		// "pid (comm) S ...": the state follows the last ")", since comm
		// may itself contain parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) {
			return false, fmt.Errorf("unexpected %s/stat: %q", task.Name(), stat)
		}
		if state := stat[i+2]; state != 'T' && state != 't' {
			return false, nil
		}
	}
	return true, nil
}

// LogBuffer collects output written concurrently (a process's stdout and
// stderr, a logger).
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Tail returns the last n bytes written, for failure messages.
func (l *LogBuffer) Tail(n int) string {
	s := l.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// HTTPReady is a readiness probe: GET u answers 200.
func HTTPReady(u string) func(context.Context) error {
	client := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", u, resp.Status)
		}
		return nil
	}
}

// FreeAddrs returns n distinct loopback host:port addresses that were free a
// moment ago. Every probe listener stays open until all are chosen, so one
// call never hands out the same port twice.
func FreeAddrs(n int) ([]string, error) {
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out, nil
}
