package supervise

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperEnv makes the test binary the harness of TestChildDiesWithItsParent.
const helperEnv = "TOKENBROKER_SUPERVISE_HELPER"

// TestMain lets the test binary, started again with helperEnv, be a harness
// that starts a child and then dies without stopping it.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		p := New("sleeper", func() *exec.Cmd { return exec.Command("sleep", "300") })
		if err := p.Start(5*time.Second, func(context.Context) error { return nil }); err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println(p.run.cmd.Process.Pid)
		os.Exit(1) // no Stop: as a test binary killed by -timeout
	}
	os.Exit(m.Run())
}

// TestChildDiesWithItsParent: a harness that dies abruptly must not leave
// its children running. Before DieWithParent, the sleeper outlived its
// harness (re-parented to init) until it ended on its own.
func TestChildDiesWithItsParent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	harness := exec.Command(self, "-test.run=^$")
	harness.Env = append(os.Environ(), helperEnv+"=1")
	out, _ := harness.Output() // it exits 1 on purpose
	line, _, _ := strings.Cut(string(out), "\n")
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("harness printed %q", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = exec.Command("kill", "-9", line).Run()
			t.Fatalf("child %d still runs 5 s after its harness died", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs: a zombie (killed, not yet reaped by
// whoever adopted it) does not. The state follows the command name, which
// /proc/PID/stat puts in parentheses.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(string(stat[i+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}
