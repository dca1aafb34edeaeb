package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// nastyPaths are callers' paths (after /proxy/<vendor>) with how they must end:
// refused with 400, or forwarded to exactly the given RequestURI under the
// base /ex/confluence/cloud-1. "EVIL" stands for the evil server's host:port.
// served, when set, is what happens through net/http instead: "net/http" when
// its request-line parser refuses first, or the RequestURI when url.URL
// re-escapes a character that targetURL alone would refuse.
var nastyPaths = []struct {
	in      string
	forward string // "" = refused with 400
	served  string
}{
	{"/../x", "", ""},
	{"/a/../../x", "", ""},
	{"/a/..", "", ""},
	{"/..", "", ""},
	{"/./x", "", ""},
	{"/a/./b", "", ""},
	{"/%2e%2e/x", "", ""},
	{"/%2E%2e/x", "", ""},
	{"/%2E%2E/", "", ""},
	{"/.%2e/x", "", ""},
	{"/%2e./x", "", ""},
	{"/%2e/x", "", ""},
	{"/a/%2e%2e", "", ""},
	{"/..;/x", "", ""},
	{"/%2e%2e;jsessionid=1/x", "", ""},
	{"/...", "", ""},
	{"/a%2fb", "", ""},
	{"/a%2Fb", "", ""},
	{"/..%2f..%2fx", "", ""},
	{"/%2e%2e%2fx", "", ""},
	{"/a%2F%2FEVIL/x", "", ""},
	{"/a%5cb", "", ""},
	{"/a%5Cb", "", ""},
	{`/a\b`, "", ""},
	{`/..\x`, "", ""},
	{"/..%5cx", "", ""},
	{"//EVIL/x", "", ""},
	{"//evil.com/x", "", ""},
	{"/a//b", "", ""},
	{"/a/;x/b", "", ""},
	{"/http://EVIL/x", "", ""},
	{"/https:EVIL", "", ""},
	{"/HTTP:%2f%2fEVIL", "", ""},
	{"/h%74tp%3a//EVIL", "", ""},
	{"/javascript:alert(1)", "", ""},
	{"/a%00b", "", ""},
	{"/a%0d%0aHost:%20EVIL", "", ""},
	{"/a%0aX-Injected:%201", "", ""},
	{"/a%7fb", "", ""},
	{"/a%1fb", "", ""},
	{"/a%zzb", "", "net/http"},
	{"/a%2", "", "net/http"},
	{"/%252e%252e/x", "", ""},
	{"/%252f", "", ""},
	// Escaped escapes: harmless once, a dot segment or a slash to a vendor
	// stack that decodes twice or more.
	{"/%25%32%65%25%32%65/x", "", ""},
	{"/%25%32%45%25%32%45/x", "", ""},
	{"/%25%32%65/x", "", ""},
	{"/a%25%32%66b", "", ""},
	{"/a%25%32%46b", "", ""},
	{"/a%25%35%63b", "", ""},
	{"/%25%32%35%25%33%32%25%36%35%25%32%35%25%33%32%25%36%35/x", "", ""}, // three rounds to ".."
	{"/a%25%32%66%25b", "", ""}, // a stray "%" does not stop a lenient decoder
	{"/a%25%30%30b", "", ""},    // NUL after two rounds
	// Not valid UTF-8 once decoded: overlong forms read as "." or "/" by a
	// lenient decoder, stray and invalid bytes.
	{"/%c0%ae%c0%ae/x", "", ""},
	{"/%C0%AE/x", "", ""},
	{"/%e0%80%ae%e0%80%ae/x", "", ""},
	{"/%f0%80%80%ae/x", "", ""},
	{"/a%c0%afb", "", ""},
	{"/a%80b", "", ""},
	{"/a%ffb", "", ""},
	{"/a%e2%80b", "", ""},
	{"/%25c0%25ae%25c0%25ae/x", "", ""},
	{"/%ed%a0%80", "", ""}, // a UTF-16 surrogate
	{"/a|b", "", "/ex/confluence/cloud-1/a%7Cb"},
	{"/a`b", "", "/ex/confluence/cloud-1/a%60b"},
	{"/a<b>", "", "/ex/confluence/cloud-1/a%3Cb%3E"},
	{"/" + strings.Repeat("a", 5000), "", ""},
	// Harmless: stay under the base, forwarded verbatim.
	{"/@EVIL/x", "/ex/confluence/cloud-1/@EVIL/x", ""},
	{"/x@EVIL/y", "/ex/confluence/cloud-1/x@EVIL/y", ""},
	{"/user:pw@EVIL", "", ""}, // "user:" reads as a scheme
	{"/x/user:pw@EVIL", "/ex/confluence/cloud-1/x/user:pw@EVIL", ""},
	{"/%e2%80%a4%e2%80%a4/x", "/ex/confluence/cloud-1/%e2%80%a4%e2%80%a4/x", ""}, // one-dot leaders
	{"/%ef%bc%8e%ef%bc%8e/x", "/ex/confluence/cloud-1/%ef%bc%8e%ef%bc%8e/x", ""}, // fullwidth full stops
	{"/caf%c3%a9/%e4%b8%ad", "/ex/confluence/cloud-1/caf%c3%a9/%e4%b8%ad", ""},   // valid UTF-8
	{"/100%25", "/ex/confluence/cloud-1/100%25", ""},                             // a literal percent sign
	{"/a%25b%25", "/ex/confluence/cloud-1/a%25b%25", ""},
	{"/.well-known/x", "/ex/confluence/cloud-1/.well-known/x", ""}, // a dot is not a dot segment
	{"/a..b/..c", "/ex/confluence/cloud-1/a..b/..c", ""},
	{"/wiki/api/v2/pages/123", "/ex/confluence/cloud-1/wiki/api/v2/pages/123", ""}, // the ordinary case
	{"/wiki/rest/api/content/", "/ex/confluence/cloud-1/wiki/rest/api/content/", ""},
	{"/wiki/rest/api/content?cql=space%3DDEV%20and%20title~%22a%2fb%22&limit=5", "/ex/confluence/cloud-1/wiki/rest/api/content?cql=space%3DDEV%20and%20title~%22a%2fb%22&limit=5", ""},
	{"/x?next=..%2f..%2f&u=http://EVIL/", "/ex/confluence/cloud-1/x?next=..%2f..%2f&u=http://EVIL/", ""},
	{"/a(1)!$&'*+,;=:b", "/ex/confluence/cloud-1/a(1)!$&'*+,;=:b", ""},
	{"/%41%42", "/ex/confluence/cloud-1/%41%42", ""},
	{"/", "/ex/confluence/cloud-1/", ""},
}

