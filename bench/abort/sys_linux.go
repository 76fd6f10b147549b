package main

import "syscall"

// sysProcAttr kills a child when the benchmark dies, so an interrupted run
// leaves no demo app or agent behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
