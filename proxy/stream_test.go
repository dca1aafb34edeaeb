package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

const (
	streamSize = 64 << 20
	// signalAt: the other end must have seen this much before the sender
	// writes more. A buffering proxy would wait for the whole body and
	// deadlock here, which the timeouts turn into a failure.
	signalAt = 1 << 20
	// maxAlloc bounds what the whole process (client, proxy and vendor)
	// allocates while moving streamSize bytes: far below one copy of the body.
	maxAlloc = 16 << 20
	waitFor  = 20 * time.Second
)

// pattern yields n position-dependent bytes; after signalAt bytes it waits
// for gate (when not nil) before producing more.
type pattern struct {
	n, off int
	gate   <-chan struct{}
	block  []byte
}

func newPattern(n int, gate <-chan struct{}) *pattern {
	b := make([]byte, 32<<10+251)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return &pattern{n: n, gate: gate, block: b}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if p.gate != nil && p.off >= signalAt {
		select {
		case <-p.gate:
			p.gate = nil
		case <-time.After(waitFor):
			return 0, errors.New("the other end never saw the first MiB: the proxy is buffering")
		}
	}
	limit := p.n - p.off
	if p.gate != nil {
		limit = min(limit, signalAt-p.off)
	}
	k := min(len(b), limit, 32<<10)
	copy(b[:k], p.block[p.off%251:])
	p.off += k
	return k, nil
}

func patternCRC(n int) uint32 {
	h := crc32.NewIEEE()
	io.Copy(h, newPattern(n, nil))
	return h.Sum32()
}

// counter reads r to the end, closing at once when it has seen signalAt bytes.
func counter(r io.Reader, at chan<- struct{}) (int, uint32, error) {
	h := crc32.NewIEEE()
	buf := make([]byte, 32<<10)
	n := 0
	for {
		k, err := r.Read(buf)
		h.Write(buf[:k])
		if n < signalAt && n+k >= signalAt && at != nil {
			close(at)
		}
		n += k
		if err == io.EOF {
			return n, h.Sum32(), nil
		}
		if err != nil {
			return n, h.Sum32(), err
		}
	}
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func TestStreamingUpload(t *testing.T) {
	want := patternCRC(streamSize)
	for _, knownLength := range []bool{true, false} {
		t.Run("known length "+strconv.FormatBool(knownLength), func(t *testing.T) {
			got1MiB := make(chan struct{})
			vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, sum, err := counter(r.Body, got1MiB)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%d %d", n, sum)
			}))
			defer vendor.Close()
			h := newHarness(t, &vendorServer{Server: vendor}, nil)

			before := totalAlloc()
			req, _ := http.NewRequest(http.MethodPut, h.server.URL+"/proxy/servicenow/api/now/attachment/file", newPattern(streamSize, got1MiB))
			if knownLength {
				req.ContentLength = streamSize
			}
			req.Header.Set("Authorization", "Bearer acct:"+account)
			res, err := h.server.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, res.Body)
			res.Body.Close()
			grew := totalAlloc() - before
			if res.StatusCode != http.StatusOK || body != fmt.Sprintf("%d %d", streamSize, want) {
				t.Fatalf("answer = %d %q", res.StatusCode, body)
			}
			if grew > maxAlloc {
				t.Errorf("moving %d MiB allocated %d MiB", streamSize>>20, grew>>20)
			}
			t.Logf("allocated %d KiB to move %d MiB", grew>>10, streamSize>>20)
		})
	}
}

func TestStreamingDownload(t *testing.T) {
	want := patternCRC(streamSize)
	for _, knownLength := range []bool{true, false} {
		t.Run("known length "+strconv.FormatBool(knownLength), func(t *testing.T) {
			client1MiB := make(chan struct{})
			vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if knownLength {
					w.Header().Set("Content-Length", strconv.Itoa(streamSize))
				}
				w.Header().Set("Content-Type", "application/octet-stream")
				src := newPattern(streamSize, client1MiB)
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if _, werr := w.Write(buf[:n]); werr != nil {
						return
					}
					if src.off == signalAt {
						// Push the first MiB out; the proxy must pass it on unasked.
						w.(http.Flusher).Flush()
					}
					if err != nil {
						return
					}
				}
			}))
			defer vendor.Close()
			h := newHarness(t, &vendorServer{Server: vendor}, nil)

			before := totalAlloc()
			res := h.do(t, http.MethodGet, "/proxy/servicenow/api/now/attachment/1/file", nil, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			if knownLength && res.ContentLength != streamSize {
				t.Errorf("Content-Length = %d", res.ContentLength)
			}
			n, sum, err := counter(res.Body, client1MiB)
			grew := totalAlloc() - before
			if err != nil || n != streamSize || sum != want {
				t.Fatalf("read %d bytes (crc %d, want %d): %v", n, sum, want, err)
			}
			if grew > maxAlloc {
				t.Errorf("moving %d MiB allocated %d MiB", streamSize>>20, grew>>20)
			}
			t.Logf("allocated %d KiB to move %d MiB", grew>>10, streamSize>>20)
		})
	}
}

