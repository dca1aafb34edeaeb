package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// TestConfigureRuntimeLeavesAnOperatorsGOGC: a GOGC in the environment turns
// the pacer off; without one, the pacer runs until its context ends.
func TestConfigureRuntimeLeavesAnOperatorsGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	var buf bytes.Buffer
	running, stop := context.WithCancel(context.Background())
	wait := configureRuntime(running, slog.New(slog.NewTextHandler(&buf, nil)))
	if !returns(wait, 100*time.Millisecond) {
		stop()
		wait()
		t.Fatal("a pacer runs although GOGC is set")
	}
	stop()
	if !strings.Contains(buf.String(), "gogc_source=GOGC") {
		t.Fatalf("runtime limits log = %q, want gogc_source=GOGC", buf.String())
	}

	os.Unsetenv("GOGC") // t.Setenv restores it
	buf.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	wait = configureRuntime(ctx, slog.New(slog.NewTextHandler(&buf, nil)))
	if !strings.Contains(buf.String(), "gogc_source=paced") {
		t.Fatalf("runtime limits log = %q, want gogc_source=paced", buf.String())
	}
	if returns(wait, 100*time.Millisecond) {
		t.Fatal("the pacer stopped before its context ended")
	}
	cancel()
	if !returns(wait, 5*time.Second) {
		t.Fatal("the pacer did not stop after its context ended")
	}
}

// returns reports whether wait returns within d.
func returns(wait func(), d time.Duration) bool {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
