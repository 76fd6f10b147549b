package compose

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"go/version"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
)

// image is what a Dockerfile was found to build.
type image struct {
	// entrypoint and cmd are the final stage's exec-form ENTRYPOINT and CMD.
	entrypoint, cmd []string
	// flags maps each flag of the entrypoint binary to whether it takes a
	// value; nil unless the binary was built (Options.Build).
	flags map[string]bool
}

// binaryName is the base name of the entrypoint, e.g. "sluice-agent".
func (img *image) binaryName() string {
	if len(img.entrypoint) == 0 {
		return ""
	}
	return path.Base(img.entrypoint[0])
}

// stage is the checker's model of one build stage: the files it is known to
// contain (copied from the context or another stage, or built by a
// replayed go build), keyed by absolute path in the image.
type stage struct {
	name       string
	files      map[string]string // image path -> host file
	workdir    string
	vars       map[string]string // ARG and ENV values visible to RUN
	entrypoint []string
	cmd        []string
	goVersion  string // "1.26.8" when the base is golang:1.26.8-...
}

func (st *stage) inherit(from *stage) {
	for k, v := range from.files {
		st.files[k] = v
	}
	for k, v := range from.vars {
		st.vars[k] = v
	}
	st.workdir = from.workdir
	st.entrypoint = slices.Clone(from.entrypoint)
	st.cmd = slices.Clone(from.cmd)
	st.goVersion = from.goVersion
}

// analyse parses and checks one Dockerfile with its build context.
func (c *checker) analyse(ctx context.Context, ctxDir, df string) *image {
	img := &image{}
	file := c.rel(df)
	c.buildFailed = false
	ins, err := ParseDockerfile(df)
	if err != nil {
		c.add(file, "%v", err)
		return img
	}
	where := func(line int) string { return file + ":" + strconv.Itoa(line) }
	global := map[string]string{}
	var stages []*stage
	var cur *stage
	for _, in := range ins {
		w := where(in.Line)
		if in.Cmd == "FROM" {
			cur = c.from(w, in, global, stages)
			stages = append(stages, cur)
			continue
		}
		if in.Cmd == "ARG" {
			for _, a := range in.Args {
				k, v, hasDefault := strings.Cut(a, "=")
				switch {
				case cur == nil:
					global[k] = v
				case hasDefault:
					cur.vars[k] = v
				default:
					cur.vars[k] = global[k]
				}
			}
			continue
		}
		if cur == nil {
			c.add(w, "%s before the first FROM", in.Cmd)
			continue
		}
		switch in.Cmd {
		case "WORKDIR":
			p := os.Expand(in.Rest, func(k string) string { return cur.vars[k] })
			if !path.IsAbs(p) {
				p = path.Join(cur.workdir, p)
			}
			cur.workdir = path.Clean(p)
		case "ENV":
			c.env(w, in, cur)
		case "COPY":
			c.copy(w, in, cur, stages, ctxDir)
		case "ADD":
			c.add(w, "use COPY: ADD also fetches URLs and unpacks archives, which this checker cannot verify")
		case "RUN":
			c.runStep(ctx, w, in, cur)
		case "ENTRYPOINT", "CMD":
			if !in.JSON {
				c.add(w, "%s in shell form runs under /bin/sh, which does not forward SIGTERM; use the exec form [\"...\"]", in.Cmd)
			}
			if in.Cmd == "ENTRYPOINT" {
				cur.entrypoint = in.Args
				cur.cmd = nil // Docker resets an inherited CMD
			} else {
				cur.cmd = in.Args
			}
		case "USER", "EXPOSE", "LABEL", "HEALTHCHECK", "STOPSIGNAL", "VOLUME", "SHELL":
		default:
			c.add(w, "instruction %s is not understood by this checker", in.Cmd)
		}
	}
	if len(stages) == 0 {
		c.add(file, "no FROM")
		return img
	}
	final := stages[len(stages)-1]
	img.entrypoint, img.cmd = final.entrypoint, final.cmd
	if len(img.entrypoint) == 0 {
		c.add(file, "the final stage has no ENTRYPOINT")
		return img
	}
	if c.o.Build && !c.buildFailed {
		bin, ok := final.files[path.Clean(img.entrypoint[0])]
		if !ok {
			c.add(file, "ENTRYPOINT %s is not a file this Dockerfile builds or copies", img.entrypoint[0])
			return img
		}
		flags, err := readFlags(ctx, bin)
		if err != nil {
			c.add(file, "read the flags of %s: %v", img.entrypoint[0], err)
			return img
		}
		img.flags = flags
	}
	return img
}

