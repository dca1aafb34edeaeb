// Command demo walks a newcomer through tokenbroker's main job: it starts the
// vendor simulator and the broker (embedded store) as separate processes and
// drives connect, status, proxied calls, a dead refresh token, Reconnect and
// Change User over HTTP, printing each step.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
