package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
)

// defaultFlagEnv is the environment of "sluice flags" when neither --env
// nor SLUICE_ENV names one.
const defaultFlagEnv = "dev"

func (a *app) flagClient() flagv1connect.FlagServiceClient {
	return flagv1connect.NewFlagServiceClient(a.cfg.HTTPClient, a.api)
}

// flagsCmd holds the state of the "flags" commands.
type flagsCmd struct {
	*app
	env string
}

func (a *app) flagsCommand() *cobra.Command {
	f := &flagsCmd{app: a}
	c := group("flags", "Create, change, kill and audit feature flags (flagd's format)")
	c.Aliases = []string{"flag"}
	c.Long = `Feature flags in flagd's flag-definition format, one namespace per
environment. Every change names its actor (--actor) and is recorded with the
JSON before and after (sluice flags history).

Flag files are flagd's: a single flag object, or a whole flagd file
({"flags": {...}, "$evaluators": {...}}) in JSON or YAML.`
	def := os.Getenv("SLUICE_ENV")
	if def == "" {
		def = defaultFlagEnv
	}
	c.PersistentFlags().StringVar(&f.env, "env", def, "environment (env SLUICE_ENV)")
	c.AddCommand(f.envCommand(), f.createCommand(), f.updateCommand(), f.getCommand(), f.listCommand(),
		f.deleteCommand(), f.historyCommand(), f.killCommand(), f.evaluatorsCommand())
	return c
}

func (f *flagsCmd) envCommand() *cobra.Command {
	c := group("env", "Create and list environments")
	c.Aliases = []string{"envs", "environments"}
	var description string
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create an environment (idempotent)",
		Example: `  sluice flags env create prod --description "production"`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: args[0], Description: description, Actor: f.actor}))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				if resp.Msg.GetCreated() {
					_, err := fmt.Fprintf(w, "created: environment %s\n", args[0])
					return err
				}
				_, err := fmt.Fprintf(w, "unchanged: environment %s exists\n", args[0])
				return err
			})
		},
	}
	create.Flags().StringVar(&description, "description", "", "what the environment is for")
	list := &cobra.Command{
		Use:   "list",
		Short: "List environments",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().ListEnvironments(ctx, connect.NewRequest(&flagv1.ListEnvironmentsRequest{}))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				tw := newKV(w)
				fmt.Fprintln(tw, "NAME\tCREATED BY\tCREATED\tDESCRIPTION")
				for _, e := range resp.Msg.GetEnvironments() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.GetName(), orDash(e.GetCreatedBy()), f.timeText(e.GetCreatedAt()), orDash(e.GetDescription()))
				}
				return tw.Flush()
			})
		},
	}
	c.AddCommand(create, list)
	return c
}

// flagInput is one flag read from a file.
type flagInput struct {
	key string
	def []byte
}

// flagFile is a flag file: a flagd document (flags and maybe evaluators),
// or one flag object.
type flagFile struct {
	doc        bool
	flags      []flagInput // ordered by key
	evaluators []byte      // the document's $evaluators, nil when absent
}

// parseFlagFile reads a flagd document or a single flag object, in JSON
// or YAML. Each flag's JSON is kept as written in the file.
func parseFlagFile(data []byte) (flagFile, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] != '{' {
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return flagFile{}, fmt.Errorf("neither a JSON object nor YAML: %w", err)
		}
		trimmed = j
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &top); err != nil {
		return flagFile{}, fmt.Errorf("want a JSON object (a flag, or a flagd file with \"flags\"): %w", err)
	}
	raw, isDoc := top["flags"]
	if !isDoc {
		in := flagInput{def: trimmed}
		if k, ok := top["key"]; ok {
			_ = json.Unmarshal(k, &in.key)
		}
		return flagFile{flags: []flagInput{in}}, nil
	}
	ff := flagFile{doc: true, evaluators: top["$evaluators"]}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return flagFile{}, fmt.Errorf("flags: %w", err)
		}
		for k, v := range m {
			ff.flags = append(ff.flags, flagInput{key: k, def: v})
		}
	case len(raw) > 0 && raw[0] == '[':
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return flagFile{}, fmt.Errorf("flags: %w", err)
		}
		for i, v := range list {
			var members map[string]json.RawMessage
			var key string
			if json.Unmarshal(v, &members) != nil || json.Unmarshal(members["key"], &key) != nil || key == "" {
				return flagFile{}, fmt.Errorf("flags[%d]: a flag in a flags array needs a string key", i)
			}
			ff.flags = append(ff.flags, flagInput{key: key, def: withoutMember(v, "key")})
		}
	default:
		return flagFile{}, errors.New(`"flags" must be an object keyed by flag key, or an array of flags`)
	}
	sort.Slice(ff.flags, func(i, j int) bool { return ff.flags[i].key < ff.flags[j].key })
	return ff, nil
}

