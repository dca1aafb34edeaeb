package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
)

// lockedBuffer is a bytes.Buffer that counts writes, safe for the timer's
// goroutine.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) read() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.writes
}

// TestServeLoggerBatchesInfoAndWritesWarningsAtOnce: info lines share a
// write and reach the output within logFlushDelay; a warning is written at
// once with the lines before it, in order; flush writes the rest.
func TestServeLoggerBatchesInfoAndWritesWarningsAtOnce(t *testing.T) {
	var out lockedBuffer
	log, flush := newServeLogger(&config.Config{LogLevel: slog.LevelInfo}, &out)
	for range 100 {
		log.Info("request")
	}
	if s, n := out.read(); n != 0 || s != "" {
		t.Fatalf("info lines written at once (%d writes)", n)
	}
	deadline := time.Now().Add(logFlushDelay + 5*time.Second)
	for {
		s, n := out.read()
		if strings.Count(s, `"msg":"request"`) == 100 {
			if n != 1 {
				t.Errorf("100 info lines took %d writes, want 1", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("info lines not written %v after logging them: %q", logFlushDelay, s)
		}
		time.Sleep(10 * time.Millisecond)
	}

	log.Info("before")
	log.Warn("vendor unreachable")
	s, _ := out.read()
	if i, j := strings.Index(s, `"msg":"before"`), strings.Index(s, `"msg":"vendor unreachable"`); i < 0 || j < i {
		t.Fatalf("the warning is not written at once after the line before it: %q", s)
	}
	log.Info("last")
	flush()
	if s, _ := out.read(); !strings.HasSuffix(s, "\"msg\":\"last\"}\n") {
		t.Fatalf("flush did not write the last line: %q", s)
	}
	// A line larger than the buffer goes through whole.
	big := strings.Repeat("x", 2*logBufferSize)
	log.Info(big)
	flush()
	if s, _ := out.read(); !strings.Contains(s, big) {
		t.Fatal("a line larger than the buffer was not written whole")
	}
}
