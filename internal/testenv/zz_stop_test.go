package testenv_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

func TestStopLatency(t *testing.T) {
	s := testenv.StartVault(t)
	c := &http.Client{}
	answered := 0
	for i := 0; i < 200; i++ {
		s.Pause()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", s.Addr+"/v1/sys/health", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			answered++
		}
		cancel()
		s.Resume()
	}
	t.Logf("answered while paused: %d/200", answered)
}
