package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tokenbroker/tokenbroker/auth"
)

type options struct {
	broker, mode, logLevel string
	baseline               string // a second broker binary measured beside the first; "" for none
	profile                string // directory for CPU profiles; "" for none
	rounds, conns, threads int
	requests               int // counted per target in the instructions mode
	body                   int
	duration               time.Duration
	short                  bool
	// staticFloor gives the upstream, nginx and the bare proxy a short
	// static token instead of the caller's JWT (-same-request=false).
	staticFloor bool
	cacheSim    bool // the instructions mode also simulates the caches
}

// target is one server under load. pids are the processes whose CPU it
// uses; stats, when set, serves go_memstats_mallocs_total. pprof, when set,
// is the base URL of its /debug/pprof/profile, and file where -profile
// writes the CPU profile taken from it. pid and role (bare, broker or
// baseline) are set on the Go servers, which the instructions mode runs
// under callgrind.
type target struct {
	name, url, auth string
	pids            func() []int
	stats           string
	pprof, file     string
	pid             int
	role            string
}

// floorAuth is the Authorization the targets other than the brokers get:
// by default the caller's own, so that every target reads the same request
// headers off the wire and a broker is measured on its own work. Before
// -same-request (2026-12-03) the floor got "Bearer static-token", ~230
// bytes shorter than the bench JWT: reading those bytes costs the bare
// proxy about 5,300 instructions per request (callgrind: 127,105 with the
// JWT, 121,855 without, docs/benchmarks.md), a cost any proxy handed that
// request pays.
func floorAuth(o options, caller string) string {
	if o.staticFloor {
		return "Bearer static-token"
	}
	return "Bearer " + caller
}

// requestLine says which Authorization the floor targets were sent.
func requestLine(o options) string {
	if o.staticFloor {
		return "requests: the brokers get the caller's JWT, the upstream, nginx and the bare proxy a static token (-same-request=false)"
	}
	return "requests: every target gets the same headers, the caller's JWT included"
}

// goTargets are the bare proxy, the broker and, when started, the baseline
// broker: the Go servers, which report their allocations.
func goTargets(o options, s *servers, caller string) []target {
	ts := []target{
		{name: "bare httputil.ReverseProxy", role: "bare", url: "http://" + s.bareAddr, auth: floorAuth(o, caller),
			pid: s.bare, stats: "http://" + s.bareStats + "/"},
		{name: brokerName, role: "broker", url: "http://" + s.api + "/proxy/servicenow", auth: "Bearer " + caller,
			pid: s.broker, stats: "http://" + s.metrics + "/metrics"},
	}
	if s.baseline != 0 {
		ts = append(ts, target{name: baselineName, role: "baseline", url: "http://" + s.baseAPI + "/proxy/servicenow",
			auth: "Bearer " + caller, pid: s.baseline, stats: "http://" + s.baseMetrics + "/metrics"})
	}
	for i := range ts {
		pid := ts[i].pid
		ts[i].pids = func() []int { return []int{pid} }
	}
	return ts
}

const apiPath = "/api/now/table/incident"

// The broker targets' names. The baseline is a second broker binary (-baseline),
// typically main before a change, measured in the same rounds.
const (
	brokerName   = "tokenbroker /proxy/servicenow"
	baselineName = "baseline tokenbroker"
)

// brokerEnv is the environment of a broker listening on api and metrics,
// keeping its data in dataDir, with the upstream as its ServiceNow and
// Atlassian.
func brokerEnv(o options, up, api, metrics, secret, dataDir string) []string {
	env := append(os.Environ(),
		"BROKER_LISTEN_ADDR="+api,
		"BROKER_METRICS_ADDR="+metrics,
		"BROKER_PUBLIC_URL=http://"+api,
		"BROKER_AUTH_HS256_SECRET="+secret,
		"BROKER_DATA_DIR="+dataDir,
		"BROKER_ALLOW_INSECURE_VENDOR_URLS=true",
		"BROKER_SERVICENOW_CLIENT_ID=bench-client",
		"BROKER_SERVICENOW_CLIENT_SECRET=bench-secret",
		"BROKER_SERVICENOW_ALLOWED_HOSTS="+up,
		"BROKER_CONFLUENCE_CLIENT_ID=bench-atl",
		"BROKER_CONFLUENCE_CLIENT_SECRET=bench-atl-secret",
		"BROKER_CONFLUENCE_AUTH_URL=http://"+up,
		"BROKER_CONFLUENCE_API_URL=http://"+up,
		"BROKER_LOG_LEVEL="+o.logLevel,
		// The stored-connections measure restarts the broker.
		"BROKER_SHUTDOWN_GRACE=0s",
	)
	if o.profile != "" {
		env = append(env, "BROKER_PPROF=true")
	}
	return env
}

