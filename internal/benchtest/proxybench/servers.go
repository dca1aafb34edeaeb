package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	// Its init also registers on http.DefaultServeMux, which no server here
	// serves; the stats listener mounts pprof.Profile explicitly.
	"net/http/pprof"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// serveUpstream answers like a ServiceNow instance as far as a connect needs
// (token endpoint, sys_user identity) and with a fixed JSON body otherwise:
// /1k answers 1,024 bytes, every other path -body bytes.
func serveUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	size := fs.Int("body", 256, "answer size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body, oneK := fixedJSON(*size), fixedJSON(1024)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth_token.do", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": "bench-access-token", "refresh_token": "bench-refresh-token",
			"token_type": "Bearer", "scope": "useraccount", "expires_in": 86400,
		})
	})
	mux.HandleFunc("GET /api/now/table/sys_user", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"result":[{"sys_id":"6816f79cc0a8016401c5a33be04be441","user_name":"admin","name":"Bench Admin","email":"admin@example.com"}]}`))
	})
	mux.HandleFunc("/1k", func(w http.ResponseWriter, r *http.Request) { writeFixed(w, oneK) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { writeFixed(w, body) })
	return serve(ctx, *addr, mux, "")
}

func writeFixed(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	_, _ = w.Write(b)
}

// fixedJSON is a ServiceNow-shaped answer of exactly n bytes.
func fixedJSON(n int) []byte {
	const head, tail = `{"result":[{"number":"INC0010001","short_description":"`, `"}]}`
	pad := max(n-len(head)-len(tail), 0)
	return []byte(head + string(bytes.Repeat([]byte("x"), pad)) + tail)
}

// serveBare is the floor: httputil.ReverseProxy with Rewrite, a transport
// tuned for one upstream, a buffer pool and a static Authorization header:
// what anyone would write for a fixed-credential proxy, with none of the
// broker's work (JWT, routing, token lookup, metrics, logs).
func serveBare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	statsAddr := fs.String("stats", "", "listen address of the allocation counter")
	upstream := fs.String("upstream", "", "upstream base URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("bare: -upstream %q: not a URL", *upstream)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header["Authorization"] = []string{"Bearer static-token"}
		},
		Transport: tr,
		// wrk drops its connections at the end of a run; the floor logs
		// nothing per request, like the broker at its default level.
		ErrorLog:   log.New(io.Discard, "", 0),
		BufferPool: &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
	}
	return serve(ctx, *addr, rp, *statsAddr)
}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }

// serve runs h on addr until ctx ends; statsAddr, when set, serves the
// process's allocation counter (what the broker's /metrics reports as
// go_memstats_mallocs_total) and its CPU profile (/debug/pprof/profile, as
// the broker serves it with BROKER_PPROF) on a listener of its own.
func serve(ctx context.Context, addr string, h http.Handler, statsAddr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if statsAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(w, "go_memstats_mallocs_total %d\n", ms.Mallocs)
		})
		stats := &http.Server{Handler: mux}
		sl, err := net.Listen("tcp", statsAddr)
		if err != nil {
			return err
		}
		go func() { _ = stats.Serve(sl) }()
		defer stats.Close()
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