// withoutMember drops a member from a JSON object, keeping the others'
// values as written (the "key" of flagd's array form addresses the flag; it
// is not part of its definition).
func withoutMember(obj json.RawMessage, name string) []byte {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		return obj
	}
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return obj
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return obj
		}
		if kt.(string) == name {
			continue
		}
		if n > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(kt)
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
		n++
	}
	b.WriteByte('}')
	return b.Bytes()
}

// pick chooses the one flag a create or update without --all writes.
func (ff flagFile) pick(key, file string) (flagInput, error) {
	if !ff.doc {
		in := ff.flags[0]
		if key != "" {
			in.key = key
		}
		if in.key == "" {
			return flagInput{}, usagef("%s holds one flag object without a key: give the KEY argument", file)
		}
		return in, nil
	}
	if key != "" {
		for _, in := range ff.flags {
			if in.key == key {
				return in, nil
			}
		}
		return flagInput{}, usagef("%s has no flag %q", file, key)
	}
	if len(ff.flags) != 1 {
		return flagInput{}, usagef("%s holds %d flags: name one as KEY, or import them all with --all", file, len(ff.flags))
	}
	return ff.flags[0], nil
}

func (f *flagsCmd) readFlagFile(cmd *cobra.Command, file string) (flagFile, error) {
	if file == "" {
		return flagFile{}, usagef("-f is required: a flag file, or - for stdin")
	}
	data, err := readSpecFile(cmd, file)
	if err != nil {
		return flagFile{}, err
	}
	ff, err := parseFlagFile(data)
	if err != nil {
		return flagFile{}, fmt.Errorf("%s: %w", specName(file), err)
	}
	return ff, nil
}

func (f *flagsCmd) createCommand() *cobra.Command {
	return f.writeCommand(false)
}

func (f *flagsCmd) updateCommand() *cobra.Command {
	return f.writeCommand(true)
}

// writeCommand builds "create" and "update", which differ in the RPC and
// in what --all does with flags that (do not) exist.
func (f *flagsCmd) writeCommand(update bool) *cobra.Command {
	var (
		file     string
		all      bool
		revision uint64
	)
	c := &cobra.Command{
		Use:   "create [KEY] -f FLAG.json",
		Short: "Create a flag from a flag file (-f - reads stdin)",
		Long: `Create a flag. The file holds one flag object (its key is KEY, or the
object's "key"), or a flagd file: then KEY picks one of its flags, or --all
imports every flag, after merging the file's $evaluators into the
environment's. With --all each flag is reported and the command fails if any
was refused.`,
		Example: `  sluice flags create new-checkout -f new-checkout.json --env prod
  sluice flags create -f flags.flagd.json --all --env staging`,
		Args: cobra.MaximumNArgs(1),
	}
	if update {
		c.Use = "update [KEY] -f FLAG.json"
		c.Short = "Replace a flag's definition from a flag file (-f - reads stdin)"
		c.Long = `Replace a flag's definition; with --revision only if the flag is still at
that revision (its revision is in "sluice flags get"). The file is as for
create. With --all every flag of a flagd file is written: updated when it
exists, created when it does not, so importing a file again brings the
environment to the file's content.`
		c.Example = `  sluice flags get new-checkout --definition > f.json   # edit f.json
  sluice flags update new-checkout -f f.json --revision 12
  sluice flags update -f flags.flagd.json --all --env staging`
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		key := ""
		if len(args) == 1 {
			key = args[0]
		}
		ff, err := f.readFlagFile(cmd, file)
		if err != nil {
			return err
		}
		if all {
			if key != "" || revision != 0 {
				return usagef("--all writes every flag of the file: it takes no KEY and no --revision")
			}
			if !ff.doc {
				return usagef("--all needs a flagd file with \"flags\"")
			}
			return f.importAll(cmd, ff, update)
		}
		in, err := ff.pick(key, specName(file))
		if err != nil {
			return err
		}
		if ff.evaluators != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "note: the file's $evaluators are not written; use --all, or sluice flags evaluators set")
		}
		ctx, cancel := unary(cmd.Context())
		defer cancel()
		if !update {
			resp, err := f.flagClient().CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{
				Environment: f.env, Key: in.key, Definition: string(in.def), Actor: f.actor}))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "created: flag %s in %s (revision %d)\n", in.key, f.env, resp.Msg.GetFlag().GetRevision())
				return err
			})
		}
		req := &flagv1.UpdateFlagRequest{Environment: f.env, Key: in.key, Definition: string(in.def), Actor: f.actor}
		if revision != 0 {
			req.ExpectedRevision = &revision
		}
		resp, err := f.flagClient().UpdateFlag(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
			what := "updated"
			if !resp.Msg.GetChanged() {
				what = "unchanged"
			}
			_, err := fmt.Fprintf(w, "%s: flag %s in %s (revision %d)\n", what, in.key, f.env, resp.Msg.GetFlag().GetRevision())
			return err
		})
	}
	fl := c.Flags()
	fl.StringVarP(&file, "filename", "f", "", "flag file (a flag, or a flagd file), or - for stdin")
	fl.BoolVar(&all, "all", false, "write every flag of a flagd file (and merge its $evaluators)")
	if update {
		fl.Uint64Var(&revision, "revision", 0, "update only if the flag is at this revision")
	}
	return c
}

