package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// run serves DefaultOptions until ctx ends. Every flag can also be set by an
// environment variable (VENDORSIM_ + the flag name in upper case with '_' for
// '-'); a flag wins over the variable.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	o := vendorsim.DefaultOptions()
	fs := flag.NewFlagSet("vendorsim", flag.ContinueOnError)
	ports := map[string]*int{}
	for _, in := range o.Instances {
		ports[in.Name] = fs.Int(in.Name+"-port", 0, "port of ServiceNow instance "+in.Name+" (0: any free port)")
	}
	bind := fs.String("bind", o.BindHost, "host the ServiceNow instances listen on")
	auth := fs.String("atlassian-auth", "", "Atlassian auth listener host:port (default 127.0.0.1:0)")
	api := fs.String("atlassian-api", "", "Atlassian API listener host:port (default 127.0.0.1:0)")
	control := fs.String("control", "", "control API listener host:port (default 127.0.0.1:0)")
	expired := fs.Int("atlassian-expired-status", 401, "status of an expired access token on the Confluence API: 401, 403 or 404")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := setFromEnv(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("vendorsim: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("vendorsim: -log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	o.InstancePorts = map[string]int{}
	for name, p := range ports {
		o.InstancePorts[name] = *p
	}
	o.BindHost, o.AtlassianAuthAddr, o.AtlassianAPIAddr, o.ControlAddr = *bind, *auth, *api, *control
	o.AtlExpiredStatus = *expired
	o.Logger = logger

	sim, err := vendorsim.Start(o)
	if err != nil {
		return err
	}
	urls := sim.URLs()
	if err := json.NewEncoder(stdout).Encode(urls); err != nil {
		sim.Close()
		return fmt.Errorf("vendorsim: write URLs: %w", err)
	}
	logger.Info("vendorsim serving", "serviceNow", urls.ServiceNow, "atlassianAuth", urls.AtlassianAuth,
		"atlassianApi", urls.AtlassianAPI, "control", urls.Control)
	<-ctx.Done()
	logger.Info("vendorsim stopping")
	return sim.Close()
}

// setFromEnv sets each flag from VENDORSIM_<NAME> when that variable exists,
// before flags are parsed so that flags still win.
func setFromEnv(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		key := "VENDORSIM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(key)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("vendorsim: %s=%s: %w", key, strconv.Quote(v), err))
		}
	})
	return errors.Join(errs...)
}