// TestPathSafety sends each nasty path as a raw request line (no client
// normalises it) through the real server and router, and checks what the
// vendor received. An evil server stands for every other host: it must never
// be contacted.
func TestPathSafety(t *testing.T) {
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilHits.Add(1)
	}))
	defer evil.Close()
	evilAddr := strings.TrimPrefix(evil.URL, "http://")

	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {})
	h := newHarness(t, vendor, nil)
	proxyAddr := strings.TrimPrefix(h.server.URL, "http://")

	send := func(t *testing.T, target string) (*http.Response, string) {
		conn, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: broker.internal\r\nAuthorization: Bearer acct:"+account+"\r\nConnection: close\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}

	for _, tc := range nastyPaths {
		in := strings.ReplaceAll(tc.in, "EVIL", evilAddr)
		want := strings.ReplaceAll(tc.forward, "EVIL", evilAddr)
		byServer := false
		switch tc.served {
		case "":
		case "net/http":
			byServer = true
		default:
			want = tc.served
		}
		name := in
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			before := len(vendor.requests())
			res, body := send(t, "/proxy/confluence"+in)
			got := vendor.requests()[before:]
			if want == "" {
				if res.StatusCode != http.StatusBadRequest {
					t.Fatalf("status = %d (%s), want 400; vendor saw %v", res.StatusCode, body, got)
				}
				// Refused by the broker, not by net/http's request-line parser, so
				// the rule under test is the broker's.
				if !byServer && res.Header.Get(HeaderBrokerError) != "invalid_request" {
					t.Errorf("refused without X-Broker-Error: %s", body)
				}
				if len(got) != 0 {
					t.Errorf("vendor was called: %v", got)
				}
				return
			}
			if res.StatusCode != http.StatusOK || len(got) != 1 {
				t.Fatalf("status = %d (%s), vendor requests = %d", res.StatusCode, body, len(got))
			}
			if got[0].RequestURI != want {
				t.Errorf("vendor RequestURI = %q, want %q", got[0].RequestURI, want)
			}
			if got[0].Host != strings.TrimPrefix(vendor.URL, "http://") {
				t.Errorf("vendor Host = %q", got[0].Host)
			}
		})
	}

	// Absolute-form request targets name a host; the proxy uses only the path.
	t.Run("absolute-form target", func(t *testing.T) {
		before := len(vendor.requests())
		res, body := send(t, "http://"+evilAddr+"/proxy/confluence/wiki/x")
		got := vendor.requests()[before:]
		if res.StatusCode != http.StatusOK || len(got) != 1 || got[0].RequestURI != "/ex/confluence/cloud-1/wiki/x" {
			t.Errorf("status = %d (%s), vendor saw %v", res.StatusCode, body, got)
		}
	})

	if n := evilHits.Load(); n != 0 {
		t.Errorf("the evil server was contacted %d times", n)
	}
}