// TestClientAbortMidStream: the caller hangs up during an endless download.
// The proxy must stop reading from the vendor, and the server must go on.
func TestClientAbortMidStream(t *testing.T) {
	vendorDone := make(chan struct{})
	var once sync.Once
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/endless") {
			io.WriteString(w, "fine")
			return
		}
		defer once.Do(func() { close(vendorDone) })
		buf := make([]byte, 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	h := newHarness(t, vendor, nil)

	res := h.do(t, http.MethodGet, "/proxy/servicenow/endless", nil, nil)
	if _, err := io.CopyN(io.Discard, res.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	res.Body.Close() // unread body: the client's Transport closes the connection
	select {
	case <-vendorDone:
	case <-time.After(waitFor):
		t.Fatal("the vendor is still streaming to a caller that left")
	}
	res = h.do(t, http.MethodGet, "/proxy/servicenow/after", nil, nil)
	if body := readAll(t, res.Body); res.StatusCode != 200 || body != "fine" {
		t.Errorf("after the abort: %d %q", res.StatusCode, body)
	}
	if strings.Contains(h.logs.String(), "handler panicked") {
		t.Errorf("the abort was treated as a crash:\n%s", h.logs.String())
	}
}

// TestVendorAbortMidStream: the vendor dies in the middle of an unknown-length
// answer. The caller must see a broken answer, not a short one that ends
// cleanly, which is what gin.Recovery would make of it.
func TestVendorAbortMidStream(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 256<<10))
		w.(http.Flusher).Flush()
		conn, bufrw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		bufrw.Flush()
		conn.Close()
	})
	h := newHarness(t, vendor, nil)
	res := h.do(t, http.MethodGet, "/proxy/servicenow/api/now/attachment/1/file", nil, nil)
	if res.StatusCode != http.StatusOK || res.ContentLength != -1 {
		t.Fatalf("status %d, length %d", res.StatusCode, res.ContentLength)
	}
	n, err := io.Copy(io.Discard, res.Body)
	if err == nil {
		t.Fatalf("a broken answer of %d bytes ended cleanly", n)
	}
	if got := testutil.ToFloat64(h.proxy.vendors["servicenow"].m.upstream[reasonConnection]); got != 1 {
		t.Errorf("upstream_errors_total{reason=connection} = %v, want 1 broken answer", got)
	}
}

func TestRecovery(t *testing.T) {
	logs := &supervise.LogBuffer{}
	r := gin.New()
	r.Use(Recovery(slog.New(slog.NewTextHandler(logs, nil))))
	r.GET("/panic", func(c *gin.Context) { panic("refresh failed for token " + oldToken) })
	r.GET("/panic-after-write", func(c *gin.Context) {
		c.Writer.WriteHeader(http.StatusOK)
		c.Writer.Write([]byte("partial"))
		c.Writer.Flush()
		panic(errors.New("late " + oldToken))
	})
	r.GET("/abort", func(c *gin.Context) { panic(http.ErrAbortHandler) })
	srv := httptest.NewServer(r)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/panic")
	if err != nil {
		t.Fatal(err)
	}
	wantBrokerError(t, res, http.StatusInternalServerError, "internal")
	res.Body.Close()

	res, err = http.Get(srv.URL + "/panic-after-write")
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Errorf("a panic after the answer started gave a clean answer")
	}

	// ErrAbortHandler reaches net/http, which drops the connection without an answer.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		t.Errorf("ErrAbortHandler was answered with %d", res.StatusCode)
	}

	if s := logs.String(); strings.Contains(s, oldToken) || !strings.Contains(s, "handler panicked") {
		t.Errorf("log leaks the panic value or misses the panic:\n%s", s)
	}
}
