//go:build measure

// The figures behind newTransport's MaxIdleConnsPerHost. Not part of the
// normal test run (it takes ~20 s and its numbers depend on the machine):
//
//	CONC=64 LAT=20ms go test -tags measure -cpu 2 -run TestMeasureIdlePool -v ./proxy/
//
// Client, proxy and a TLS vendor share the process and its 2 CPUs, so CPU per
// request includes all three; compare the rows, not the absolute values.
package proxy

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestMeasureIdlePool(t *testing.T) {
	conc, err := strconv.Atoi(os.Getenv("CONC"))
	if err != nil {
		t.Skip("set CONC (concurrent callers) and LAT (vendor latency)")
	}
	lat, _ := time.ParseDuration(os.Getenv("LAT"))
	var newConns atomic.Int64
	vendor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(lat)
		io.WriteString(w, `{"result":[]}`)
	}))
	vendor.Config.ErrorLog = log.New(io.Discard, "", 0)
	vendor.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	vendor.EnableHTTP2 = os.Getenv("H2") == "1"
	vendor.StartTLS()
	defer vendor.Close()
	for _, idle := range []int{2, 8, 16, 32, 64, 128} {
		tr := newTransport(nil)
		tr.TLSClientConfig = &tls.Config{RootCAs: vendor.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
		tr.MaxIdleConnsPerHost = idle
		vs := &vendorServer{Server: vendor}
		h := newHarness(t, vs, func(o *Options) { o.Transport = tr; o.Logger = nil })
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}}
		newConns.Store(0)
		var n atomic.Int64
		start, c0 := time.Now(), cpuTime()
		stop := start.Add(3 * time.Second)
		var wg sync.WaitGroup
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					req, _ := http.NewRequest("GET", h.server.URL+"/proxy/servicenow/api/now/table/incident", nil)
					req.Header.Set("Authorization", "Bearer acct:"+account)
					res, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		el, cpu := time.Since(start), cpuTime()-c0
		t.Logf("idle/host=%3d conc=%d lat=%v: %6.0f req/s, %6.0f new vendor conns/s, %5.0f µs CPU/req",
			idle, conc, lat, float64(n.Load())/el.Seconds(), float64(newConns.Load())/el.Seconds(),
			float64(cpu.Microseconds())/float64(n.Load()))
		tr.CloseIdleConnections()
		client.CloseIdleConnections()
		h.server.Close()
	}
}
