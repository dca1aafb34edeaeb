// Package gcpace sets the garbage collector's GOGC from the allocation rate,
// so that a busy broker collects a few times a second instead of hundreds,
// and an idle one keeps Go's default heap size.
//
// Why: the broker's live heap is small (2-3 MiB with a few connections), so
// with GOGC=100 the heap goal is Go's 4 MiB minimum and, under proxy load
// (about 8 KiB allocated per request), a collection starts every ~200
// requests. Counted with callgrind (8,000 proxied requests from 16
// connections, 2 CPUs), the broker ran 193,000 instructions per request at
// GOGC=100, 160,000 with a 16 MiB goal (GOGC=400) and 156,000 with 32 MiB
// (GOGC=800). Under wrk (50 connections, docs/benchmarks.md) the pacer took
// the broker from 0.85 to 0.91 of the bare httputil.ReverseProxy's req/s.
//
// What it trades: while allocation runs fast, the heap may grow up to
// Headroom above what is live (never more than a quarter of GOMEMLIMIT,
// which the runtime keeps enforcing on its own). When allocation slows, GOGC
// goes back to 100 and the scavenger returns the extra pages. A large live
// heap (100,000 stored connections hold ~110 MiB) already has more than
// Headroom between collections at GOGC=100, and is left alone.
package gcpace

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// DefaultHeadroom is the most heap growth between collections the pacer
	// allows above GOGC=100's.
	DefaultHeadroom = 32 << 20
	// DefaultWindow is how much allocation, in time, may pile up between
	// collections: at 8 MiB/s (~1,000 proxied requests/s) the goal grows by
	// 8 MiB, i.e. about one collection a second.
	DefaultWindow = time.Second
	// DefaultTick is how often the allocation rate is read.
	DefaultTick = 500 * time.Millisecond

	// basePercent is GOGC's default, which the pacer never goes below.
	basePercent = 100
	// heapMinimum is the runtime's minimum heap goal at GOGC=100 (4 MiB);
	// the runtime scales it by GOGC/100.
	heapMinimum = 4 << 20
)

// Config sets the pacer; zero fields take the defaults.
type Config struct {
	Headroom uint64
	Window   time.Duration
	Tick     time.Duration
}

func (c Config) withDefaults() Config {
	if c.Headroom == 0 {
		c.Headroom = DefaultHeadroom
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	return c
}

// Percent is the GOGC for a live heap of live bytes allocated into at rate
// bytes per second, under a memory limit of memLimit bytes (math.MaxInt64
// for none): enough for Window's allocation between collections, at most
// Headroom and a quarter of the limit, and never below 100.
//
// The runtime's goal is max(live, 4 MiB) grown by GOGC percent (its 4 MiB
// minimum scales with GOGC), so the growth wanted is divided by that.
func (c Config) Percent(live uint64, rate float64, memLimit int64) int {
	c = c.withDefaults()
	want := rate * c.Window.Seconds()
	limit := float64(c.Headroom)
	if memLimit > 0 && memLimit != math.MaxInt64 {
		limit = min(limit, float64(memLimit)/4)
	}
	want = min(want, limit)
	p := want * 100 / float64(max(live, heapMinimum))
	if !(p > basePercent) { // also NaN
		return basePercent
	}
	return int(p)
}

// runtimeStats reads the live heap and the bytes allocated so far.
type runtimeStats struct {
	samples [2]metrics.Sample
}

func newRuntimeStats() *runtimeStats {
	var s runtimeStats
	s.samples[0].Name = "/gc/heap/live:bytes"
	s.samples[1].Name = "/gc/heap/allocs:bytes"
	return &s
}

func (s *runtimeStats) read() (live, allocs uint64) {
	metrics.Read(s.samples[:])
	if s.samples[0].Value.Kind() == metrics.KindUint64 {
		live = s.samples[0].Value.Uint64()
	}
	if s.samples[1].Value.Kind() == metrics.KindUint64 {
		allocs = s.samples[1].Value.Uint64()
	}
	return live, allocs
}

// Run paces GOGC until ctx ends, then sets it back to 100. It is meant for
// a process whose GOGC the operator did not set (the caller checks).
func Run(ctx context.Context, c Config) {
	c = c.withDefaults()
	stats := newRuntimeStats()
	p := pacer{c: c, set: debug.SetGCPercent, memLimit: func() int64 { return debug.SetMemoryLimit(-1) }}
	t := time.NewTicker(c.Tick)
	defer t.Stop()
	defer p.set(basePercent)
	_, allocs := stats.read()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			live, a := stats.read()
			p.observe(live, a-allocs, now.Sub(last))
			allocs, last = a, now
		}
	}
}

// pacer turns readings into SetGCPercent calls.
type pacer struct {
	c        Config
	set      func(int) int
	memLimit func() int64
	current  int // 0 until the first call: GOGC as the runtime started
}

// observe takes the live heap and the bytes allocated over elapsed. A
// change under a fifth is not worth a call: the goal would barely move.
func (p *pacer) observe(live, allocated uint64, elapsed time.Duration) {
	if elapsed <= 0 {
		return
	}
	want := p.c.Percent(live, float64(allocated)/elapsed.Seconds(), p.memLimit())
	cur := p.current
	if cur == 0 {
		cur = basePercent
	}
	if want == cur || (want != basePercent && math.Abs(float64(want-cur)) < float64(cur)/5) {
		return
	}
	p.set(want)
	p.current = want
}