// importAll writes every flag of a flagd file, after merging its
// evaluators into the environment's, reporting each; it fails at the end
// if any write was refused.
func (f *flagsCmd) importAll(cmd *cobra.Command, ff flagFile, upsert bool) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	client := f.flagClient()
	// Read the evaluators first: it also checks that the environment exists,
	// so a NotFound below is about a flag.
	ctx, cancel := unary(cmd.Context())
	cur, err := client.GetEvaluators(ctx, connect.NewRequest(&flagv1.GetEvaluatorsRequest{Environment: f.env}))
	cancel()
	if err != nil {
		return err
	}
	if ff.evaluators != nil {
		if err := f.mergeEvaluators(cmd.Context(), out, cur.Msg, ff.evaluators); err != nil {
			return fmt.Errorf("evaluators: %w", err)
		}
	}
	failed := 0
	for _, in := range ff.flags {
		what, rev, err := f.writeOne(cmd.Context(), client, in, upsert)
		if err != nil {
			failed++
			fmt.Fprintf(errOut, "flag %s: ", in.key)
			printError(errOut, err)
			continue
		}
		fmt.Fprintf(out, "%s: flag %s in %s (revision %d)\n", what, in.key, f.env, rev)
	}
	if failed > 0 {
		fmt.Fprintf(errOut, "%d of %d flags were not written\n", failed, len(ff.flags))
		return &exitError{code: ExitFailure}
	}
	return nil
}

func (f *flagsCmd) writeOne(ctx context.Context, client flagv1connect.FlagServiceClient, in flagInput, upsert bool) (string, uint64, error) {
	ctx, cancel := unary(ctx)
	defer cancel()
	if upsert {
		resp, err := client.UpdateFlag(ctx, connect.NewRequest(&flagv1.UpdateFlagRequest{Environment: f.env, Key: in.key, Definition: string(in.def), Actor: f.actor}))
		if err == nil {
			if !resp.Msg.GetChanged() {
				return "unchanged", resp.Msg.GetFlag().GetRevision(), nil
			}
			return "updated", resp.Msg.GetFlag().GetRevision(), nil
		}
		if connect.CodeOf(err) != connect.CodeNotFound {
			return "", 0, err
		}
	}
	resp, err := client.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: f.env, Key: in.key, Definition: string(in.def), Actor: f.actor}))
	if err != nil {
		return "", 0, err
	}
	return "created", resp.Msg.GetFlag().GetRevision(), nil
}

