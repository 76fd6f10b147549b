//go:build !linux

package main

import "time"

func threadCPUTime() (time.Duration, bool) { return 0, false }
func processCPUTime() time.Duration        { return 0 }
func cpuModel() string                     { return "?" }
func memTotal() string                     { return "?" }
func loadAverage() string                  { return "?" }
