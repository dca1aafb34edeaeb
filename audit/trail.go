// Package audit records every management action (flows started and
// finished, confirmations, disconnects, client configuration, webhook
// endpoint changes): who, what, when, the result, the request id and the
// source address, never a secret. Each record is written as one JSON line to
// a sink (stdout or a file, like Vault's audit devices) and kept per account
// in the store for a retention period, where GET /v1/account/audit reads it.
//
// Recording never fails the action it records: a broker whose promise is
// that calls do not fail because a backend is down does not refuse a
// disconnect because a log file is full. A write that fails is counted
// (tokenbroker_audit_write_errors_total) and alerted on instead
// (docs/decisions.md).
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Trail.
type Options struct {
	// Sink receives one JSON line per record; nil writes none.
	Sink io.Writer
	// Store keeps records per account; nil keeps none (List then finds
	// nothing).
	Store Store
	// Retention is how long the store keeps a record; default 90 days.
	Retention time.Duration
	// StoreTimeout bounds each store call; default 5s.
	StoreTimeout time.Duration
	// TrimEvery is how often Run drops expired records of every account;
	// default 1h. Appends trim their own account as they go.
	TrimEvery  time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Trail writes and reads the audit trail.
type Trail struct {
	o   Options
	log *slog.Logger

	// mu serialises sink writes: one record is one Write of one line, and
	// lines from concurrent requests never interleave.
	mu sync.Mutex

	records prometheus.Counter
	errs    *prometheus.CounterVec
}

// Destinations of tokenbroker_audit_write_errors_total.
const (
	destSink  = "sink"
	destStore = "store"
)

// New validates o and returns a Trail.
func New(o Options) (*Trail, error) {
	if o.Retention < 0 || o.StoreTimeout < 0 || o.TrimEvery < 0 {
		return nil, errors.New("audit: durations must not be negative")
	}
	if o.Retention == 0 {
		o.Retention = 90 * 24 * time.Hour
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = 5 * time.Second
	}
	if o.TrimEvery == 0 {
		o.TrimEvery = time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	t := &Trail{o: o, log: o.Logger,
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_audit_records_total",
			Help: "Management actions recorded in the audit trail.",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_audit_write_errors_total",
			Help: "Audit records that could not be written, by destination (sink: the JSON-lines file or stdout; store: the per-account trail).",
		}, []string{"destination"}),
	}
	for _, d := range []string{destSink, destStore} {
		t.errs.WithLabelValues(d)
	}
	for _, c := range []prometheus.Collector{t.records, t.errs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Retention is how long the store keeps a record.
func (t *Trail) Retention() time.Duration { return t.o.Retention }

// Record completes r (id and time) and writes it to the sink and, when it
// belongs to an account, to the store. It never fails: errors are counted,
// logged without the record's content, and the action stands.
func (t *Trail) Record(ctx context.Context, r Record) {
	r.Time = t.o.Now().UTC()
	r.ID = newID(r.Time)
	t.records.Inc()
	if t.o.Sink != nil {
		if err := t.writeSink(r); err != nil {
			t.errs.WithLabelValues(destSink).Inc()
			t.log.ErrorContext(ctx, "audit record not written to the sink", "action", r.Action, "id", r.ID, "err", err)
		}
	}
	// A callback with an unknown state has no account: the sink has it, no
	// account's trail does.
	if t.o.Store == nil || r.Account == "" {
		return
	}
	// The request may be over (a client hung up); the record is still owed.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.o.StoreTimeout)
	defer cancel()
	if err := t.o.Store.AppendAudit(sctx, r, t.o.Retention); err != nil {
		t.errs.WithLabelValues(destStore).Inc()
		t.log.ErrorContext(ctx, "audit record not written to the store", "action", r.Action, "id", r.ID, "err", err)
	}
}

func (t *Trail) writeSink(r Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err = t.o.Sink.Write(line)
	return err
}

// Page sizes of List.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Filter is what GET /v1/account/audit takes: vendor and action (exact),
// a time window [Since, Until), a page size and the previous page's
// NextCursor.
type Filter struct {
	Vendor, Action string
	Since, Until   time.Time
	Cursor         string
	Limit          int
}

// Page is one page of records, newest first. NextCursor is set when more
// records may follow.
type Page struct {
	Records    []Record `json:"records"`
	NextCursor string   `json:"nextCursor,omitempty"`
}

// List returns the account's records that f selects, newest first, never
// older than the retention period. A bad filter is ErrInvalidQuery.
func (t *Trail) List(ctx context.Context, account string, f Filter) (Page, error) {
	switch {
	case f.Limit == 0:
		f.Limit = DefaultPageSize
	case f.Limit < 0 || f.Limit > MaxPageSize:
		return Page{}, invalid("limit must be between 1 and %d", MaxPageSize)
	}
	if f.Action != "" && !knownAction(f.Action) {
		return Page{}, invalid("action is not one of the recorded actions")
	}
	if f.Cursor != "" && !validID(f.Cursor) {
		return Page{}, invalid("cursor is not one this API returned")
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return Page{}, invalid("since must be before until")
	}
	page := Page{Records: []Record{}}
	if t.o.Store == nil || account == "" {
		return page, nil
	}
	// Records past retention may linger until the next trim; they are
	// not shown.
	since := t.o.Now().Add(-t.o.Retention)
	if f.Since.After(since) {
		since = f.Since
	}
	q := Query{After: IDFloor(since.Add(-time.Nanosecond)), Vendor: f.Vendor, Action: f.Action, Limit: f.Limit + 1}
	if !f.Until.IsZero() {
		q.Before = IDFloor(f.Until)
	}
	if f.Cursor != "" && (q.Before == "" || f.Cursor < q.Before) {
		q.Before = f.Cursor
	}
	recs, err := t.o.Store.AuditRecords(ctx, account, q)
	if err != nil {
		return Page{}, err
	}
	if len(recs) > f.Limit {
		recs = recs[:f.Limit]
		page.NextCursor = recs[len(recs)-1].ID
	}
	page.Records = append(page.Records, recs...)
	return page, nil
}

// Run drops expired records of every account every TrimEvery until ctx
// ends; appends only trim their own account, and an account that stops
// acting would otherwise keep its records.
func (t *Trail) Run(ctx context.Context) {
	if t.o.Store == nil {
		return
	}
	tick := time.NewTicker(t.o.TrimEvery)
	defer tick.Stop()
	for {
		t.trim(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *Trail) trim(ctx context.Context) {
	n, err := t.o.Store.TrimAudit(ctx, t.o.Now().Add(-t.o.Retention))
	switch {
	case err != nil && ctx.Err() == nil:
		t.log.Warn("dropping expired audit records failed; the next pass retries", "err", err)
	case n > 0:
		t.log.Debug("dropped expired audit records", "count", n)
	}
}
