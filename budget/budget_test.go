package budget_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	. "github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// counter reads one series of a counter from reg (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	return counterB(t, reg, name, labels...)
}

func counterB(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func get(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestLocalRefusesOverBudget: an account gets its burst, then one unit per
// interval; another account's budget is its own; Retry-After says when the
// next unit comes; a vendor without a budget is never refused.
func TestLocalRefusesOverBudget(t *testing.T) {
	ck := &clock{t: time.Unix(1_800_000_000, 0)}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(map[string]Limit{"servicenow": {Rate: 60, Period: time.Minute, Burst: 5}}, m, ck.now)
	ctx := context.Background()
	for i := range 5 {
		if d := l.Take(ctx, "noisy", "servicenow", get("/x")); !d.OK {
			t.Fatalf("call %d refused within the burst", i)
		}
	}
	d := l.Take(ctx, "noisy", "servicenow", get("/x"))
	if d.OK || d.RetryAfter != time.Second {
		t.Fatalf("over budget: %+v, want refused with RetryAfter 1s", d)
	}
	if !l.Take(ctx, "quiet", "servicenow", get("/x")).OK {
		t.Fatal("another account was refused: budgets are per account")
	}
	if !l.Take(ctx, "noisy", "confluence", get("/x")).OK {
		t.Fatal("a vendor without a budget refused a call")
	}
	ck.add(time.Second)
	if !l.Take(ctx, "noisy", "servicenow", get("/x")).OK {
		t.Fatal("one interval later the account has one unit again")
	}
	if l.Take(ctx, "noisy", "servicenow", get("/x")).OK {
		t.Fatal("only one unit came back")
	}
	if got := counter(t, reg, "tokenbroker_account_budget_spent_total", "vendor", "servicenow"); got != 7 {
		t.Errorf("spent = %v, want 7", got)
	}
	if got := counter(t, reg, "tokenbroker_account_budget_refused_total", "vendor", "servicenow"); got != 2 {
		t.Errorf("refused = %v, want 2", got)
	}
}

// pagePoints stands in for a vendor's estimate: a read costs 1 plus its
// page size, a write 1.
func pagePoints(r *http.Request) int {
	if r.Method != http.MethodGet {
		return 1
	}
	n, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	return 1 + n
}

func newClient(t *testing.T, addr string) *redis.Client {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// hammer spends the budget of account from n replicas (Fleets on one
// Redis) concurrently for d, and returns the calls allowed per replica.
func hammer(t *testing.T, fleets []*Fleet, account string, d time.Duration) []int64 {
	t.Helper()
	got := make([]int64, len(fleets))
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for i, f := range fleets {
		for range 4 { // four callers per replica
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					if f.Take(context.Background(), account, "servicenow", get("/x")).OK {
						atomic.AddInt64(&got[i], 1)
					} else {
						time.Sleep(2 * time.Millisecond)
					}
				}
			}()
		}
	}
	wg.Wait()
	return got
}

// TestFleetNeverExceedsBudget: three replicas on one Redis share one
// account's budget. Whatever the batch size, the fleet together never
// spends more than the GCRA grants (burst + rate × (elapsed + hold)), and a
// second account on the same replicas gets its own budget in full. The
// numbers it logs are the batch trade-off quoted in docs/decisions.md.
func TestFleetNeverExceedsBudget(t *testing.T) {
	addr := testenv.Redis(t)
	lim := Limit{Rate: 100, Period: time.Second, Burst: 20}
	for _, batch := range []int{1, 5, 20} {
		t.Run("batch"+itoa(batch), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			var fleets []*Fleet
			for range 3 {
				f := NewFleet(FleetOptions{Client: newClient(t, addr), Prefix: "t" + itoa(batch) + ":", Batch: batch,
					Limits: map[string]Limit{"servicenow": lim}, Metrics: m})
				t.Cleanup(f.Close)
				fleets = append(fleets, f)
			}
			start := time.Now()
			var quiet int64
			quietDone := make(chan struct{})
			go func() { // one call every 50 ms on replica 0: well within budget
				defer close(quietDone)
				for time.Since(start) < time.Second {
					if !fleets[0].Take(context.Background(), "quiet", "servicenow", get("/x")).OK {
						t.Errorf("the quiet account was refused after %v", time.Since(start))
					}
					quiet++
					time.Sleep(50 * time.Millisecond)
				}
			}()
			got := hammer(t, fleets, "noisy", time.Second)
			<-quietDone
			elapsed := time.Since(start)
			total := got[0] + got[1] + got[2]
			// Reserved units stay usable for at most a second here (each
			// batch comes back in 200 ms or less, and the hold is at least 1 s).
			hold := time.Second
			bound := int64(lim.Burst) + int64(float64(lim.Rate)*(elapsed+hold).Seconds())
			res := func(r string) float64 {
				return counter(t, reg, "tokenbroker_account_budget_reservations_total", "vendor", "servicenow", "result", r)
			}
			expired := counter(t, reg, "tokenbroker_account_budget_expired_units_total", "vendor", "servicenow")
			t.Logf("batch %2d: noisy allowed %d (per replica %v) in %v, bound %d; quiet %d calls; Redis reservations: %v granted, %v partial, %v denied; %v units expired unused",
				batch, total, got, elapsed.Round(time.Millisecond), bound, quiet, res("granted"), res("partial"), res("denied"), expired)
			if total > bound {
				t.Fatalf("the fleet spent %d, more than the budget allows (%d)", total, bound)
			}
			// A loose floor (a quarter of the rate) that a loaded CI machine
			// still meets, but that starving batching would not.
			if min := int64(float64(lim.Rate)*elapsed.Seconds()) / 4; total < min {
				t.Fatalf("the fleet spent only %d of a budget of about %d: batching starves the account", total, min)
			}
		})
	}
}