// mergeEvaluators adds a file's evaluators to the environment's, replacing
// those of the same name.
func (f *flagsCmd) mergeEvaluators(ctx context.Context, out io.Writer, cur *flagv1.GetEvaluatorsResponse, file []byte) error {
	var add map[string]json.RawMessage
	if err := json.Unmarshal(file, &add); err != nil {
		return fmt.Errorf("$evaluators must be an object of named rules: %w", err)
	}
	merged := map[string]json.RawMessage{}
	if s := cur.GetEvaluators(); s != "" {
		if err := json.Unmarshal([]byte(s), &merged); err != nil {
			return fmt.Errorf("the environment's evaluators are not an object: %w", err)
		}
	}
	changed := false
	for name, rule := range add {
		if old, ok := merged[name]; !ok || !sameJSON(old, rule) {
			merged[name], changed = rule, true
		}
	}
	if !changed {
		_, err := fmt.Fprintf(out, "unchanged: evaluators in %s (revision %d)\n", f.env, cur.GetRevision())
		return err
	}
	body, err := json.MarshalIndent(merged, "", "  ")
	if err != nil {
		return err
	}
	req := &flagv1.UpdateEvaluatorsRequest{Environment: f.env, Evaluators: string(body), Actor: f.actor}
	if rev := cur.GetRevision(); rev != 0 {
		req.ExpectedRevision = &rev
	}
	rctx, cancel := unary(ctx)
	defer cancel()
	resp, err := f.flagClient().UpdateEvaluators(rctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "updated: evaluators in %s (revision %d)\n", f.env, resp.Msg.GetRevision())
	return err
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func (f *flagsCmd) getCommand() *cobra.Command {
	var defOnly bool
	c := &cobra.Command{
		Use:   "get KEY",
		Short: "Show a flag's definition, state and revision",
		Example: `  sluice flags get new-checkout --env prod
  sluice flags get new-checkout --definition > new-checkout.json`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().GetFlag(ctx, connect.NewRequest(&flagv1.GetFlagRequest{Environment: f.env, Key: args[0]}))
			if err != nil {
				return err
			}
			fl := resp.Msg.GetFlag()
			if defOnly {
				def := fl.GetDefinition()
				if !strings.HasSuffix(def, "\n") {
					def += "\n"
				}
				_, err := io.WriteString(cmd.OutOrStdout(), def)
				return err
			}
			return f.emit(cmd.OutOrStdout(), fl, func(w io.Writer) error { return f.writeFlag(w, fl) })
		},
	}
	c.Flags().BoolVar(&defOnly, "definition", false, "print only the definition, as stored")
	return c
}

// flagSummary is what the tables show of a definition.
type flagSummary struct {
	State          string         `json:"state"`
	DefaultVariant *string        `json:"defaultVariant"`
	Variants       map[string]any `json:"variants"`
	Targeting      any            `json:"targeting"`
}

func summarize(def string) flagSummary {
	var s flagSummary
	_ = json.Unmarshal([]byte(def), &s)
	return s
}

func (s flagSummary) defaultText() string {
	if s.DefaultVariant == nil {
		return "(caller's default)"
	}
	return *s.DefaultVariant
}

func (s flagSummary) variantNames() string {
	names := make([]string, 0, len(s.Variants))
	for n := range s.Variants {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (f *flagsCmd) writeFlag(w io.Writer, fl *flagv1.Flag) error {
	s := summarize(fl.GetDefinition())
	tw := newKV(w)
	fmt.Fprintf(tw, "Flag:\t%s\n", fl.GetKey())
	fmt.Fprintf(tw, "Environment:\t%s\n", fl.GetEnvironment())
	state := orDash(s.State)
	if s.State == "DISABLED" {
		state += " (killed or disabled: clients serve their default value)"
	}
	fmt.Fprintf(tw, "State:\t%s\n", state)
	fmt.Fprintf(tw, "Default variant:\t%s\n", s.defaultText())
	fmt.Fprintf(tw, "Variants:\t%s\n", orDash(s.variantNames()))
	targeting := "no"
	if m, ok := s.Targeting.(map[string]any); ok && len(m) > 0 {
		targeting = "yes"
	}
	fmt.Fprintf(tw, "Targeting:\t%s\n", targeting)
	fmt.Fprintf(tw, "Revision:\t%d\n", fl.GetRevision())
	updated := f.timeText(fl.GetUpdatedAt())
	if by := fl.GetUpdatedBy(); by != "" {
		updated += " by " + by
	}
	fmt.Fprintf(tw, "Updated:\t%s\n", updated)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Definition:")
	return writeIndentedJSON(w, fl.GetDefinition())
}

func writeIndentedJSON(w io.Writer, s string) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(s), "", "  "); err != nil {
		_, err := fmt.Fprintln(w, s)
		return err
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

func (f *flagsCmd) listCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List an environment's flags, ordered by key",
		Example: "  sluice flags list --env prod\n  sluice flags list -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := &flagv1.ListFlagsResponse{}
			req := &flagv1.ListFlagsRequest{Environment: f.env, PageSize: 1000}
			for {
				ctx, cancel := unary(cmd.Context())
				resp, err := f.flagClient().ListFlags(ctx, connect.NewRequest(req))
				cancel()
				if err != nil {
					return err
				}
				out.Flags = append(out.Flags, resp.Msg.GetFlags()...)
				out.Revision = resp.Msg.GetRevision()
				if resp.Msg.GetNextPageToken() == "" {
					break
				}
				if resp.Msg.GetNextPageToken() == req.PageToken {
					return errors.New("list flags: the server returned the same page token twice")
				}
				req.PageToken = resp.Msg.GetNextPageToken()
			}
			return f.emit(cmd.OutOrStdout(), out, func(w io.Writer) error {
				tw := newKV(w)
				fmt.Fprintln(tw, "KEY\tSTATE\tDEFAULT\tVARIANTS\tTARGETING\tREVISION")
				for _, fl := range out.GetFlags() {
					s := summarize(fl.GetDefinition())
					targeting := "-"
					if m, ok := s.Targeting.(map[string]any); ok && len(m) > 0 {
						targeting = "yes"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", fl.GetKey(), orDash(s.State), s.defaultText(), orDash(s.variantNames()), targeting, fl.GetRevision())
				}
				return tw.Flush()
			})
		},
	}
}

