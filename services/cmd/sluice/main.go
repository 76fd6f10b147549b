// Command sluice is the command-line client of the Sluice API: create,
// watch and steer rollouts, and list agents. See docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/sluicehq/sluice/services/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.Config{
		In:    os.Stdin,
		Out:   os.Stdout,
		Err:   os.Stderr,
		API:   cli.DefaultAPI(os.Getenv),
		Actor: cli.DefaultActor(os.Getenv, os.Hostname),
		Terminal: func() (int, bool) {
			fd := int(os.Stdout.Fd())
			if !term.IsTerminal(fd) {
				return 0, false
			}
			w, _, err := term.GetSize(fd)
			if err != nil {
				return 0, true
			}
			return w, true
		},
	}, os.Args[1:])
	stop()
	os.Exit(code)
}
