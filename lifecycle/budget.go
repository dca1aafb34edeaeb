package lifecycle

import (
	"context"
	"sync"
	"time"
)

// storeBudget is what is left of the time the store calls of one refresh
// may take together. A refresh makes several (re-read under the lease, the
// client lookup, the write, on failure a re-read and the verdict's write,
// announcements); during a Vault pause each would otherwise wait its own
// timeout in turn. Once it is spent, the calls fail at once and the refresh
// goes on from memory: its result is served and kept for the store.
type storeBudget struct {
	mu   sync.Mutex
	left time.Duration
}

type budgetKey struct{}

// withStoreBudget gives the refresh running on ctx a store budget of d. It
// is not cut to a caller's deadline: callers stop waiting at their deadline
// (Refresh), while the flight, shared by every caller, finishes and records
// its result within its budget.
func withStoreBudget(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, budgetKey{}, &storeBudget{left: d})
}

// storeCall bounds one store call by what is left of ctx's refresh budget.
// Outside a refresh, ctx is returned as it is: the store wrapper
// (store/bounded) bounds each call.
func storeCall(ctx context.Context) (context.Context, context.CancelFunc) {
	sb, ok := ctx.Value(budgetKey{}).(*storeBudget)
	if !ok {
		return context.WithCancel(ctx)
	}
	sb.mu.Lock()
	left := sb.left
	sb.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, max(left, 0))
	start := time.Now()
	return cctx, func() {
		cancel()
		sb.mu.Lock()
		sb.left -= time.Since(start)
		sb.mu.Unlock()
	}
}
