package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/tokenbroker/tokenbroker/console"
)

func get(t *testing.T, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func checkSecurityHeaders(t *testing.T, path string, r *http.Response) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", path, k, got, v)
		}
	}
}

func TestServesFilesWithSecurityHeaders(t *testing.T) {
	h := console.Handler()
	for _, c := range []struct{ path, ctype, cache string }{
		{"/admin/", "text/html; charset=utf-8", "no-store"},
		{"/admin/index.html", "text/html; charset=utf-8", "no-store"},
		{"/admin/app.js", "text/javascript; charset=utf-8", "no-cache"},
		{"/admin/app.css", "text/css; charset=utf-8", "no-cache"},
	} {
		r := get(t, h, c.path)
		checkSecurityHeaders(t, c.path, r)
		body, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d with %d bytes", c.path, r.StatusCode, len(body))
		}
		if got := r.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := r.Header.Get("Cache-Control"); got != c.cache {
			t.Errorf("%s: Cache-Control %q, want %q", c.path, got, c.cache)
		}
		etag := r.Header.Get("ETag")
		if etag == "" {
			t.Errorf("%s: no ETag", c.path)
			continue
		}
		if again := get(t, h, c.path, "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", c.path, again.StatusCode)
		}
	}
}

func TestUnknownPathsAre404WithHeaders(t *testing.T) {
	h := console.Handler()
	for _, p := range []string{"/admin/nope.js", "/admin/static/app.js", "/admin/../go.mod", "/admin/.%2e/console.go",
		"/admin/app.js/", "/elsewhere/app.js", "/adminx/app.js"} {
		r := get(t, h, p)
		checkSecurityHeaders(t, p, r)
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, r.StatusCode)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/admin/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusNotFound {
		t.Errorf("POST /admin/: %d, want 404", w.Code)
	}
}

// TestNoInlineScriptOrStyle keeps the page compatible with its own CSP and
// the script free of HTML sinks: vendor strings must only ever be text.
func TestNoInlineScriptOrStyle(t *testing.T) {
	raw, err := os.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var walk func(*html.Node)
	scripts := 0
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			for _, a := range n.Attr {
				if a.Key == "style" || strings.HasPrefix(a.Key, "on") {
					t.Errorf("<%s %s=…>: inline style or handler", n.Data, a.Key)
				}
				if (a.Key == "href" || a.Key == "src") && strings.HasPrefix(strings.ToLower(strings.TrimSpace(a.Val)), "javascript:") {
					t.Errorf("<%s %s=%q>", n.Data, a.Key, a.Val)
				}
			}
			switch n.Data {
			case "style":
				t.Errorf("inline <style> element")
			case "script":
				scripts++
				src := ""
				for _, a := range n.Attr {
					if a.Key == "src" {
						src = a.Val
					}
				}
				if src == "" || n.FirstChild != nil {
					t.Errorf("inline <script>")
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if scripts != 1 {
		t.Errorf("%d scripts, want the one module", scripts)
	}

	js, err := os.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	sinks := regexp.MustCompile(`\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval|Function|setAttribute\(\s*["']style|\.style\b|createContextualFragment)\b`)
	for i, line := range strings.Split(string(js), "\n") {
		code, _, _ := strings.Cut(line, "//")
		if m := sinks.FindString(code); m != "" {
			t.Errorf("app.js:%d uses %s: %s", i+1, m, strings.TrimSpace(line))
		}
	}
}

// TestEmbeddedMatchesSource guards against a stale embed (the binary serves
// what is in static/).
func TestEmbeddedMatchesSource(t *testing.T) {
	h := console.Handler()
	err := fs.WalkDir(os.DirFS("static"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want, err := os.ReadFile("static/" + p)
		if err != nil {
			return err
		}
		path := "/admin/" + p
		if p == "index.html" {
			path = "/admin/"
		}
		got, _ := io.ReadAll(get(t, h, path).Body)
		if string(got) != string(want) {
			t.Errorf("%s differs from static/%s", path, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