func (c *checker) from(where string, in Instruction, global map[string]string, stages []*stage) *stage {
	st := &stage{files: map[string]string{}, vars: map[string]string{}, workdir: "/"}
	args := in.Args
	if len(args) == 3 && strings.EqualFold(args[1], "AS") {
		st.name = strings.ToLower(args[2])
	} else if len(args) != 1 {
		c.add(where, "FROM wants: image [AS name]")
		return st
	}
	var missing []string
	ref := os.Expand(args[0], func(k string) string {
		v, ok := global[k]
		if !ok || v == "" {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		c.add(where, "FROM %s uses %v, which have no default before the first FROM", args[0], missing)
		return st
	}
	for _, prev := range stages {
		if prev.name != "" && prev.name == strings.ToLower(ref) {
			st.inherit(prev)
			return st
		}
	}
	if ref == "scratch" {
		return st
	}
	if err := pinned(ref); err != nil {
		c.add(where, "FROM %s: %v", ref, err)
		return st
	}
	named, _ := reference.ParseNormalizedNamed(ref)
	if tagged, ok := named.(reference.Tagged); ok && named.Name() == "docker.io/library/golang" {
		v, _, _ := strings.Cut(tagged.Tag(), "-")
		if version.IsValid("go" + v) {
			st.goVersion = v
		}
	}
	return st
}

func (c *checker) env(where string, in Instruction, st *stage) {
	if len(in.Args) >= 2 && !strings.Contains(in.Args[0], "=") {
		st.vars[in.Args[0]] = strings.Join(in.Args[1:], " ") // legacy ENV key value
		return
	}
	cmds, err := splitShell(in.Rest, st.vars)
	if err != nil || len(cmds) != 1 || len(cmds[0].Args) > 0 {
		c.add(where, "ENV not understood by this checker: want KEY=value ...")
		return
	}
	for _, kv := range cmds[0].Env {
		k, v, _ := strings.Cut(kv, "=")
		st.vars[k] = v
	}
}

func (c *checker) copy(where string, in Instruction, st *stage, stages []*stage, ctxDir string) {
	for _, f := range in.Flags {
		k, _, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if k != "from" && k != "chown" && k != "chmod" && k != "link" {
			c.add(where, "COPY flag %s is not understood by this checker", f)
		}
	}
	if len(in.Args) < 2 {
		c.add(where, "COPY wants at least one source and a destination")
		return
	}
	expand := func(s string) string { return os.Expand(s, func(k string) string { return st.vars[k] }) }
	srcs, dst := in.Args[:len(in.Args)-1], expand(in.Args[len(in.Args)-1])
	dirDst := strings.HasSuffix(dst, "/")
	if !path.IsAbs(dst) {
		dst = path.Join(st.workdir, dst)
	}
	dst = path.Clean(dst)
	if from, ok := in.Flag("from"); ok {
		c.copyFrom(where, from, srcs, dst, dirDst, st, stages)
		return
	}
	var matched []string
	many := len(srcs) > 1
	for _, s := range srcs {
		s = expand(s)
		if slices.Contains(strings.Split(filepath.ToSlash(s), "/"), "..") {
			c.add(where, "COPY source %s leaves the build context", s)
			continue
		}
		p := filepath.Join(ctxDir, filepath.FromSlash(strings.TrimPrefix(s, "/")))
		if strings.ContainsAny(s, "*?[") {
			many = true
			m, err := filepath.Glob(p)
			if err != nil || len(m) == 0 {
				c.add(where, "COPY source %s matches nothing in the build context %s", s, c.rel(ctxDir))
			}
			matched = append(matched, m...)
			continue
		}
		if _, err := os.Stat(p); err != nil {
			c.add(where, "COPY source %s does not exist in the build context %s", s, c.rel(ctxDir))
			continue
		}
		matched = append(matched, p)
	}
	if many && !dirDst {
		c.add(where, "COPY with several sources or a wildcard needs a destination ending in /")
	}
	for _, m := range matched {
		info, err := os.Stat(m)
		if err != nil {
			continue
		}
		if !info.IsDir() {
			if dirDst || many {
				st.files[path.Join(dst, filepath.Base(m))] = m
			} else {
				st.files[dst] = m
			}
			continue
		}
		// A directory's contents are copied into the destination.
		_ = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			r, _ := filepath.Rel(m, p)
			st.files[path.Join(dst, filepath.ToSlash(r))] = p
			return nil
		})
	}
}