func (f *flagsCmd) deleteCommand() *cobra.Command {
	var revision uint64
	c := &cobra.Command{
		Use:     "delete KEY",
		Short:   "Delete a flag (its history is kept)",
		Example: "  sluice flags delete old-banner --env prod --revision 7",
		Args:    exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &flagv1.DeleteFlagRequest{Environment: f.env, Key: args[0], Actor: f.actor}
			if revision != 0 {
				req.ExpectedRevision = &revision
			}
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().DeleteFlag(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted: flag %s in %s (revision %d)\n", args[0], f.env, resp.Msg.GetRevision())
				return err
			})
		},
	}
	c.Flags().Uint64Var(&revision, "revision", 0, "delete only if the flag is at this revision")
	return c
}

func (f *flagsCmd) killCommand() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "kill KEY",
		Short: "Kill switch: disable a flag, so every client serves its default value",
		Long: `Set the flag's state to DISABLED. Every client then returns the caller's
default value with reason DISABLED, as flagd does. Re-enable it with
"sluice flags update" (state ENABLED).`,
		Example: `  sluice flags kill new-checkout --env prod --reason "checkout errors up"`,
		Args:    exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().KillFlag(ctx, connect.NewRequest(&flagv1.KillFlagRequest{Environment: f.env, Key: args[0], Reason: reason, Actor: f.actor}))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				if !resp.Msg.GetChanged() {
					_, err := fmt.Fprintf(w, "unchanged: flag %s in %s was already disabled (revision %d)\n", args[0], f.env, resp.Msg.GetFlag().GetRevision())
					return err
				}
				_, err := fmt.Fprintf(w, "killed: flag %s in %s is DISABLED (revision %d); clients now serve their default value\n", args[0], f.env, resp.Msg.GetFlag().GetRevision())
				return err
			})
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded in the history")
	return c
}

func (f *flagsCmd) historyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "history [KEY]",
		Short: "Show who changed a flag (or any flag of the environment), when, and what",
		Example: `  sluice flags history new-checkout --env prod
  sluice flags history new-checkout -o json   # with the JSON before and after`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &flagv1.GetFlagHistoryRequest{Environment: f.env, PageSize: 1000}
			if len(args) == 1 {
				req.Key = args[0]
			}
			out := &flagv1.GetFlagHistoryResponse{}
			for {
				ctx, cancel := unary(cmd.Context())
				resp, err := f.flagClient().GetFlagHistory(ctx, connect.NewRequest(req))
				cancel()
				if err != nil {
					return err
				}
				out.Changes = append(out.Changes, resp.Msg.GetChanges()...)
				if resp.Msg.GetNextPageToken() == "" {
					break
				}
				if resp.Msg.GetNextPageToken() == req.PageToken {
					return errors.New("flag history: the server returned the same page token twice")
				}
				req.PageToken = resp.Msg.GetNextPageToken()
			}
			return f.emit(cmd.OutOrStdout(), out, func(w io.Writer) error {
				tw := newKV(w)
				fmt.Fprintln(tw, "REVISION\tTIME\tACTION\tACTOR\tKEY\tCHANGE")
				for _, c := range out.GetChanges() {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", c.GetRevision(), f.timeText(c.GetTime()), actionName(c.GetAction()),
						c.GetActor(), orDash(c.GetKey()), changeText(c))
				}
				return tw.Flush()
			})
		},
	}
}

