// Package benchtest holds the whole-system benchmarks behind `make bench`:
// the broker and the vendor simulator over real HTTP, on the store chosen by
// TOKENBROKER_TEST_STORE (make bench uses production: Vault and Redis).
package benchtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const acme = "acme-corp"

// percentiles reports p50 and p99 of the latencies as custom metrics.
func percentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	at := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// BenchmarkStatus10kUsers: the status answer for an account with 10,000
// user-level connections (the contract's target is p99 <= 5 ms on Redis).
func BenchmarkStatus10kUsers(b *testing.B) {
	e := testenv.StartBroker(b)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	app, err := e.App.Lifecycle().Store().GetConnection(context.Background(), broker.Key{Account: acme, Vendor: "servicenow"})
	if err != nil {
		b.Fatal(err)
	}
	// Written through the store (Vault, then the Redis index), as callbacks
	// would write them, by 8 writers.
	const users = 10000
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				c := app
				c.Key.UserID = fmt.Sprintf("user-%05d", i)
				c.Version = 0
				c.RefreshTokenExpired = i%10 == 0
				if _, err := e.App.Lifecycle().Store().PutConnection(context.Background(), c); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range users {
		next <- i
	}
	close(next)
	wg.Wait()
	path := "/v1/account/integrations?includeUserLevelConnectionData=true"
	if r := e.Get(path, admin); !strings.Contains(string(r.Body), `"connectionDetails":{"total":10000,"connected":9000}`) {
		b.Fatalf("status: %d %s", r.Status, r.Body)
	}
	client := &http.Client{}
	var lat []time.Duration
	for b.Loop() {
		req, _ := http.NewRequest("GET", e.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
	}
	percentiles(b, lat)
}

// BenchmarkProxy measures the same vendor call made directly (with the token
// in hand, as a service would without a broker) and through the broker, by
// 16 concurrent clients.
func BenchmarkProxy(b *testing.B) {
	e := testenv.StartBroker(b)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	conn, err := e.App.Lifecycle().Store().GetConnection(context.Background(), broker.Key{Account: acme, Vendor: "servicenow"})
	if err != nil {
		b.Fatal(err)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: transport}
	run := func(b *testing.B, url, token string) {
		var mu sync.Mutex
		var lat []time.Duration
		b.SetParallelism(8) // 16 clients on 2 cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
		percentiles(b, lat)
	}
	const path = "/api/now/table/incident?sysparm_limit=1"
	b.Run("direct", func(b *testing.B) { run(b, e.Sim.ServiceNowURL("acme")+path, conn.Tokens.AccessToken) })
	b.Run("broker", func(b *testing.B) { run(b, e.URL+"/proxy/servicenow"+path, admin) })
}