func (c *checker) copyFrom(where, from string, srcs []string, dst string, dirDst bool, st *stage, stages []*stage) {
	var src *stage
	if i, err := strconv.Atoi(from); err == nil && i >= 0 && i < len(stages)-1 {
		src = stages[i]
	}
	for _, s := range stages[:len(stages)-1] {
		if s.name != "" && s.name == strings.ToLower(from) {
			src = s
		}
	}
	if src == nil {
		if err := pinned(from); err != nil {
			c.add(where, "COPY --from=%s: not an earlier stage, and as an image %v", from, err)
		}
		return
	}
	for _, s := range srcs {
		s = path.Clean(s)
		found := false
		for p, host := range src.files {
			switch {
			case p == s:
				found = true
				if dirDst || len(srcs) > 1 {
					st.files[path.Join(dst, path.Base(p))] = host
				} else {
					st.files[dst] = host
				}
			case strings.HasPrefix(p, s+"/"):
				found = true
				st.files[path.Join(dst, strings.TrimPrefix(p, s+"/"))] = host
			}
		}
		// Without Build the outputs of RUN steps are unknown, so a missing
		// path is only reported when builds were replayed and succeeded.
		if !found && c.o.Build && !c.buildFailed {
			c.add(where, "COPY --from=%s %s: that stage neither copies nor builds %s", from, s, s)
		}
	}
}

// runStep checks the go build commands of a RUN instruction, and replays
// them when Options.Build is set. Other commands are not looked at.
func (c *checker) runStep(ctx context.Context, where string, in Instruction, st *stage) {
	var cmds []shellCommand
	if in.JSON {
		cmds = []shellCommand{{Args: in.Args}}
	} else {
		if !strings.Contains(in.Rest, "go build") {
			return
		}
		var err error
		if cmds, err = splitShell(in.Rest, st.vars); err != nil {
			c.add(where, "RUN: %v", err)
			return
		}
	}
	for _, cmd := range cmds {
		if len(cmd.Args) < 2 || cmd.Args[0] != "go" || cmd.Args[1] != "build" {
			continue
		}
		c.checkGoFiles(where, st)
		if c.o.Build {
			c.replay(ctx, where, st, cmd)
		}
	}
}

// checkGoFiles checks, before a go build, that the workspace (or module)
// the build runs in is complete in the stage, and that the base image's Go
// is not older than any go line: the golang images set GOTOOLCHAIN=local,
// so such a build fails instead of downloading a newer toolchain.
func (c *checker) checkGoFiles(where string, st *stage) {
	var root, kind string
	for d := st.workdir; ; d = path.Dir(d) {
		if _, ok := st.files[path.Join(d, "go.work")]; ok {
			root, kind = d, "go.work"
			break
		}
		if _, ok := st.files[path.Join(d, "go.mod")]; ok && root == "" {
			root, kind = d, "go.mod"
		}
		if d == "/" {
			break
		}
	}
	if root == "" {
		c.add(where, "go build runs in %s, but no go.work or go.mod was copied at or above it", st.workdir)
		return
	}
	if kind == "go.work" {
		work := st.files[path.Join(root, "go.work")]
		uses, err := workUses(work)
		if err != nil {
			c.add(where, "%v", err)
		}
		for _, u := range uses {
			dir := path.Join(root, u)
			if _, ok := st.files[path.Join(dir, "go.mod")]; !ok {
				c.add(where, "go.work uses %s, but %s/go.mod is not copied before this go build", u, dir)
			}
			// Every member's go.sum takes part in checksum verification.
			hostSum := filepath.Join(filepath.Dir(work), filepath.FromSlash(u), "go.sum")
			if _, err := os.Stat(hostSum); err == nil {
				if _, ok := st.files[path.Join(dir, "go.sum")]; !ok {
					c.add(where, "go.work uses %s, but %s/go.sum is not copied before this go build", u, dir)
				}
			}
		}
	}
	if st.goVersion == "" {
		return
	}
	var files []string
	for p := range st.files {
		if b := path.Base(p); b == "go.mod" || b == "go.work" {
			files = append(files, p)
		}
	}
	slices.Sort(files)
	for _, p := range files {
		v, err := goLine(st.files[p])
		if err != nil {
			c.add(where, "%v", err)
			continue
		}
		if v != "" && version.Compare("go"+st.goVersion, "go"+v) < 0 {
			c.add(where, "the builder image has Go %s, older than the line `go %s` in %s", st.goVersion, v, p)
		}
	}
}

