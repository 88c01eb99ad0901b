//go:build linux

package metadataclient_test

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill the server when the test process dies (a test timeout
// panics without running cleanups), so no server outlives `go test`.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
