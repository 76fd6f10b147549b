package main

import "fmt"

func helper(listen string, verbose bool) string { return fmt.Sprint(listen, verbose) }
