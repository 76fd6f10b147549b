// Package cli implements the sluice command-line client of the Sluice API
// (RolloutService and FleetService over the Connect protocol).
//
// Main builds the command tree from a Config (standard streams, API base
// URL, actor, HTTP client) and runs it, returning the process exit code, so
// every command can be tested against an in-process server.
//
// Exit codes: 0 success; 1 a failed request (the server's error is printed as
// "error: <code>: <message>" followed by each field violation), an invalid
// spec file, or a watched rollout that ended Aborted or Failed; 2 a usage
// error (unknown command or flag, wrong number of arguments, a bad flag
// value); 130 interrupted (Ctrl-C).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1/fleetv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

// Exit codes returned by Main.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitInterrupted = 130
)

// DefaultAPIURL is the API address when neither --api nor SLUICE_API is set;
// it is sluice-api's default listen address.
const DefaultAPIURL = "http://127.0.0.1:8080"

// requestTimeout bounds each unary request; watch streams are unbounded.
const requestTimeout = 30 * time.Second

// Config is what the commands read and write. Zero fields get defaults.
type Config struct {
	// In is read by "rollout create -f -"; nil reads nothing.
	In io.Reader
	// Out receives results; Err receives errors. nil discards.
	Out, Err io.Writer
	// API is the default of --api; empty means DefaultAPIURL.
	API string
	// Actor is the default of --actor.
	Actor string
	// HTTPClient carries the requests; nil means a plain http.Client.
	HTTPClient connect.HTTPClient
	// Terminal reports whether Out is a terminal, and its width in columns
	// (0 when unknown). nil means Out is not a terminal.
	Terminal func() (width int, ok bool)
	// Now is the clock for relative times; nil means time.Now.
	Now func() time.Time
}

// DefaultAPI returns $SLUICE_API, or DefaultAPIURL when it is empty.
func DefaultAPI(getenv func(string) string) string {
	if v := getenv("SLUICE_API"); v != "" {
		return v
	}
	return DefaultAPIURL
}

// DefaultActor returns $SLUICE_ACTOR, or $USER@hostname.
func DefaultActor(getenv func(string) string, hostname func() (string, error)) string {
	if v := getenv("SLUICE_ACTOR"); v != "" {
		return v
	}
	user := getenv("USER")
	if user == "" {
		user = getenv("LOGNAME")
	}
	if user == "" {
		user = "unknown"
	}
	host, err := hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return user + "@" + host
}

// app is the state shared by the commands of one run.
type app struct {
	cfg    Config
	api    string
	actor  string
	output string
}

func (a *app) now() time.Time {
	if a.cfg.Now != nil {
		return a.cfg.Now()
	}
	return time.Now()
}

func (a *app) rollouts() rolloutv1connect.RolloutServiceClient {
	return rolloutv1connect.NewRolloutServiceClient(a.cfg.HTTPClient, a.api)
}

func (a *app) fleet() fleetv1connect.FleetServiceClient {
	return fleetv1connect.NewFleetServiceClient(a.cfg.HTTPClient, a.api)
}

// Main runs the command line args (without the program name) and returns
// the exit code. ctx ends the run early (Ctrl-C), with ExitInterrupted.
func Main(ctx context.Context, cfg Config, args []string) int {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Err == nil {
		cfg.Err = io.Discard
	}
	if cfg.In == nil {
		cfg.In = strings.NewReader("")
	}
	if cfg.API == "" {
		cfg.API = DefaultAPIURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	a := &app{cfg: cfg}
	root := a.rootCommand()
	if args == nil {
		args = []string{} // cobra would read os.Args for nil
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var re *runError
	if !errors.As(err, &re) {
		// Anything cobra itself refused is a usage error.
		return a.usage(cmd, err)
	}
	err = re.err
	var ue *usageError
	var ee *exitError
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(cfg.Err, "interrupted")
		return ExitInterrupted
	case errors.As(err, &ue):
		return a.usage(cmd, ue.err)
	case errors.As(err, &ee):
		return ee.code
	}
	printError(cfg.Err, err)
	return ExitFailure
}

func (a *app) usage(cmd *cobra.Command, err error) int {
	fmt.Fprintf(a.cfg.Err, "error: %v\n", err)
	if cmd != nil {
		fmt.Fprintf(a.cfg.Err, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return ExitUsage
}

// printError prints err; a Connect error as "error: <code>: <message>" and
// then each google.rpc.BadRequest field violation on its own line.
func printError(w io.Writer, err error) {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		fmt.Fprintf(w, "error: %v\n", err)
		return
	}
	fmt.Fprintf(w, "error: %s: %s\n", cerr.Code(), cerr.Message())
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		br, ok := v.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, fv := range br.GetFieldViolations() {
			fmt.Fprintf(w, "  %s: %s\n", fv.GetField(), fv.GetDescription())
		}
	}
}

// runError marks an error returned by a command's RunE, as opposed to one
// cobra raised while parsing the command line.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// usageError is a bad command line found by a command itself: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitError ends the run with code after the command reported the outcome
// itself (a watched rollout that was aborted).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Steer progressive rollouts through the Sluice API",
		Long: `sluice creates, watches and steers rollouts, and shows the agents that carry
them out, through the Sluice API (sluice-api).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.checkGlobals()
		},
	}
	root.SetIn(a.cfg.In)
	root.SetOut(a.cfg.Out)
	root.SetErr(a.cfg.Err)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return err })
	root.CompletionOptions.DisableDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVar(&a.api, "api", a.cfg.API, "API base URL (env SLUICE_API)")
	pf.StringVar(&a.actor, "actor", a.cfg.Actor, "who is acting, sent as actor and created_by (env SLUICE_ACTOR)")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format of results: table, json or yaml")

	root.AddCommand(a.rolloutCommand(), a.agentsCommand(), a.flagsCommand(), a.artifactCommand())
	wrapRun(root)
	return root
}

func (a *app) checkGlobals() error {
	switch a.output {
	case outputTable, outputJSON, outputYAML:
	default:
		return fmt.Errorf("invalid -o %q: want table, json or yaml", a.output)
	}
	u, err := url.Parse(a.api)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("invalid --api %q: want a URL such as %s", a.api, DefaultAPIURL)
	}
	a.api = strings.TrimRight(a.api, "/")
	return nil
}

// group returns a command that only holds subcommands: alone it prints its
// help; with an argument that names no subcommand it is a usage error.
func group(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
}

// wrapRun marks every error a command returns, so Main tells them from
// command-line errors cobra raises.
func wrapRun(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				return &runError{err: err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapRun(sub)
	}
}

// exactArgs is cobra.ExactArgs naming the missing arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("%s takes %d argument(s): %s; got %d", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments; got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// unary bounds one request.
func unary(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, requestTimeout)
}

// readSpecFile reads path, or the command's stdin for "-".
func readSpecFile(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return nil, fmt.Errorf("read spec from stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	return b, nil
}
