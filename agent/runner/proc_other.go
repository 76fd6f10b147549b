//go:build !unix

package runner

import (
	"os/exec"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

// signalGroup can only kill the process itself here.
func signalGroup(cmd *exec.Cmd, _ bool) { _ = cmd.Process.Kill() }
