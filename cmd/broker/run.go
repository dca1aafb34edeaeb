package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/config"
)

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, getenv, stdout, stderr)
	case "token":
		return token(args, getenv, stdout, stderr)
	case "version":
		_, err := fmt.Fprintln(stdout, version)
		return err
	case "reindex":
		cfg, err := config.Load(getenv)
		if err != nil {
			return err
		}
		n, err := app.Reindex(ctx, cfg, newLogger(cfg, stderr))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "reindexed %d connections from Vault\n", n)
		return err
	case "rotate-key":
		cfg, err := config.Load(getenv)
		if err != nil {
			return err
		}
		n, err := app.RotateKey(ctx, cfg, newLogger(cfg, stderr))
		if err != nil {
			return fmt.Errorf("rotate-key: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "re-sealed %d records with the current BROKER_ENCRYPTION_KEY; the previous keys are no longer needed once every replica runs with it\n", n)
		return err
	}
	return fmt.Errorf("unknown command %q (serve, token, version, reindex, rotate-key)", cmd)
}

func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log, flush := newServeLogger(cfg, stderr)
	defer flush()
	pacerCtx, stopPacer := context.WithCancel(context.Background())
	waitPacer := configureRuntime(pacerCtx, log)
	// After the shutdown: a draining server still allocates.
	defer func() { stopPacer(); waitPacer() }()
	gin.SetMode(gin.ReleaseMode)
	a, err := app.New(ctx, cfg, app.Options{Logger: log, Version: version, Getenv: getenv, Stdout: stdout})
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Shutdown(context.Background())
		return err
	}
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case serveErr = <-a.Err():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(serveErr, a.Shutdown(sctx))
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// newServeLogger is newLogger formatting its info lines in batches
// (recordQueue) and writing through a logBuffer, for the server, whose
// request log writes a line per request; flush writes what is queued and
// buffered and must run before serve returns.
func newServeLogger(cfg *config.Config, w io.Writer) (log *slog.Logger, flush func()) {
	b := newLogBuffer(w)
	q := newRecordQueue(b.Flush)
	return slog.New(flushHandler{queueHandler{newLogger(cfg, b).Handler(), q}, b}), func() { q.drain(); b.Flush() }
}

// token mints a development JWT signed with BROKER_AUTH_HS256_SECRET.
func token(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	account := fs.String("account", "", "account (tenant) claim; required")
	sub := fs.String("sub", "", "subject claim (user or service); required")
	roles := fs.String("roles", "", "comma-separated roles, e.g. admin")
	ttl := fs.Duration("ttl", 12*time.Hour, "lifetime of the token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *account == "" || *sub == "" {
		return errors.New("token: --account and --sub are required")
	}
	secret := getenv("BROKER_AUTH_HS256_SECRET")
	if secret == "" {
		return errors.New("token: BROKER_AUTH_HS256_SECRET must be set to sign a development token")
	}
	var rs []string
	for _, r := range strings.Split(*roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rs = append(rs, r)
		}
	}
	tok, err := auth.Mint([]byte(secret), auth.Claims{Account: *account, Subject: *sub, Roles: rs}, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
