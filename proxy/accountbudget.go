package proxy

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/budget"
)

// Budget decides whether an account may spend what a call costs on a vendor
// now (package budget: Local on the embedded store, Fleet with Redis). Take
// makes no network call; it may wait, bounded, for a background reservation.
type Budget interface {
	Take(ctx context.Context, account, vendor string, r *http.Request) budget.Decision
}

// CodeAccountRateLimited: the caller's account is over its budget for the
// vendor (BROKER_<VENDOR>_ACCOUNT_BUDGET); answered 429 without a vendor call.
const CodeAccountRateLimited broker.Code = "account_rate_limited"

// overBudget answers the call locally when the account has spent its budget;
// it reports whether it did.
func (p *Proxy) overBudget(c *gin.Context, x *exchange, account string) bool {
	if p.budget == nil {
		return false
	}
	d := p.budget.Take(c.Request.Context(), account, x.v.name, c.Request)
	if d.OK {
		return false
	}
	secs := int64(math.Ceil(d.RetryAfter.Seconds()))
	c.Writer.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	p.log.LogAttrs(c.Request.Context(), slog.LevelDebug, "proxy call over the account's budget",
		slog.String("vendor", x.v.name), slog.Int64("retry_after_s", secs))
	p.fail(c, x, http.StatusTooManyRequests, CodeAccountRateLimited,
		"the account has used its budget for this vendor; retry after the Retry-After delay")
	return true
}