// TestFleetFallsBackWhileRedisIsDown: a replica that cannot reserve enforces
// the budget alone (Local) instead of refusing every call or allowing all.
func TestFleetFallsBackWhileRedisIsDown(t *testing.T) {
	srv := testenv.StartRedis(t)
	lim := Limit{Rate: 60, Period: time.Minute, Burst: 5}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFleet(FleetOptions{Client: newClient(t, srv.Addr), Limits: map[string]Limit{"servicenow": lim}, Metrics: m, Batch: 5})
	t.Cleanup(f.Close)
	srv.Stop()
	ctx := context.Background()
	// The first call waits for the failed reservation, then is refused;
	// from then on Local decides: the burst passes, then refusals.
	f.Take(ctx, "a", "servicenow", get("/x"))
	ok := 0
	for range 20 {
		if f.Take(ctx, "a", "servicenow", get("/x")).OK {
			ok++
		}
	}
	if ok != lim.Burst {
		t.Fatalf("with Redis down %d of 20 calls passed, want the burst (%d)", ok, lim.Burst)
	}
	if got := counter(t, reg, "tokenbroker_account_budget_reservations_total", "vendor", "servicenow", "result", "error"); got < 1 {
		t.Fatalf("the failed reservation was not counted")
	}
}

// TestFleetRetryAfterFromRedis: once Redis denies, the replica refuses with
// the GCRA's own wait and asks Redis again only after it.
func TestFleetRetryAfterFromRedis(t *testing.T) {
	addr := testenv.Redis(t)
	lim := Limit{Rate: 6, Period: time.Minute, Burst: 2} // one unit every 10 s
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFleet(FleetOptions{Client: newClient(t, addr), Limits: map[string]Limit{"servicenow": lim}, Metrics: m, Batch: 2})
	t.Cleanup(f.Close)
	ctx := context.Background()
	for i := range 2 {
		if !f.Take(ctx, "a", "servicenow", get("/x")).OK {
			t.Fatalf("call %d refused within the burst", i)
		}
	}
	var d Decision
	for range 40 { // the reservation after the burst runs in the background
		if d = f.Take(ctx, "a", "servicenow", get("/x")); !d.OK && d.RetryAfter > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d.OK || d.RetryAfter < 5*time.Second || d.RetryAfter > 10*time.Second {
		t.Fatalf("over budget: %+v, want refused with RetryAfter about 10s", d)
	}
	denied := counter(t, reg, "tokenbroker_account_budget_reservations_total", "vendor", "servicenow", "result", "denied")
	if denied < 1 {
		t.Fatal("Redis was not asked, or did not deny: the refusal was not the fleet's")
	}
	for range 50 {
		f.Take(ctx, "a", "servicenow", get("/x"))
	}
	if again := counter(t, reg, "tokenbroker_account_budget_reservations_total", "vendor", "servicenow", "result", "denied"); again != denied {
		t.Fatalf("refused calls asked Redis again (%v denials, was %v)", again, denied)
	}
}

func itoa(n int) string {
	return string(rune('0'+n/10%10)) + string(rune('0'+n%10))
}

// TestLocalCountsPoints: a call is charged its Cost: reads of 2 objects
// cost 3 points, writes 1.
func TestLocalCountsPoints(t *testing.T) {
	ck := &clock{t: time.Unix(1_800_000_000, 0)}
	l := NewLocal(map[string]Limit{"confluence": {Rate: 3600, Period: time.Hour, Burst: 30, Cost: pagePoints}}, nil, ck.now)
	ctx := context.Background()
	reads := 0
	for l.Take(ctx, "a", "confluence", get("/wiki/api/v2/pages?limit=2")).OK {
		reads++
	}
	if reads != 10 {
		t.Fatalf("%d reads of 3 points passed a burst of 30, want 10", reads)
	}
	ck.add(time.Second) // one point back
	write := httptest.NewRequest(http.MethodPost, "/wiki/api/v2/pages", nil)
	if !l.Take(ctx, "a", "confluence", write).OK {
		t.Fatal("a write costs 1 point and one came back")
	}
	if l.Take(ctx, "a", "confluence", write).OK {
		t.Fatal("no point left for a second write")
	}
}

// BenchmarkFleetTake: a call served from the replica's allowance, with the
// next batch reserved in the background; the Redis round trips per call are
// reported (one per batch at most while within budget).
func BenchmarkFleetTake(b *testing.B) {
	addr := testenv.Redis(b)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	// A budget no benchmark run can spend: every call is allowed.
	f := NewFleet(FleetOptions{Client: rc, Limits: map[string]Limit{"servicenow": {Rate: 1e9, Period: time.Hour, Burst: 1e6}},
		Metrics: m})
	defer f.Close()
	r := get("/x")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !f.Take(ctx, "a", "servicenow", r).OK {
			b.Fatal("refused")
		}
	}
	b.StopTimer()
	f.Close()
	var trips float64
	for _, res := range []string{"granted", "partial", "denied", "error"} {
		trips += counterB(b, reg, "tokenbroker_account_budget_reservations_total", "result", res)
	}
	b.ReportMetric(trips/float64(b.N), "redis-calls/op")
}

