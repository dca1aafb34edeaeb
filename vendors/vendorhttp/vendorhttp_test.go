package vendorhttp

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestVendorAnswersAreBounded: an answer over MaxAnswer fails with
// ErrAnswerTooLarge, at once when its Content-Length says so and after
// MaxAnswer bytes when it is chunked; one of exactly MaxAnswer bytes passes.
func TestVendorAnswersAreBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := map[string]int{"/exact": MaxAnswer, "/over": MaxAnswer + 1, "/chunked-over": 3 * MaxAnswer}[r.URL.Path]
		if strings.HasPrefix(r.URL.Path, "/chunked") {
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
		_, _ = io.WriteString(w, strings.Repeat("x", n))
	}))
	defer srv.Close()
	hc := NoRedirects(srv.Client())
	if again := NoRedirects(hc); again.Transport != hc.Transport {
		t.Errorf("NoRedirects wraps its own client's transport a second time")
	}
	for path, wantErr := range map[string]bool{"/exact": false, "/over": true, "/chunked-over": true} {
		res, err := hc.Get(srv.URL + path)
		var n int64
		if err == nil {
			n, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		if wantErr != errors.Is(err, ErrAnswerTooLarge) {
			t.Errorf("%s: read %d bytes, error %v; want ErrAnswerTooLarge: %v", path, n, err, wantErr)
		}
		if n > MaxAnswer {
			t.Errorf("%s: read %d bytes, more than MaxAnswer", path, n)
		}
	}
}
