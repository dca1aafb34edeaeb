package main

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
)

func TestQueuedLinesKeepTheirOrderAroundUnqueuedOnes(t *testing.T) {
	var out lockedBuffer
	log, flush := newServeLogger(&config.Config{LogLevel: slog.LevelInfo}, &out)
	type state struct{ N int }
	st := &state{N: 1}
	log.Info("a", "n", 1)
	log.Info("b", "state", st) // an Any: formatted at once, after "a"
	st.N = 2
	log.Info("c")
	log.Warn("d")
	log.Info("e")
	flush()
	s, _ := out.read()
	got := regexp.MustCompile(`"msg":"(\w)"`).FindAllStringSubmatch(s, -1)
	var order []string
	for _, m := range got {
		order = append(order, m[1])
	}
	if strings.Join(order, "") != "abcde" {
		t.Fatalf("lines in the order %v, want a b c d e:\n%s", order, s)
	}
	if !strings.Contains(s, `"state":{"N":1}`) {
		t.Errorf("the Any shows a later state than when it was logged:\n%s", s)
	}
}

func TestQueueFormatsWithEachLoggersOwnAttrs(t *testing.T) {
	var out lockedBuffer
	log, flush := newServeLogger(&config.Config{LogLevel: slog.LevelInfo}, &out)
	log.With("component", "refresher").Info("m")
	log.WithGroup("g").Info("n", "k", 1)
	log.Info("o")
	flush()
	s, _ := out.read()
	for _, want := range []string{`"msg":"m","component":"refresher"`, `"msg":"n","g":{"k":1}`, `"msg":"o"}`} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %s:\n%s", want, s)
		}
	}
}

// countHandler counts the records it formats.
type countHandler struct {
	slog.Handler
	n *int
}

func (h countHandler) Handle(context.Context, slog.Record) error { *h.n++; return nil }

func TestQueueFormatsAtItsBound(t *testing.T) {
	// A queue whose timer never formats: only the bound can.
	q := &recordQueue{after: func() {}}
	q.timer = time.AfterFunc(time.Hour, func() {})
	defer q.timer.Stop()
	var n int
	h := queueHandler{countHandler{slog.DiscardHandler, &n}, q}
	for range queueMax + 1 {
		_ = h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0))
	}
	q.mu.Lock()
	left := len(q.recs)
	q.mu.Unlock()
	if n != queueMax || left != 1 {
		t.Fatalf("after %d records: %d formatted, %d queued; want %d and 1", queueMax+1, n, left, queueMax)
	}
}