// assertUnderBase is the invariant of targetURL: whatever it returns stays
// under base, by the URL's fields and after a round trip through its text.
func assertUnderBase(t testing.TB, base, u *url.URL) {
	t.Helper()
	basePath := strings.TrimSuffix(base.Path, "/")
	if u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		t.Fatalf("target %q left base %q", u, base)
	}
	if !strings.HasPrefix(u.Path, basePath+"/") || !strings.HasPrefix(u.EscapedPath(), strings.TrimSuffix(base.EscapedPath(), "/")+"/") {
		t.Fatalf("target path %q (escaped %q) not under %q", u.Path, u.EscapedPath(), basePath)
	}
	if c := path.Clean(u.Path); c != basePath && !strings.HasPrefix(c, basePath+"/") {
		t.Fatalf("target path %q cleans to %q, outside %q", u.Path, c, basePath)
	}
	if strings.ContainsAny(u.Path, "\\\x00") || strings.Contains(u.Path, "//") {
		t.Fatalf("target path %q has a backslash, NUL or empty segment", u.Path)
	}
	// What the Transport writes on the request line.
	uri := u.RequestURI()
	for i := 0; i < len(uri); i++ {
		if uri[i] <= ' ' || uri[i] == 0x7f {
			t.Fatalf("request line %q has byte %#x", uri, uri[i])
		}
	}
	back, err := url.Parse(u.String())
	if err != nil {
		t.Fatalf("target %q does not parse: %v", u, err)
	}
	if back.Scheme != base.Scheme || back.Host != base.Host || back.User != nil ||
		!strings.HasPrefix(back.Path, basePath+"/") || back.EscapedPath() != u.EscapedPath() {
		t.Fatalf("target %q parses back as %#v", u, back)
	}
	if c := path.Clean(back.Path); c != basePath && !strings.HasPrefix(c, basePath+"/") {
		t.Fatalf("target %q parses back to a path that cleans to %q", u, c)
	}
}

