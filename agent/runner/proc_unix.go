//go:build unix

package runner

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts each instance in a process group of its own, so
// stopping it reaches whatever it started, and (on Linux) asks the kernel
// to stop it when the agent dies.
func sysProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(a)
	return a
}

// signalGroup sends SIGTERM (or SIGKILL) to the instance's process group.
func signalGroup(cmd *exec.Cmd, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
		_ = cmd.Process.Signal(sig)
	}
}
