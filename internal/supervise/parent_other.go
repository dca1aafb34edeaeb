//go:build !linux

package supervise

import "os/exec"

// DieWithParent does nothing where the kernel has no parent-death signal:
// children of a harness that dies abruptly are left running there.
func DieWithParent(*exec.Cmd) {}
