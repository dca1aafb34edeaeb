package gcpace

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	c := Config{}
	for _, tc := range []struct {
		name     string
		live     uint64
		rate     float64
		memLimit int64
		want     int
	}{
		{"idle keeps the default", 3 * mib, 0, math.MaxInt64, 100},
		{"slow allocation keeps the default", 3 * mib, 2 * mib, math.MaxInt64, 100},
		// 8 MiB/s over a 1 s window: an 8 MiB growth over the 4 MiB minimum.
		{"moderate load", 3 * mib, 8 * mib, math.MaxInt64, 200},
		// 400 MiB/s wants 400 MiB; Headroom caps it at 32 MiB.
		{"heavy load is capped by Headroom", 3 * mib, 400 * mib, math.MaxInt64, 800},
		// A quarter of a 64 MiB limit is 16 MiB.
		{"a memory limit caps it further", 3 * mib, 400 * mib, 64 * mib, 400},
		{"no limit reads as 0 too", 3 * mib, 400 * mib, 0, 800},
		// 110 MiB live already grows by 110 MiB at GOGC=100.
		{"a large live heap is left alone", 110 * mib, 400 * mib, math.MaxInt64, 100},
		{"a heap above the minimum divides by live", 16 * mib, 400 * mib, math.MaxInt64, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.Percent(tc.live, tc.rate, tc.memLimit); got != tc.want {
				t.Errorf("Percent(%d MiB live, %.0f MiB/s, limit %d) = %d, want %d",
					tc.live/mib, tc.rate/mib, tc.memLimit, got, tc.want)
			}
		})
	}
	if got := (Config{Headroom: 8 * mib}).Percent(3*mib, 400*mib, math.MaxInt64); got != 200 {
		t.Errorf("Headroom 8 MiB: Percent = %d, want 200", got)
	}
	if got := c.Percent(3*mib, math.NaN(), math.MaxInt64); got != 100 {
		t.Errorf("NaN rate: Percent = %d, want 100", got)
	}
}

func TestPacerSetsOnlyMeaningfulChanges(t *testing.T) {
	var calls []int
	p := pacer{c: Config{}.withDefaults(), set: func(v int) int { calls = append(calls, v); return 0 },
		memLimit: func() int64 { return math.MaxInt64 }}
	p.observe(3*mib, 0, time.Second)              // idle: stays at 100, no call
	p.observe(3*mib, 400*mib, time.Second)        // busy: 800
	p.observe(3*mib, 380*mib, time.Second)        // still capped: no call
	p.observe(3*mib, 28*mib, time.Second)         // 700: within a fifth of 800, no call
	p.observe(3*mib, 16*mib, time.Second)         // 400
	p.observe(3*mib, 1*mib, 500*time.Millisecond) // idle again: back to 100
	p.observe(3*mib, 1*mib, 0)                    // no time passed: ignored
	want := []int{800, 400, 100}
	if len(calls) != len(want) {
		t.Fatalf("SetGCPercent calls = %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("SetGCPercent calls = %v, want %v", calls, want)
		}
	}
}

// TestRunRaisesGOGCUnderAllocationAndRestoresIt runs the pacer on this
// process's own runtime: GOGC goes up while a goroutine allocates fast and
// is 100 again when Run returns.
func TestRunRaisesGOGCUnderAllocationAndRestoresIt(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { Run(ctx, Config{Tick: 50 * time.Millisecond}) })
	stop := make(chan struct{})
	var sink [][]byte
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// ~64 MiB/s and more: far above what GOGC=100 leaves room for.
			for range 64 {
				sink = append(sink[:0], make([]byte, 16<<10))
			}
			time.Sleep(time.Millisecond)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	raised := 0
	for time.Now().Before(deadline) && raised <= 100 {
		time.Sleep(20 * time.Millisecond)
		raised = gogc()
	}
	close(stop)
	cancel()
	wg.Wait()
	_ = sink
	if raised <= 100 {
		t.Fatalf("GOGC stayed at %d while allocating fast", raised)
	}
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC = %d after Run returned, want 100", got)
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
