package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

// brokerReadyTimeout bounds the wait for a broker process's /readyz.
const brokerReadyTimeout = 30 * time.Second

// BuildBroker compiles cmd/broker into dir and returns the binary's path;
// call it once per test binary (from TestMain), since it takes seconds.
func BuildBroker(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "broker")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/broker")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/broker: %v: %s", err, out.String())
	}
	return bin, nil
}

// BrokerProcess is a broker binary running as its own process under the
// harness's supervisor: Kill is a crash, Signal(SIGTERM) then Wait a
// graceful shutdown.
type BrokerProcess struct {
	URL, MetricsURL string   // http://host:port of the API and of the metrics listener
	Env             []string // the whole environment it runs with, e.g. for `broker reindex`
	*supervise.Process
}

// StartBrokerProcess runs bin with the test's environment plus env, and
// waits until its /readyz answers 200. Without BROKER_LISTEN_ADDR in env it
// listens on free addresses, with the matching BROKER_PUBLIC_URL. The process
// is killed when t ends.
func StartBrokerProcess(t testing.TB, bin string, env map[string]string) *BrokerProcess {
	t.Helper()
	vars := os.Environ()
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	api, ops := env["BROKER_LISTEN_ADDR"], env["BROKER_METRICS_ADDR"]
	if api == "" || api == "127.0.0.1:0" {
		addrs := FreeAddrs(t, 2)
		api, ops = addrs[0], addrs[1]
		vars = append(vars, "BROKER_LISTEN_ADDR="+api, "BROKER_METRICS_ADDR="+ops, "BROKER_PUBLIC_URL=http://"+api)
	}
	b := &BrokerProcess{URL: "http://" + api, MetricsURL: "http://" + ops, Env: vars}
	b.Process = supervise.New("broker "+api, func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = vars
		return cmd
	})
	t.Cleanup(b.Kill)
	err := b.Start(brokerReadyTimeout, supervise.HTTPReady(b.MetricsURL+"/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Restart starts a stopped or killed process again with the same command,
// environment and addresses, and waits for its /readyz as StartBrokerProcess
// does. It does nothing while the process runs.
func (b *BrokerProcess) Restart() error {
	return b.Start(brokerReadyTimeout, supervise.HTTPReady(b.MetricsURL+"/readyz"))
}

// MainWithBroker is a TestMain for packages whose tests run broker
// processes: it builds cmd/broker once into a temporary directory, sets
// *bin to its path, runs the tests and removes the directory. Pass its
// result to os.Exit.
func MainWithBroker(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "tokenbroker-broker-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildBroker(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
