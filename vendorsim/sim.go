package vendorsim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sim is a running simulator. All methods are safe for concurrent use.
type Sim struct {
	o       Options
	offset  atomic.Int64 // added to o.Now; moved by Advance
	consent *template.Template

	instances map[string]*Instance
	users     map[string]*AtlassianUser // by account id
	sites     map[string]*Site          // by cloud id

	mu       sync.Mutex // guards everything below; never held while sleeping or doing I/O
	snTTL    time.Duration
	atlTTL   time.Duration
	pending  map[string]*pendingAuth
	snCodes  map[string]*snCode
	snRT     map[string]*snRefreshToken
	snAT     map[string]*snAccessToken
	atlCodes map[string]*atlCode
	atlRT    map[string]*atlRefreshToken
	atlAT    map[string]*atlAccessToken
	faults   []*queuedFault
	counters Counters
	snCount  map[string]*VendorCounters
	requests []APIRequest

	files *fileStore // what callers created through the APIs

	snURL      map[string]string
	atlAuthURL string
	atlAPIURL  string
	controlURL string

	servers   []*http.Server
	serving   sync.WaitGroup
	done      chan struct{} // closed by Close; ends fault sleeps
	closeOnce sync.Once
	closeErr  error
}

// URLs are the base URLs a simulator serves (no trailing slashes).
type URLs struct {
	ServiceNow    map[string]string `json:"serviceNow"` // by instance name
	AtlassianAuth string            `json:"atlassianAuth"`
	AtlassianAPI  string            `json:"atlassianApi"`
	Control       string            `json:"control"`
}

// Start validates o, binds every listener and serves until Close.
func Start(o Options) (*Sim, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	s := &Sim{
		o:         o,
		consent:   template.Must(template.New("consent").Parse(consentHTML)),
		instances: map[string]*Instance{},
		users:     map[string]*AtlassianUser{},
		sites:     map[string]*Site{},
		snTTL:     o.SNAccessTTL,
		atlTTL:    o.AtlAccessTTL,
		pending:   map[string]*pendingAuth{},
		snCodes:   map[string]*snCode{},
		snRT:      map[string]*snRefreshToken{},
		snAT:      map[string]*snAccessToken{},
		atlCodes:  map[string]*atlCode{},
		atlRT:     map[string]*atlRefreshToken{},
		atlAT:     map[string]*atlAccessToken{},
		snCount:   map[string]*VendorCounters{},
		snURL:     map[string]string{},
		files:     newFileStore(),
		done:      make(chan struct{}),
	}
	// Own copies, so that a caller changing its Options slices later cannot
	// race with the handlers.
	s.o.Instances = append([]Instance(nil), o.Instances...)
	s.o.Sites = append([]Site(nil), o.Sites...)
	s.o.AtlassianUsers = append([]AtlassianUser(nil), o.AtlassianUsers...)
	for i := range s.o.Instances {
		in := &s.o.Instances[i]
		in.Users = append([]SNUser(nil), in.Users...)
		s.instances[in.Name] = in
		s.snCount[in.Name] = &VendorCounters{}
	}
	for i := range s.o.Sites {
		s.sites[s.o.Sites[i].CloudID] = &s.o.Sites[i]
	}
	for i := range s.o.AtlassianUsers {
		s.users[s.o.AtlassianUsers[i].AccountID] = &s.o.AtlassianUsers[i]
	}

	type bound struct {
		ln  net.Listener
		url string
	}
	var all []net.Listener
	listen := func(addr string) (bound, error) {
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range all {
				l.Close()
			}
			return bound{}, fmt.Errorf("vendorsim: listen %s: %w", addr, err)
		}
		all = append(all, ln)
		return bound{ln, baseURL(ln.Addr())}, nil
	}

	snLn := map[string]net.Listener{}
	for _, in := range s.o.Instances {
		b, err := listen(net.JoinHostPort(o.BindHost, strconv.Itoa(o.InstancePorts[in.Name])))
		if err != nil {
			return nil, err
		}
		snLn[in.Name], s.snURL[in.Name] = b.ln, b.url
	}
	auth, err := listen(o.AtlassianAuthAddr)
	if err != nil {
		return nil, err
	}
	api, err := listen(o.AtlassianAPIAddr)
	if err != nil {
		return nil, err
	}
	ctl, err := listen(o.ControlAddr)
	if err != nil {
		return nil, err
	}
	s.atlAuthURL, s.atlAPIURL, s.controlURL = auth.url, api.url, ctl.url

	for _, in := range s.o.Instances {
		s.serve(snLn[in.Name], "servicenow:"+in.Name, s.snHandler(s.instances[in.Name]))
	}
	s.serve(auth.ln, "atlassian-auth", s.atlAuthHandler())
	s.serve(api.ln, "atlassian-api", s.atlAPIHandler())
	s.serve(ctl.ln, "control", s.controlHandler())
	return s, nil
}