func bench(ctx context.Context, o options, out io.Writer) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (Debian: apt-get install wrk)")
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		return errors.New("nginx is not installed (Debian: apt-get install nginx-light)")
	}
	// 1,000 connections need more descriptors than the usual soft limit of
	// 1,024 in the broker (client and upstream side) and in wrk. Setting it
	// here also keeps Go from restoring the lower limit in the children.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	var procs procs
	defer procs.stop()
	s, err := startServers(ctx, o, &procs, dir, true, direct)
	if err != nil {
		return err
	}
	idle := map[string]int64{brokerName: rss(s.broker)}
	if s.baseline != 0 {
		idle[baselineName] = rss(s.baseline)
	}
	caller, err := s.connect(ctx)
	if err != nil {
		return err
	}
	targets := append([]target{
		{name: "upstream direct", url: "http://" + s.up, auth: floorAuth(o, caller), pids: func() []int { return []int{s.upstream} }},
		{name: "nginx (keepalive, header injection)", url: "http://" + s.ngx, auth: floorAuth(o, caller),
			pids: func() []int { return append([]int{s.nginx}, children(s.nginx)...) }},
	}, goTargets(o, s, caller)...)
	if o.profile != "" {
		targets[2].pprof, targets[2].file = "http://"+s.bareStats, filepath.Join(o.profile, "bare.pprof")
		targets[3].pprof, targets[3].file = "http://"+s.metrics, filepath.Join(o.profile, "broker.pprof")
	}
	for _, t := range targets {
		if err := sanity(ctx, t); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "proxybench: %d round(s) x %s per target, wrk -t%d; %s; upstream answers %d bytes\n",
		o.rounds, o.duration, o.threads, machine(), o.body)
	fmt.Fprintln(out, requestLine(o))
	if o.baseline != "" {
		fmt.Fprintf(out, "broker: %s; baseline broker: %s\n", o.broker, o.baseline)
	}
	if o.mode != "cost" {
		if err := throughput(ctx, o, targets, out); err != nil {
			return err
		}
	}
	if o.mode != "throughput" {
		if err := cost(ctx, o, targets, out, idle); err != nil {
			return err
		}
		// Last, because it restarts the broker.
		n := 1000
		if o.short {
			n = 20
		}
		restart := func() (int, error) {
			if err := procs.stopOne(s.broker); err != nil {
				return 0, err
			}
			pid, err := procs.startLogged(ctx, s.brokerLog, o.broker, s.brokerEnv)
			if err != nil {
				return 0, err
			}
			return pid, waitOK(ctx, "http://"+s.metrics+"/readyz")
		}
		if err := stored(ctx, out, n, s.secret, "http://"+s.api, "http://"+s.up, restart); err != nil {
			return err
		}
	}
	return nil
}

// stored reports the broker's resident memory after a start with n stored
// connections (issue 10's P7 "RSS after start with 1,000 connections", read
// as vendor connections, which the broker keeps in memory), and with n
// client connections open and idle after one proxied call each. The bench
// account's connection is one of them; the others are app-level ServiceNow
// connections of accounts of their own, made through the real OAuth
// routes.
func stored(ctx context.Context, out io.Writer, n int, secret, api, instance string, restart func() (int, error)) error {
	now := time.Now()
	callers := make([]string, n)
	for i := range n {
		account := "bench"
		if i > 0 {
			account = fmt.Sprintf("bench-%04d", i)
			admin, err := auth.Mint([]byte(secret), auth.Claims{Account: account, Subject: "admin@" + account, Roles: []string{"admin"}}, time.Hour, now)
			if err != nil {
				return err
			}
			if err := connect(ctx, api, admin, instance); err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
		}
		c, err := auth.Mint([]byte(secret), auth.Claims{Account: account, Subject: "svc"}, time.Hour, now)
		if err != nil {
			return err
		}
		callers[i] = c
	}
	pid, err := restart()
	if err != nil {
		return err
	}
	afterStart := rss(pid)
	// n client connections, each kept open after one call of its own
	// account's connection: the broker holds n server connections, the
	// upstream connections its pool keeps, and n accounts' tokens in use.
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/proxy/servicenow"+apiPath, nil)
			req.Header.Set("Authorization", "Bearer "+callers[i])
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("connection %d: proxied call answered %d", i, resp.StatusCode)
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return err
		}
	}
	// The calls ran at once; give the server a moment to park every
	// connection idle, as a real pool of callers would leave them.
	time.Sleep(time.Second)
	idleConns := rss(pid)
	fmt.Fprintf(out, "\nbroker with %d stored connections: RSS after start %s; with %d client connections open and idle after one call each %s\n",
		n, mb(afterStart), n, mb(idleConns))
	return nil
}

