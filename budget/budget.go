// Package budget keeps one account from using more than its share of a
// vendor's pool: an optional budget per vendor, in requests or Atlassian
// points per period, for each account.
//
// Two implementations answer the proxy's question "may this account spend
// cost units on this vendor now?" without a network call on the request
// path:
//
//   - Local, for the embedded store (one replica): an in-process GCRA
//     (golang.org/x/time/rate) per account and vendor.
//   - Fleet, for the production store: a GCRA in Redis shared by every
//     replica (github.com/go-redis/redis_rate). Each replica reserves a small
//     batch of an account's budget ahead of need, in the background, and
//     serves calls from that local allowance; what it does not use expires.
//     Every unit served was granted by Redis first, so the fleet together
//     can never spend more than the budget (docs/decisions.md has the bound).
package budget

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Limit is one vendor's budget for each account: Rate units per Period, of
// which at most Burst may be spent at once. The GCRA behind it spends the
// budget evenly: in any window T an account spends at most
// Burst + Rate·T/Period.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
	// Cost is what one call costs in the budget's units: the vendor's
	// estimate made before the call (Atlassian's points, see
	// vendors/confluence.EstimatePoints). Nil: every call costs 1, a budget
	// in requests.
	Cost func(*http.Request) int
}

// cost is what r costs of the budget.
func (l Limit) cost(r *http.Request) int {
	if l.Cost == nil {
		return 1
	}
	return l.Cost(r)
}

// Validate reports a limit that cannot be enforced.
func (l Limit) Validate() error {
	switch {
	case l.Rate <= 0:
		return errors.New("rate must be positive")
	case l.Period <= 0:
		return errors.New("period must be positive")
	case l.Burst <= 0:
		return errors.New("burst must be positive")
	case l.Period/time.Duration(l.Rate) <= 0:
		return errors.New("rate is too high for the period")
	}
	return nil
}

// interval is the time one unit of the budget takes to come back.
func (l Limit) interval() time.Duration { return l.Period / time.Duration(l.Rate) }

func (l Limit) String() string { return fmt.Sprintf("%d/%s burst %d", l.Rate, l.Period, l.Burst) }

// Decision is the answer to one call.
type Decision struct {
	OK bool
	// RetryAfter, when !OK, is how long until the account has the call's
	// cost again (at least a second: it becomes a Retry-After header).
	RetryAfter time.Duration
}

func refused(d time.Duration) Decision {
	if d < time.Second {
		d = time.Second
	}
	return Decision{RetryAfter: d}
}

var allowed = Decision{OK: true}

// clampCost keeps a call's cost within what the limit can ever grant: a cost
// above Burst would never be allowed.
func clampCost(cost int, l Limit) int {
	if cost < 1 {
		return 1
	}
	return min(cost, l.Burst)
}
