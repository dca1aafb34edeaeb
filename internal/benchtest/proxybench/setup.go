package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

// launch turns the command line and environment of a measured Go server
// (named bare, broker or baseline) into the one to start: as they are under
// wrk, under valgrind in the instructions mode. A nil env inherits the
// harness's.
type launch func(name, bin string, env, args []string) (string, []string, []string)

// direct starts a server as it is.
func direct(_, bin string, env, args []string) (string, []string, []string) { return bin, env, args }

// servers are the processes of one run, started and answering: the
// upstream, the bare proxy, nginx (wrk modes only), the broker, and the
// baseline broker when -baseline is set; pids are 0 for what did not start.
type servers struct {
	up, bareAddr, bareStats, ngx, api, metrics, baseAPI, baseMetrics string
	upstream, bare, nginx, broker, baseline                          int
	// brokerEnv and brokerLog start the broker again (the stored
	// connections measure restarts it).
	brokerEnv []string
	brokerLog *os.File
	secret    string
}

// startServers starts the servers in dir, the measured Go servers through
// wrap, nginx only when withNginx, and waits until every one answers.
func startServers(ctx context.Context, o options, p *procs, dir string, withNginx bool, wrap launch) (*servers, error) {
	addrs, err := supervise.FreeAddrs(8)
	if err != nil {
		return nil, err
	}
	s := &servers{up: addrs[0], bareAddr: addrs[1], bareStats: addrs[2], ngx: addrs[3], api: addrs[4], metrics: addrs[5],
		baseAPI: addrs[6], baseMetrics: addrs[7], secret: "proxybench-hs256-secret-0123456789abcdef"}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if s.upstream, err = p.start(ctx, self, nil, "upstream", "-addr", s.up, "-body", fmt.Sprint(o.body)); err != nil {
		return nil, err
	}
	bin, env, args := wrap("bare", self, nil, []string{"bare", "-addr", s.bareAddr, "-stats", s.bareStats, "-upstream", "http://" + s.up})
	if s.bare, err = p.start(ctx, bin, env, args...); err != nil {
		return nil, err
	}
	ready := []string{"http://" + s.up + "/", "http://" + s.bareAddr + "/", "http://" + s.metrics + "/readyz"}
	if withNginx {
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConf(dir, s.up, s.ngx)), 0o600); err != nil {
			return nil, err
		}
		if s.nginx, err = p.start(ctx, "nginx", nil, "-p", dir, "-e", "stderr", "-c", conf, "-g", "daemon off;"); err != nil {
			return nil, err
		}
		ready = append(ready, "http://"+s.ngx+"/")
	}
	// The request log goes to a file, as a log shipper would read it.
	startBroker := func(name, bin, api, metrics string) (int, []string, *os.File, error) {
		env := brokerEnv(o, s.up, api, metrics, s.secret, filepath.Join(dir, name+"-data"))
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return 0, nil, nil, err
		}
		p.closeAtStop(log)
		bin, env, args := wrap(name, bin, env, nil)
		pid, err := p.startLogged(ctx, log, bin, env, args...)
		return pid, env, log, err
	}
	if s.broker, s.brokerEnv, s.brokerLog, err = startBroker("broker", o.broker, s.api, s.metrics); err != nil {
		return nil, err
	}
	if o.baseline != "" {
		if s.baseline, _, _, err = startBroker("baseline", o.baseline, s.baseAPI, s.baseMetrics); err != nil {
			return nil, err
		}
		ready = append(ready, "http://"+s.baseMetrics+"/readyz")
	}
	for _, u := range ready {
		if err := waitOK(ctx, u); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// connect makes the brokers' ServiceNow connections to the upstream
// through the real OAuth routes, as the bench account's admin, and returns
// the JWT of a caller of that account, minted with the brokers' secret as
// `broker token` would.
func (s *servers) connect(ctx context.Context) (caller string, err error) {
	now := time.Now()
	admin, err := auth.Mint([]byte(s.secret), auth.Claims{Account: "bench", Subject: "admin@bench", Roles: []string{"admin"}}, 24*time.Hour, now)
	if err != nil {
		return "", err
	}
	if caller, err = auth.Mint([]byte(s.secret), auth.Claims{Account: "bench", Subject: "svc-reports"}, 24*time.Hour, now); err != nil {
		return "", err
	}
	if err := connect(ctx, "http://"+s.api, admin, "http://"+s.up); err != nil {
		return "", err
	}
	if s.baseline != 0 {
		if err := connect(ctx, "http://"+s.baseAPI, admin, "http://"+s.up); err != nil {
			return "", fmt.Errorf("baseline: %w", err)
		}
	}
	return caller, nil
}