// throughput runs every target once per round, in turn, and reports the
// medians and their ratios to nginx and to the bare proxy. In the first
// round it takes a CPU profile of each target that serves one, while wrk
// loads it; the profile lasts the wrk run less a second (at least one), so
// that it covers load, not the start or the end of it.
func throughput(ctx context.Context, o options, targets []target, out io.Writer) error {
	res := make([][]wrkResult, len(targets))
	secs := max(int((o.duration - time.Second).Seconds()), 1)
	var profiles []string
	for r := 0; r < o.rounds; r++ {
		for i, t := range targets {
			var prof chan error
			if r == 0 && t.pprof != "" {
				prof = make(chan error, 1)
				go func() { prof <- cpuProfile(ctx, t.pprof, secs, t.file) }()
				profiles = append(profiles, t.file)
			}
			u0, k0 := cpuTimes(t.pids())
			w, err := runWrk(ctx, t, o.threads, o.conns, o.duration, apiPath)
			if u1, k1 := cpuTimes(t.pids()); w.requests > 0 {
				w.user, w.sys = (u1-u0)/float64(w.requests), (k1-k0)/float64(w.requests)
			}
			if prof != nil {
				err = errors.Join(err, <-prof)
			}
			if err != nil {
				return err
			}
			res[i] = append(res[i], w)
		}
	}
	med := make([]wrkResult, len(targets))
	for i := range targets {
		med[i] = median(res[i])
	}
	fmt.Fprintf(out, "\nthroughput: %d connections, medians of %d round(s)\n", o.conns, o.rounds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\treq/s\tp50\tp99\tvs nginx\tvs bare\tnon-2xx\tCPU µs/req user\tsystem")
	for i, t := range targets {
		m := med[i]
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.2f\t%.2f\t%d\t%.1f\t%.1f\n", t.name, m.rps, ms(m.p50), ms(m.p99),
			m.rps/med[1].rps, m.rps/med[2].rps, m.errors, m.user*1e6, m.sys*1e6)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(profiles) > 0 {
		fmt.Fprintf(out, "\nCPU profiles of the first round (%d s each, under wrk) written to %s; read them with:\n", secs, o.profile)
		for _, f := range profiles {
			fmt.Fprintf(out, "  go tool pprof -top %s\n", f)
		}
	}
	return nil
}

// cost reports, for the bare proxy and the broker, the objects allocated
// per request and the CPU per 1,000 req/s with 1 KB answers over 16
// connections, then the resident memory with 1,000 connections open.
func cost(ctx context.Context, o options, targets []target, out io.Writer, idle map[string]int64) error {
	fmt.Fprintf(out, "\ncost: 16 connections, 1 KB answers, medians of %d round(s) (allocations from go_memstats_mallocs_total; CPU from /proc)\n", o.rounds)
	ts := targets[1:]
	type sample struct{ rps, allocs, vcpu float64 }
	samples := make([][]sample, len(ts))
	// In alternating rounds, as in the throughput mode: one 5 s run per
	// target moved this figure by 15% between two runs of the same binaries
	// on a shared machine (0.093 and 0.109 vCPU for the broker).
	for range o.rounds {
		for i, t := range ts {
			m0, err := mallocs(ctx, t.stats)
			if err != nil {
				return err
			}
			c0, w0 := cpuSeconds(t.pids()), time.Now()
			w, err := runWrk(ctx, t, 1, 16, o.duration, "/1k")
			if err != nil {
				return err
			}
			c1, wall := cpuSeconds(t.pids()), time.Since(w0).Seconds()
			m1, err := mallocs(ctx, t.stats)
			if err != nil {
				return err
			}
			sm := sample{rps: w.rps, allocs: -1, vcpu: (c1 - c0) / wall / (w.rps / 1000)}
			if t.stats != "" && w.requests > 0 {
				sm.allocs = float64(m1-m0) / float64(w.requests)
			}
			samples[i] = append(samples[i], sm)
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\treq/s\tallocs/req\tvCPU per 1k req/s\tRSS idle\tRSS 1000 conns")
	for i, t := range ts {
		pick := func(f func(sample) float64) float64 {
			v := make([]float64, len(samples[i]))
			for j, sm := range samples[i] {
				v[j] = f(sm)
			}
			return medianOf(v)
		}
		if _, err := runWrk(ctx, t, 2, 1000, 2*time.Second, "/1k"); err != nil {
			return err
		}
		var rssLoaded int64
		for _, pid := range t.pids() {
			rssLoaded += rss(pid)
		}
		idleRSS := "-"
		if v, ok := idle[t.name]; ok {
			idleRSS = mb(v)
		}
		allocs := "-"
		if a := pick(func(sm sample) float64 { return sm.allocs }); a >= 0 {
			allocs = fmt.Sprintf("%.1f", a)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.3f\t%s\t%s\n", t.name, pick(func(sm sample) float64 { return sm.rps }), allocs,
			pick(func(sm sample) float64 { return sm.vcpu }), idleRSS, mb(rssLoaded))
	}
	return tw.Flush()
}

func nginxConf(dir, upstream, listen string) string {
	tmp := filepath.Join(dir, "tmp")
	return fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %[2]s; proxy_temp_path %[2]s; fastcgi_temp_path %[2]s; uwsgi_temp_path %[2]s; scgi_temp_path %[2]s;
  upstream up { server %[3]s; keepalive 256; }
  server {
    listen %[4]s;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer static-token";
    }
  }
}
`, dir, tmp, upstream, listen)
}

// connect makes the broker's ServiceNow connection through the real OAuth
// URL and callback routes; the upstream's token endpoint accepts any code.
func connect(ctx context.Context, api, admin, instance string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		api+"/v1/account/integrations/servicenow/oauth2/url?flow=app&instanceUrl="+url.QueryEscape(instance), nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var got struct{ URL string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oauth2/url: %d %v", resp.StatusCode, err)
	}
	u, err := url.Parse(got.URL)
	if err != nil {
		return err
	}
	cb, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/account/integrations/servicenow/oauth2/callback?code=bench-code&state="+
		url.QueryEscape(u.Query().Get("state")), nil)
	// A flow bound to the browser that started it carries the cookie the
	// OAuth URL answer set.
	for _, c := range resp.Cookies() {
		cb.AddCookie(c)
	}
	cresp, err := http.DefaultClient.Do(cb)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(cresp.Body)
	cresp.Body.Close()
	if cresp.StatusCode != http.StatusOK {
		return fmt.Errorf("oauth2/callback: %d %s", cresp.StatusCode, body)
	}
	return nil
}

// sanity checks that a target answers the upstream's body, with the
// injected token reaching the upstream.
func sanity(ctx context.Context, t target) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.url+apiPath, nil)
	req.Header.Set("Authorization", t.auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), `{"result"`) {
		return fmt.Errorf("%s: sanity call answered %d %.200s", t.name, resp.StatusCode, body)
	}
	return nil
}

func waitOK(ctx context.Context, u string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer within 30s", u)
}

func median(rs []wrkResult) wrkResult {
	pick := func(f func(wrkResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return medianOf(v)
	}
	var errs int
	for _, r := range rs {
		errs += r.errors
	}
	return wrkResult{
		rps:    pick(func(r wrkResult) float64 { return r.rps }),
		p50:    time.Duration(pick(func(r wrkResult) float64 { return float64(r.p50) })),
		p99:    time.Duration(pick(func(r wrkResult) float64 { return float64(r.p99) })),
		user:   pick(func(r wrkResult) float64 { return r.user }),
		sys:    pick(func(r wrkResult) float64 { return r.sys }),
		errors: errs,
	}
}

// medianOf sorts v and returns its middle value (the upper one of an even count).
func medianOf(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
func mb(b int64) string         { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
