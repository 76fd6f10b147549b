//go:build !linux

package eval_test

import "time"

// threadCPUTime is only implemented on Linux.
func threadCPUTime() (time.Duration, bool) { return 0, false }
