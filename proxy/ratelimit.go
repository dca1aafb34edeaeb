package proxy

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/ratelimit"
)

// Limits is what the proxy needs of the vendors' rate-limit state
// (*ratelimit.Limiter).
type Limits interface {
	Mode() ratelimit.Mode
	MaxWait() time.Duration
	// Check reads memory only.
	Check(t ratelimit.Target) (ratelimit.Block, bool)
	Answered(vendor string, b ratelimit.Block)
	Waited(vendor string, d time.Duration)
	// Observe learns from a vendor answer; for a new window it returns once
	// the fleet has it (bounded).
	Observe(ctx context.Context, t ratelimit.Target, status int, h http.Header)
}

// HeaderMaxWait is how long, in whole seconds, a caller lets the broker hold
// its call for a vendor window to end (BROKER_RATE_LIMIT_MODE=wait).
const HeaderMaxWait = "X-Broker-Max-Wait"

// CodeRateLimited is the local answer inside a vendor's window.
const CodeRateLimited broker.Code = "rate_limited"

func limitTarget(key broker.Key, acc broker.Access) ratelimit.Target {
	t := ratelimit.Target{Vendor: key.Vendor, Account: key.Account, UserID: key.UserID}
	if acc.Base != nil {
		t.Instance, t.Site = acc.Base.Host, acc.Base.Path
	}
	return t
}

// limited answers a call inside a known window, or holds it (wait mode)
// until the window ends. It reports whether it answered.
func (p *Proxy) limited(c *gin.Context, x *exchange, t ratelimit.Target) bool {
	if p.limits == nil {
		return false
	}
	b, blocked := p.limits.Check(t)
	if !blocked {
		return false
	}
	if p.limits.Mode() == ratelimit.ModeWait {
		maxWait, ok := callerMaxWait(c.Request.Header, p.limits.MaxWait())
		if !ok {
			p.fail(c, x, http.StatusBadRequest, broker.CodeInvalidRequest,
				HeaderMaxWait+" must be a whole number of seconds")
			return true
		}
		if b.Remaining <= maxWait {
			start := p.now()
			timer := time.NewTimer(b.Remaining)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-c.Request.Context().Done():
				x.clientGone = true
				return true
			}
			p.limits.Waited(x.v.name, p.now().Sub(start))
			// The window may have been extended meanwhile (another caller's
			// 429): check again, without waiting twice.
			if b, blocked = p.limits.Check(t); !blocked {
				return false
			}
		}
	}
	p.limits.Answered(x.v.name, b)
	secs := int64((b.Remaining + time.Second - 1) / time.Second)
	c.Writer.Header()["Retry-After"] = []string{strconv.FormatInt(secs, 10)}
	p.fail(c, x, http.StatusTooManyRequests, CodeRateLimited,
		"the vendor is limiting this "+b.Kind.String()+"'s calls; retry after the time in Retry-After")
	return true
}

// callerMaxWait reads X-Broker-Max-Wait: absent is 0 (answer at once).
func callerMaxWait(h http.Header, limit time.Duration) (time.Duration, bool) {
	v := h[HeaderMaxWait]
	if len(v) == 0 {
		return 0, true
	}
	if len(v) > 1 || len(v[0]) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(v[0], 10, 32)
	if err != nil {
		return 0, false
	}
	return min(time.Duration(n)*time.Second, limit), true
}
