//go:build !linux

package metadataclient_test

import "os/exec"

// setDeathSignal has no portable equivalent outside Linux; t.Cleanup still kills the server.
func setDeathSignal(cmd *exec.Cmd) {}
