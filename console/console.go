// Package console serves tokenbroker's built-in admin console at /admin/:
// three static files embedded in the binary (index.html, app.js, app.css),
// no build step and no framework. The page holds no credential of its own:
// the person pastes an admin JWT (or the demo hands one over in the URL
// fragment) and the script calls the documented API with it, exactly as any
// other admin UI would (docs/openapi.yaml).
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var files embed.FS

// CSP allows the console's own script, style and API calls, nothing else:
// no inline script or style, no framing, no form posts, no <base>.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves the console. It is mounted at /admin/*file and expects the
// request path to start with /admin/; every answer, 404s included, carries
// the security headers.
func Handler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the folder
	}
	etags := map[string]string{}
	_ = fs.WalkDir(static, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags[p] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return nil
	})
	fileServer := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")

		// Only the embedded names are served, looked up exactly: no path
		// cleaning, no directory listing, nothing outside static/.
		name, ok := strings.CutPrefix(r.URL.Path, "/admin/")
		if r.URL.Path == "/admin" {
			name, ok = "", true
		}
		if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		if name == "" || name == "index.html" {
			// The page itself is never cached: it may carry the callback's
			// result in its URL, and a new release must load new scripts.
			h.Set("Cache-Control", "no-store")
			serve(w, r, fileServer, "/", etags["index.html"])
			return
		}
		tag, known := etags[name]
		if !known {
			http.NotFound(w, r)
			return
		}
		// Not fingerprinted: revalidate every time (cheap, with the ETag).
		h.Set("Cache-Control", "no-cache")
		serve(w, r, fileServer, "/"+name, tag)
	})
}

// serve hands the request to the file server for the named file; the ETag
// set here is what http.ServeContent compares If-None-Match against.
func serve(w http.ResponseWriter, r *http.Request, fileServer http.Handler, name, etag string) {
	w.Header().Set("ETag", etag)
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = name, ""
	fileServer.ServeHTTP(w, r2)
}
