package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Run delivers until ctx ends: every Poll it looks at every endpoint, and
// for each one with queued messages that no replica is delivering it takes
// the endpoint's lease and delivers its queue in order. The lease (renewed
// while held) makes one replica the deliverer of an endpoint; when that
// replica dies the lease lapses and another takes the queue over.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Poll)
	defer t.Stop()
	for {
		s.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) scan(ctx context.Context) {
	eps, err := s.o.Store.ListEndpoints(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "webhook endpoints unreadable", "err", err)
		}
		// The global endpoints' queues are still worth a look: the
		// outbox may answer where the endpoint list did not.
		eps = nil
	}
	for _, g := range s.o.Global {
		eps = append(eps, g.endpoint())
	}
	for _, ep := range eps {
		s.mu.Lock()
		busy := s.active[ep.ID]
		s.mu.Unlock()
		if busy {
			continue
		}
		if _, ok, err := s.o.Store.Head(ctx, ep.ID); err != nil || !ok {
			continue
		}
		lease, err := s.o.Leaser.AcquireLease(ctx, "webhook/"+ep.ID, s.o.LeaseTTL)
		if err != nil {
			continue // another replica delivers it, or the store is down
		}
		s.mu.Lock()
		s.active[ep.ID] = true
		s.mu.Unlock()
		go func() {
			defer func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_ = lease.Release(rctx)
				cancel()
				s.mu.Lock()
				delete(s.active, ep.ID)
				s.mu.Unlock()
			}()
			s.drain(ctx, ep.ID, lease.Lost())
		}()
	}
}

// drain delivers an endpoint's queue head by head while this replica holds
// the lease. A failed attempt waits its backoff and retries the same head,
// so the order per endpoint (and so per connection) is kept.
func (s *Service) drain(ctx context.Context, id string, lost <-chan struct{}) {
	attempt := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-lost:
			return
		default:
		}
		ep, err := s.endpointByID(ctx, id)
		if err != nil {
			return // deleted, or the store is down: the next scan decides
		}
		m, ok, err := s.o.Store.Head(ctx, id)
		if err != nil || !ok {
			return
		}
		attempt++
		a := s.deliver(ctx, ep, m, attempt)
		if a.Result != resultDelivered && s.now().Sub(m.EnqueuedAt) >= s.o.RetryPeriod {
			a.Result = resultGaveUp
		}
		s.recordAttempt(ctx, id, a)
		if a.Result != resultFailed {
			select {
			case <-lost:
				return // another replica may hold the queue now; it re-delivers this head
			default:
			}
			if err := s.o.Store.Pop(ctx, id, m); err != nil {
				return
			}
			attempt = 0
			continue
		}
		wait := s.backoff(attempt)
		if left := m.EnqueuedAt.Add(s.o.RetryPeriod).Sub(s.now()); left < wait {
			wait = max(left, 0)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-lost:
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// endpointByID finds a queue's endpoint: a global one by its id, else the
// store's.
func (s *Service) endpointByID(ctx context.Context, id string) (Endpoint, error) {
	if g, ok := s.global[id]; ok {
		return g.endpoint(), nil
	}
	return s.o.Store.GetEndpoint(ctx, id)
}

// recordAttempt counts an attempt and logs it where its reader looks: a
// per-account endpoint's in the store (the deliveries route), a global
// endpoint's in the broker's log, which is the operator's.
func (s *Service) recordAttempt(ctx context.Context, id string, a Attempt) {
	g, global := s.global[id]
	label := accountLabel
	if global {
		label = g.Name
	}
	s.metrics.deliveries.WithLabelValues(label, a.Result).Inc()
	if !global {
		if err := s.o.Store.RecordAttempt(ctx, id, a); err != nil {
			s.log.WarnContext(ctx, "webhook attempt not logged", "err", err)
		}
		return
	}
	attrs := []any{"endpoint", g.Name, "event_id", a.EventID, "event_type", a.EventType, "attempt", a.Attempt,
		"result", a.Result, "status", a.StatusCode, "duration_ms", a.DurationMs}
	switch a.Result {
	case resultDelivered:
		s.log.DebugContext(ctx, "global webhook delivered", attrs...)
	case resultFailed:
		s.log.WarnContext(ctx, "global webhook delivery failed; retrying", append(attrs, "error", a.Error)...)
	default:
		s.log.ErrorContext(ctx, "global webhook delivery given up", append(attrs, "error", a.Error)...)
	}
}

const (
	resultDelivered = "delivered"
	resultFailed    = "failed"
	resultGaveUp    = "gave_up"
)

// results is the fixed set of delivery results (a metric label).
func results() []string { return []string{resultDelivered, resultFailed, resultGaveUp} }

func (s *Service) backoff(attempt int) time.Duration {
	d := s.o.MinBackoff << min(attempt-1, 20)
	return min(d, s.o.MaxBackoff)
}

// deliverTimeout bounds one attempt; a receiver should answer at once and
// do its work later.
const deliverTimeout = 15 * time.Second

// deliver makes one signed POST of m to ep.
func (s *Service) deliver(ctx context.Context, ep Endpoint, m Message, attempt int) Attempt {
	start := s.now()
	a := Attempt{EventID: m.EventID, EventType: m.Type, At: start.UTC(), Attempt: attempt, Result: resultFailed}
	sig, err := sign(ep, m, start)
	if err != nil {
		a.Error = "signing failed"
		return a
	}
	ctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(m.Payload))
	if err != nil {
		a.Error = "bad endpoint URL"
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tokenbroker-webhooks")
	req.Header.Set(standardwebhooks.HeaderWebhookID, m.EventID)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(start.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	resp, err := s.o.HTTPClient.Do(req)
	a.DurationMs = s.now().Sub(start).Milliseconds()
	if err != nil {
		a.Error = transportError(err)
		return a
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	a.StatusCode = resp.StatusCode
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		a.Result = resultDelivered
	} else {
		a.Error = fmt.Sprintf("receiver answered %d", resp.StatusCode)
	}
	return a
}

// sign returns the webhook-signature header: v1 signatures with the
// current secret and, during a rotation's overlap, the previous one (a
// global endpoint's for as long as it is configured: no end time).
func sign(ep Endpoint, m Message, at time.Time) (string, error) {
	secrets := []string{ep.Secret}
	if ep.PreviousSecret != "" && (ep.PreviousSecretUntil.IsZero() || at.Before(ep.PreviousSecretUntil)) {
		secrets = append(secrets, ep.PreviousSecret)
	}
	var out []byte
	for _, sec := range secrets {
		wh, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			return "", err
		}
		sig, err := wh.Sign(m.EventID, at, m.Payload)
		if err != nil {
			return "", err
		}
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, sig...)
	}
	return string(out), nil
}

// transportError names a failed attempt without echoing the URL.
func transportError(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "connection failed"
}