// assertDecodesSafely is the invariant of a forwarded path for a vendor
// that decodes more than once: no round of decoding, however lenient, yields a
// dot segment, a slash or backslash inside a segment, or invalid UTF-8. It
// decodes with its own code, not with checkPath's helpers.
func assertDecodesSafely(t testing.TB, escPath string) {
	t.Helper()
	for _, seg := range strings.Split(escPath[1:], "/") {
		for round := 0; strings.Contains(seg, "%"); round++ {
			var b strings.Builder
			for i := 0; i < len(seg); i++ {
				if seg[i] == '%' && i+2 < len(seg) {
					if v, err := strconv.ParseUint(seg[i+1:i+3], 16, 8); err == nil {
						b.WriteByte(byte(v))
						i += 2
						continue
					}
				}
				b.WriteByte(seg[i])
			}
			dec := b.String()
			if dec == seg {
				break
			}
			name, _, _ := strings.Cut(dec, ";")
			if !utf8.ValidString(dec) || strings.ContainsAny(dec, "/\\") || strings.Trim(name, ".") == "" && name != "" {
				t.Fatalf("segment %q of forwarded path %q decodes in round %d to %q", seg, escPath, round+1, dec)
			}
			seg = dec
		}
	}
}

func TestTargetURL(t *testing.T) {
	bases := []string{
		"https://acme.service-now.com",
		"https://api.atlassian.com/ex/confluence/cloud-1",
		"https://api.atlassian.com/ex/confluence/cloud-1/",
		"http://127.0.0.1:8443/sim/a%2Fb", // an escaped base path is kept as is
	}
	for _, b := range bases {
		base := mustParse(t, b)
		for _, tc := range nastyPaths {
			p, q, _ := strings.Cut(strings.ReplaceAll(tc.in, "EVIL", "evil.com"), "?")
			u, err := targetURL(base, p, q)
			if (err != nil) != (tc.forward == "") {
				t.Errorf("targetURL(%q, %q) error = %v, want refused=%v", b, p, err, tc.forward == "")
				continue
			}
			if err == nil {
				assertUnderBase(t, base, u)
				assertDecodesSafely(t, p)
			}
		}
	}
	for _, b := range []string{"", "/relative", "ftp://x/y", "https://u:p@host/", "https:opaque", "https:///nohost"} {
		var base *url.URL
		if b != "" {
			base = mustParse(t, b)
		}
		if _, err := targetURL(base, "/x", ""); err != errBadBase {
			t.Errorf("base %q: error = %v, want errBadBase", b, err)
		}
	}
	if _, err := targetURL(mustParse(t, bases[0]), "/x", "a=1\r\nb"); err != errQueryBadChar {
		t.Errorf("query with CRLF: %v", err)
	}
	u, err := targetURL(mustParse(t, bases[3]), "/x%41", "")
	if err != nil || u.String() != "http://127.0.0.1:8443/sim/a%2Fb/x%41" {
		t.Errorf("escaped base: %v %v", u, err)
	}
}

func FuzzTargetURL(f *testing.F) {
	for _, tc := range nastyPaths {
		p, q, _ := strings.Cut(strings.ReplaceAll(tc.in, "EVIL", "evil.com:443"), "?")
		f.Add(p, q)
	}
	f.Add("/%", "")
	f.Add("/%%32%65", "")
	f.Add("/\u2024\u2024/x", "")
	f.Add("/%25%32%65%25%32%65", "")
	f.Add("/%C0%AE%C0%AE", "")
	f.Add("/ex/../../", "a=%00")
	bases := []*url.URL{
		mustParse(f, "https://acme.service-now.com"),
		mustParse(f, "https://api.atlassian.com/ex/confluence/cloud-1"),
	}
	f.Fuzz(func(t *testing.T, p, q string) {
		for _, base := range bases {
			u, err := targetURL(base, p, q)
			if err != nil {
				if u != nil {
					t.Fatalf("error %v with a URL", err)
				}
				continue
			}
			assertUnderBase(t, base, u)
			assertDecodesSafely(t, p)
			if u.RawQuery != q {
				t.Fatalf("query %q forwarded as %q", q, u.RawQuery)
			}
			// The vendor gets exactly the bytes that were checked.
			if got, want := u.RequestURI(), strings.TrimSuffix(base.EscapedPath(), "/")+p; strings.TrimSuffix(got, "?"+q) != want {
				t.Fatalf("path %q forwarded as %q, want %q", p, got, want)
			}
		}
	})
}
