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
	wait := configureRuntime(context.Background(), slog.New(slog.NewTextHandler(&buf, nil)))
	wait() // returns at once: nothing was started
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
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("the pacer stopped before its context ended")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the pacer did not stop after its context ended")
	}
}
