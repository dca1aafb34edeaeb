package app_test

import (
	"net/http"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestPprofOffByDefault: profiles show code paths and timings, so the
// metrics listener serves them only when BROKER_PPROF asks for it.
func TestPprofOffByDefault(t *testing.T) {
	e := testenv.StartBroker(t)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
		if r := e.Do(http.MethodGet, "http://"+e.App.MetricsAddr()+path, "", nil); r.Status != http.StatusNotFound {
			t.Errorf("GET %s without BROKER_PPROF: %d, want 404", path, r.Status)
		}
	}
}

func TestPprofWhenEnabled(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_PPROF", "true"))
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
		if r := e.Do(http.MethodGet, "http://"+e.App.MetricsAddr()+path, "", nil); r.Status != http.StatusOK {
			t.Errorf("GET %s with BROKER_PPROF=true: %d, want 200", path, r.Status)
		}
	}
	// The API listener never serves profiles, whatever the setting.
	if r := e.Do(http.MethodGet, "http://"+e.App.Addr()+"/debug/pprof/", "", nil); r.Status == http.StatusOK {
		t.Errorf("GET /debug/pprof/ on the API listener: %d", r.Status)
	}
}