func (s *Sim) serve(ln net.Listener, name string, h http.Handler) {
	errLog := log.New(io.Discard, "", 0)
	if s.o.Logger != nil {
		h = logRequests(s.o.Logger.With("listener", name), h)
		errLog = slog.NewLogLogger(s.o.Logger.Handler(), slog.LevelDebug)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	s.servers = append(s.servers, srv)
	s.serving.Go(func() { _ = srv.Serve(ln) })
}

// Close stops every listener and ends scripted delays at once. It does not
// wait for handlers of already-accepted requests that are still writing.
func (s *Sim) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		var errs []error
		for _, srv := range s.servers {
			if err := srv.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.serving.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// ServiceNowURL is the base URL of a ServiceNow instance ("" if unknown).
func (s *Sim) ServiceNowURL(instance string) string { return s.snURL[instance] }

// AtlassianAuthURL is the base of /authorize and /oauth/token.
func (s *Sim) AtlassianAuthURL() string { return s.atlAuthURL }

// AtlassianAPIURL is the base of /oauth/token/accessible-resources, /me and
// /ex/confluence/<cloudId>/...
func (s *Sim) AtlassianAPIURL() string { return s.atlAPIURL }

// ControlURL is the base of the control API.
func (s *Sim) ControlURL() string { return s.controlURL }

// URLs returns every base URL the simulator serves.
func (s *Sim) URLs() URLs {
	sn := make(map[string]string, len(s.snURL))
	for k, v := range s.snURL {
		sn[k] = v
	}
	return URLs{ServiceNow: sn, AtlassianAuth: s.atlAuthURL, AtlassianAPI: s.atlAPIURL, Control: s.controlURL}
}

// Advance moves the simulator's clock forward by d (on top of Options.Now),
// for scripts that cannot inject a clock.
func (s *Sim) Advance(d time.Duration) { s.offset.Add(int64(d)) }

func (s *Sim) now() time.Time { return s.o.Now().Add(time.Duration(s.offset.Load())) }

// sleep waits d, or less when the request ends or the simulator closes; it
// reports whether the full d passed.
func (s *Sim) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

func baseURL(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return "http://" + a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		// A wildcard bind is reachable on loopback; a URL cannot name 0.0.0.0.
		return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// newToken is 32 random bytes behind a prefix, so tests can grep files and
// logs for leaked tokens of each kind.
func newToken(prefix string) string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func bearerToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// answer is a complete HTTP answer, built under the lock and written after it.
type answer struct {
	status int
	ctype  string
	body   []byte
	header http.Header
}

func jsonAnswer(status int, v any) answer {
	b, err := json.Marshal(v)
	if err != nil {
		return answer{status: 500, ctype: "text/plain; charset=utf-8", body: []byte(err.Error())}
	}
	return answer{status: status, ctype: "application/json;charset=UTF-8", body: b}
}

// rawJSON keeps exact bytes for bodies that tests compare byte for byte.
func rawJSON(status int, body string) answer {
	return answer{status: status, ctype: "application/json;charset=UTF-8", body: []byte(body)}
}

func textAnswer(status int, body string) answer {
	return answer{status: status, ctype: "text/plain; charset=utf-8", body: []byte(body)}
}

func (a answer) write(w http.ResponseWriter) {
	for k, vs := range a.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if a.ctype != "" {
		w.Header().Set("Content-Type", a.ctype)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

func writeJSON(w http.ResponseWriter, status int, v any) { jsonAnswer(status, v).write(w) }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logRequests logs method, path and status only: query strings carry state
// and bodies carry codes and tokens.
func logRequests(l *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		l.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration", time.Since(start).Round(time.Microsecond))
	})
}
