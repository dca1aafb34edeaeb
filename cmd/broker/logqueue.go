package main

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

const (
	// queueBatch records are formatted at once rather than after
	// logFlushDelay: past it, holding more saves nothing.
	queueBatch = 256
	// queueMax is where a caller formats the queue itself, so that it cannot
	// grow while its formatter falls behind.
	queueMax = 4096
)

// recordQueue holds the records below warn, the request log's among them,
// and formats them in batches, on a timer's goroutine, after at most
// logFlushDelay or as soon as queueBatch are waiting. Formatting each record
// on its request's goroutine cost the proxy about 5% of its requests per
// second against formatting the same records in batches (issue 10, wrk, 50
// connections, 2 CPUs, four runs of five alternating rounds, the bare
// proxy's req/s: 0.85 -> 0.91, 0.87 -> 0.93, 0.93 -> 0.98, and 0.90 -> 0.89
// in the fourth), though batches run about the same instructions: the JSON
// handler's code and data stay in the caches while a batch is formatted
// instead of displacing the proxy's on every request (callgrind: 233 fewer
// L1i misses per request, 460 more instructions).
//
// What a line may wait is what logBuffer already allowed: about
// logFlushDelay. A record of level warn or above formats everything queued
// before it first, so lines keep their order around it and it never waits.
type recordQueue struct {
	mu    sync.Mutex
	recs  []queued
	spare []queued // the last batch's array, for the next one
	armed bool     // the timer will format what is queued
	timer *time.Timer
	// drainMu keeps batches in order: a batch is written before the next.
	drainMu sync.Mutex
	after   func() // runs after each timed batch: writes the buffer out
}

// queued is a record with the handler that formats it: loggers derived
// with With or WithGroup share the queue but not the handler.
type queued struct {
	h   slog.Handler
	ctx context.Context
	r   slog.Record
}

func newRecordQueue(after func()) *recordQueue {
	q := &recordQueue{after: after}
	q.timer = time.AfterFunc(time.Hour, func() {
		q.drain()
		q.after()
	})
	q.timer.Stop()
	return q
}

func (q *recordQueue) push(x queued) {
	q.mu.Lock()
	q.recs = append(q.recs, x)
	n := len(q.recs)
	switch {
	case !q.armed:
		q.armed = true
		q.timer.Reset(logFlushDelay)
	case n == queueBatch:
		q.timer.Reset(0)
	}
	q.mu.Unlock()
	if n >= queueMax {
		q.drain()
	}
}

// drain formats what is queued, in order.
func (q *recordQueue) drain() {
	q.drainMu.Lock()
	defer q.drainMu.Unlock()
	q.mu.Lock()
	batch := q.recs
	q.recs, q.spare = q.spare[:0], nil
	if q.armed {
		q.armed = false
		q.timer.Stop()
	}
	q.mu.Unlock()
	for i := range batch {
		// As for an unqueued line, a failed write of the log has nowhere
		// to be reported.
		_ = batch[i].h.Handle(batch[i].ctx, batch[i].r)
	}
	clear(batch) // the records and contexts are not kept alive by the array
	q.mu.Lock()
	q.spare = batch[:0]
	q.mu.Unlock()
}

// queueHandler queues records below warn on q for h; a warning or error
// drains q and is formatted at once.
type queueHandler struct {
	slog.Handler
	q *recordQueue
}

// Handle keeps r without cloning it: whoever hands out a record must not
// modify it afterwards (slog.Record's contract), so its attributes stay as
// they were. Their values must stay too, so only records whose values are
// all plain (strings, numbers, booleans, durations, times) wait: an Any
// (a pointer, a map, an error) or a LogValuer could show a later state, or
// race with its owner, if formatted later. Those are formatted at once,
// after what is queued, as warnings are.
func (h queueHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn || !plain(r) {
		h.q.drain()
		return h.Handler.Handle(ctx, r)
	}
	h.q.push(queued{h.Handler, ctx, r})
	return nil
}

// plain reports whether every attribute of r has a value that cannot change.
func plain(r slog.Record) bool {
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		switch a.Value.Kind() {
		case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration, slog.KindTime:
			return true
		}
		ok = false
		return false
	})
	return ok
}

func (h queueHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return queueHandler{h.Handler.WithAttrs(as), h.q}
}

func (h queueHandler) WithGroup(name string) slog.Handler {
	return queueHandler{h.Handler.WithGroup(name), h.q}
}
