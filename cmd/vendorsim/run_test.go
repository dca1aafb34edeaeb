package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

func TestRunPrintsURLsAndStopsOnCancel(t *testing.T) {
	acme := testenv.FreePort(t)
	t.Setenv("VENDORSIM_GLOBEX_PORT", "0")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-acme-port", strconv.Itoa(acme), "-log-level", "error"}, pw)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("read URL line: %v (run: %v)", err, <-errc)
	}
	go io.Copy(io.Discard, pr)
	var urls vendorsim.URLs
	if err := json.Unmarshal([]byte(line), &urls); err != nil {
		t.Fatalf("URL line %q: %v", line, err)
	}
	if urls.ServiceNow["acme"] != "http://127.0.0.1:"+strconv.Itoa(acme) || urls.ServiceNow["globex"] == "" ||
		urls.AtlassianAuth == "" || urls.AtlassianAPI == "" || urls.Control == "" {
		t.Fatalf("urls %+v", urls)
	}
	res, err := http.Get(urls.Control + "/counters")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("control: %d", res.StatusCode)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := http.Get(urls.Control + "/counters"); err == nil {
		t.Fatal("still serving after run returned")
	}
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad env port", map[string]string{"VENDORSIM_ACME_PORT": "abc"}, nil, "VENDORSIM_ACME_PORT"},
		{"bad flag", nil, []string{"-nope"}, "flag provided but not defined"},
		{"stray argument", nil, []string{"extra"}, "unexpected arguments"},
		{"bad expired status", nil, []string{"-atlassian-expired-status", "500"}, "AtlExpiredStatus"},
		{"bad log level", nil, []string{"-log-level", "loud"}, "log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := run(t.Context(), tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one naming %q", err, tt.want)
			}
		})
	}
}