// replay runs a go build command of the stage in a directory holding
// exactly the stage's known files, and records the binary it writes.
func (c *checker) replay(ctx context.Context, where string, st *stage, cmd shellCommand) {
	args := slices.Clone(cmd.Args[1:])
	out := ""
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "-o" && i+1 < len(args):
			out = args[i+1]
			args = slices.Delete(args, i, i+2)
			i--
		case strings.HasPrefix(args[i], "-o="):
			out = strings.TrimPrefix(args[i], "-o=")
			args = slices.Delete(args, i, i+1)
			i--
		}
	}
	if out == "" || strings.HasSuffix(out, "/") {
		c.add(where, "go build needs -o <file> for this checker to know where the binary goes")
		return
	}
	if !path.IsAbs(out) {
		out = path.Join(st.workdir, out)
	}
	out = path.Clean(out)

	gov, err := goEnvVersion(ctx)
	if err != nil {
		c.add(where, "%v", err)
		return
	}
	if st.goVersion != "" && version.Lang(gov) != version.Lang("go"+st.goVersion) {
		c.add(where, "the replayed build would use %s but the image has Go %s: run the test with Go %s", gov, st.goVersion, version.Lang("go"+st.goVersion))
		return
	}

	c.replays++
	root := filepath.Join(c.o.WorkDir, "build-"+strconv.Itoa(c.replays))
	for p, host := range st.files {
		if err := copyFile(host, filepath.Join(root, filepath.FromSlash(p))); err != nil {
			c.add(where, "materialise %s: %v", p, err)
			return
		}
	}
	dir := filepath.Join(root, filepath.FromSlash(st.workdir))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.add(where, "%v", err)
		return
	}
	hostOut := filepath.Join(root, filepath.FromSlash(out))
	args = append([]string{args[0], "-o", hostOut}, args[1:]...)
	run := exec.CommandContext(ctx, "go", args...)
	run.Dir = dir
	run.Env = buildEnv(st.vars, cmd.Env)
	output, err := run.CombinedOutput()
	if err != nil {
		c.buildFailed = true
		c.add(where, "go %s fails on the files this Dockerfile copies (replayed in %s): %v\n%s",
			quoteArgs(cmd.Args[1:]), dir, err, tail(output, 30))
		return
	}
	st.files[out] = hostOut
}

// buildEnv is the environment of a replayed go build: the caller's (so its
// module proxy and caches are used), with what would make the build differ
// from the image's reset to the golang image's defaults: GOFLAGS (also one
// set with go env -w), GOWORK, the target platform, cgo and toolchain
// switching. Then the stage's ARG and ENV values and the command's own
// assignments.
func buildEnv(vars map[string]string, assigns []string) []string {
	drop := []string{"GOFLAGS", "GOWORK", "GOOS", "GOARCH", "CGO_ENABLED", "GOTOOLCHAIN"}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	env = append(env, "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly", "GOWORK=auto")
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+vars[k])
	}
	return append(env, assigns...)
}

func goEnvVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

var flagLine = regexp.MustCompile(`^  -(\S+)(?: (\S+))?`)

// readFlags runs `bin -h` and reads the flag list Go's flag package prints:
// each flag, and whether it takes a value (bool flags print no type).
func readFlags(ctx context.Context, bin string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput() // -h exits 0 or 2
	flags := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = m[2] != ""
		}
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("`%s -h` printed no flags:\n%s", filepath.Base(bin), tail(out, 10))
	}
	return flags, nil
}

// workUses returns the directories of a go.work file's use directives.
func workUses(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read go.work: %w", err)
	}
	var uses []string
	block := false
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case block && f[0] == ")":
			block = false
		case block:
			uses = append(uses, strings.Trim(f[0], `"`))
		case f[0] == "use" && len(f) >= 2 && f[1] == "(":
			block = true
		case f[0] == "use" && len(f) >= 2:
			uses = append(uses, strings.Trim(f[1], `"`))
		}
	}
	return uses, nil
}

// goLine returns the version of a go.mod or go.work file's go directive.
func goLine(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "go" {
			return f[1], nil
		}
	}
	return "", nil
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// quoteArgs renders args for a message, quoting those with spaces.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			q[i] = strconv.Quote(a)
		}
	}
	return strings.Join(q, " ")
}

// tail returns the last n lines of out.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