// TestFleetRetryAfterCoversTheCallsCost: a call that costs more than one
// unit (an Atlassian read in points) refused on the fleet was told to retry
// when Redis would have one unit again, not its cost: a caller that obeyed
// Retry-After was refused again. Locally (Local) it was right already.
func TestFleetRetryAfterCoversTheCallsCost(t *testing.T) {
	addr := testenv.Redis(t)
	// One point every 600 ms; a read of 2 objects costs 3 (1.8 s).
	lim := Limit{Rate: 100, Period: time.Minute, Burst: 3, Cost: pagePoints}
	f := NewFleet(FleetOptions{Client: newClient(t, addr), Limits: map[string]Limit{"confluence": lim}, Batch: 1})
	t.Cleanup(f.Close)
	read := get("/wiki/api/v2/pages?limit=2")
	ctx := context.Background()
	if !f.Take(ctx, "a", "confluence", read).OK {
		t.Fatal("the first read (the burst) was refused")
	}
	var d Decision
	for range 5 { // until Redis's denial is in
		if d = f.Take(ctx, "a", "confluence", read); d.OK {
			t.Fatal("a read passed with the burst spent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.RetryAfter < 1500*time.Millisecond {
		t.Fatalf("Retry-After %v for a read of 3 points at one point every 600 ms, want about 1.8 s", d.RetryAfter)
	}
	time.Sleep(d.RetryAfter)
	if d = f.Take(ctx, "a", "confluence", read); !d.OK {
		t.Fatalf("after its Retry-After the read was refused again: %+v", d)
	}
}

// TestFleetReservedUnitsExpire: units a replica reserved and did not use
// are dropped after their hold (the bound in docs/decisions.md rests on it),
// and counted.
func TestFleetReservedUnitsExpire(t *testing.T) {
	addr := testenv.Redis(t)
	ck := &clock{t: time.Now()}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	lim := Limit{Rate: 6000, Period: time.Minute, Burst: 20} // 10 ms a unit: a batch of 10 is held 1 s
	f := NewFleet(FleetOptions{Client: newClient(t, addr), Limits: map[string]Limit{"servicenow": lim}, Batch: 10, Metrics: m, Now: ck.now})
	t.Cleanup(f.Close)
	ctx := context.Background()
	if !f.Take(ctx, "a", "servicenow", get("/x")).OK {
		t.Fatal("first call refused")
	}
	reserved := func() float64 {
		return counter(t, reg, "tokenbroker_account_budget_reserved_units_total", "vendor", "servicenow")
	}
	for deadline := time.Now().Add(2 * time.Second); reserved() < 11 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the batch reserved ahead, in the background
	}
	if got := reserved(); got != 11 {
		t.Fatalf("reserved %v units, want 1 for the call and a batch of 10 ahead", got)
	}
	ck.add(1100 * time.Millisecond)
	f.Take(ctx, "a", "servicenow", get("/x"))
	if got := counter(t, reg, "tokenbroker_account_budget_expired_units_total", "vendor", "servicenow"); got != 10 {
		t.Fatalf("%v units expired after the hold, want the unused batch of 10", got)
	}
}
