package lifecycle_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// memFleet is an in-process fleet for lifecycle.FleetAcks (store/fleetsync is
// tested against Redis on its own): members, acknowledgements per id.
type memFleet struct {
	mu      sync.Mutex
	members []string
	acks    map[string][]string
}

type memMember struct {
	f      *memFleet
	id     string
	noAck  atomic.Bool  // a replica too slow to acknowledge
	peers  atomic.Int64 // Peers calls: how many changes waited
	missed atomic.Int64 // peers Await gave up on
}

func (f *memFleet) join(id string) *memMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.acks == nil {
		f.acks = make(map[string][]string)
	}
	f.members = append(f.members, id)
	return &memMember{f: f, id: id}
}

func (m *memMember) Peers(context.Context) ([]string, error) {
	m.peers.Add(1)
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(m.f.members), func(s string) bool { return s == m.id }), nil
}

func (m *memMember) Ack(_ context.Context, id string) error {
	if m.noAck.Load() {
		return nil
	}
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	m.f.acks[id] = append(m.f.acks[id], m.id)
	return nil
}

func (m *memMember) Await(ctx context.Context, id string, peers []string, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		m.f.mu.Lock()
		missing := slices.DeleteFunc(slices.Clone(peers), func(p string) bool { return slices.Contains(m.f.acks[id], p) })
		m.f.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			m.missed.Add(int64(len(missing)))
			return missing, nil
		}
		time.Sleep(time.Millisecond)
	}
}

func (m *memMember) Run(ctx context.Context, _ func(context.Context) error) { <-ctx.Done() }

func withFleet(m *memMember, timeout time.Duration) func(*lifecycle.Options) {
	return func(o *lifecycle.Options) { o.Fleet, o.FleetAckTimeout = m, timeout }
}

// TestDisconnectAnswersOnceEveryReplicaDropped: when Disconnect returns on
// one replica, the other answers not_connected at once (issue 9, defect 6),
// because it acknowledged only after uncaching.
func TestDisconnectAnswersOnceEveryReplicaDropped(t *testing.T) {
	h, _ := tokenEndpoint()
	fleet := &memFleet{}
	ma, mb := fleet.join("a"), fleet.join("b")
	for range 50 {
		a := newCore(t, h, nil, withFleet(ma, 5*time.Second))
		b := peerIn(t, a, mb)
		conn := a.seed(t, "servicenow", "access", "refresh", time.Now().Add(time.Hour))
		startAll(t, a, b)
		if _, err := b.Access(ctxT(t), conn.Key); err != nil {
			t.Fatal(err)
		}
		if err := a.Flows.Disconnect(ctxT(t), broker.Caller{Account: "acme", Admin: true}, "servicenow"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Access(ctxT(t), conn.Key); broker.CodeOf(err) != broker.CodeNotConnected {
			t.Fatalf("right after Disconnect returned on A, B answered %v, want not_connected", err)
		}
	}
	if ma.missed.Load() != 0 {
		t.Errorf("%d acknowledgements missed", ma.missed.Load())
	}
}

// TestUnacknowledgedChangeWaitsOnlyTheBound: a replica that never
// acknowledges costs the bound, no more, and the change is done; a
// refresh never waits for the fleet.
func TestUnacknowledgedChangeWaitsOnlyTheBound(t *testing.T) {
	h, _ := tokenEndpoint()
	fleet := &memFleet{}
	ma, mb := fleet.join("a"), fleet.join("b")
	mb.noAck.Store(true)
	a := newCore(t, h, nil, withFleet(ma, 200*time.Millisecond))
	b := peerIn(t, a, mb)
	conn := a.seed(t, "servicenow", "access", "refresh", time.Now().Add(time.Hour))
	startAll(t, a, b)
	if _, err := a.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if n := ma.peers.Load(); n != 0 {
		t.Errorf("a refresh waited for the fleet (%d Peers calls)", n)
	}
	start := time.Now()
	if err := a.Flows.Disconnect(ctxT(t), broker.Caller{Account: "acme", Admin: true}, "servicenow"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("Disconnect with a silent replica took %v, want the 200 ms bound", took)
	}
	if ma.missed.Load() != 1 {
		t.Errorf("missed acknowledgements: %d, want 1", ma.missed.Load())
	}
	if _, err := a.Store.GetConnection(ctxT(t), conn.Key); err == nil {
		t.Errorf("the connection is still stored after the disconnect")
	}
}

// peerIn is another replica on a's store, member m of the fleet.
func peerIn(t *testing.T, a *core, m *memMember) *core {
	t.Helper()
	o := a.opts
	o.Registerer, o.Fleet = nil, m
	return build(t, o, a.Vendor)
}
