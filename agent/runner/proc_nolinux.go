//go:build unix && !linux

package runner

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