// actionName turns CHANGE_ACTION_UPDATE_EVALUATORS into update-evaluators.
func actionName(a flagv1.ChangeAction) string {
	s := strings.TrimPrefix(a.String(), "CHANGE_ACTION_")
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}

// changeText says in a few words what a change did: the top-level members
// it changed, the state it set, the reason given.
func changeText(c *flagv1.FlagChange) string {
	var s string
	switch {
	case c.GetBefore() == "" && c.GetAfter() != "":
		s = "created"
	case c.GetAfter() == "":
		s = "deleted"
	default:
		var before, after map[string]json.RawMessage
		_ = json.Unmarshal([]byte(c.GetBefore()), &before)
		_ = json.Unmarshal([]byte(c.GetAfter()), &after)
		var changed []string
		for k, v := range after {
			if old, ok := before[k]; !ok || !sameJSON(old, v) {
				changed = append(changed, k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				changed = append(changed, k)
			}
		}
		slices.Sort(changed)
		if len(changed) == 1 && changed[0] == "state" && c.GetKey() != "" {
			s = fmt.Sprintf("state %s → %s", before["state"], after["state"])
		} else if len(changed) > 0 {
			s = strings.Join(changed, ", ") + " changed"
		} else {
			s = "no change"
		}
	}
	if r := c.GetReason(); r != "" {
		s += " (" + r + ")"
	}
	return s
}

func (f *flagsCmd) evaluatorsCommand() *cobra.Command {
	c := group("evaluators", "Show and replace the environment's shared $evaluators")
	get := &cobra.Command{
		Use:   "get",
		Short: "Print the environment's $evaluators object",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().GetEvaluators(ctx, connect.NewRequest(&flagv1.GetEvaluatorsRequest{Environment: f.env}))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				if resp.Msg.GetRevision() == 0 {
					_, err := fmt.Fprintln(w, "{}")
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "revision %d, updated %s by %s\n", resp.Msg.GetRevision(), f.timeText(resp.Msg.GetUpdatedAt()), orDash(resp.Msg.GetUpdatedBy()))
				return writeIndentedJSON(w, resp.Msg.GetEvaluators())
			})
		},
	}
	var (
		file     string
		revision uint64
	)
	set := &cobra.Command{
		Use:   "set -f EVALUATORS.json",
		Short: "Replace the environment's $evaluators (an object, or a flagd file's $evaluators)",
		Long: `Replace the environment's shared evaluators with the file's: an object of
named JSON Logic rules, or a flagd file whose $evaluators are taken. Refused
when a flag would refer to a missing evaluator or return a variant it lacks.`,
		Example: "  sluice flags evaluators set -f evaluators.json --env prod --revision 4",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("-f is required: an evaluators file, or - for stdin")
			}
			data, err := readSpecFile(cmd, file)
			if err != nil {
				return err
			}
			body := bytes.TrimSpace(data)
			var top map[string]json.RawMessage
			if json.Unmarshal(body, &top) == nil {
				if ev, ok := top["$evaluators"]; ok {
					body = ev
				}
			}
			req := &flagv1.UpdateEvaluatorsRequest{Environment: f.env, Evaluators: string(body), Actor: f.actor}
			if revision != 0 {
				req.ExpectedRevision = &revision
			}
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := f.flagClient().UpdateEvaluators(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			return f.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				what := "updated"
				if !resp.Msg.GetChanged() {
					what = "unchanged"
				}
				_, err := fmt.Fprintf(w, "%s: evaluators in %s (revision %d)\n", what, f.env, resp.Msg.GetRevision())
				return err
			})
		},
	}
	set.Flags().StringVarP(&file, "filename", "f", "", "evaluators file, or - for stdin")
	set.Flags().Uint64Var(&revision, "revision", 0, "replace only if the evaluators are at this revision")
	c.AddCommand(get, set)
	return c
}
