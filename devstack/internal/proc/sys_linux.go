package proc

import "syscall"

// sysProcAttr kills the child when the process that started it dies, so that a test binary
// killed by a timeout does not leave servers running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
