package supervise

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes the kernel kill cmd's process (SIGKILL) when the
// process that started it dies, however it dies. Without it, a test binary
// killed by go test's -timeout, or a benchmark interrupted mid-run, left its
// redis-server, Vault, broker and upstream processes running
// (TestChildDiesWithItsParent). Linux ties the signal to the thread that
// started the child; Go does not end its threads unless a goroutine exits
// while locked to one, which nothing that starts processes here does.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
