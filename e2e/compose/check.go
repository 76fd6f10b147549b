// Package compose checks the repository's docker-compose.yml and the
// Dockerfiles it builds without a Docker engine.
//
// Check loads the Compose file with compose-go (the loader Docker Compose
// itself uses, so schema and consistency errors are the ones `docker compose`
// would report) and then looks for what would break `docker compose up
// --build` or run the stack wrong:
//
//   - every service is built from a Dockerfile inside the project, or runs an
//     image pinned to a tag other than "latest" or to a digest;
//   - every Dockerfile parses, pins every FROM image, and copies only sources
//     that exist in its build context;
//   - with Options.Build, each Dockerfile's `go build` is replayed in a
//     directory holding exactly the files the Dockerfile copies (so a module
//     missing from the COPY lines fails here as it would in Docker), and the
//     flags each service passes are checked against the built binary's own
//     flag list;
//   - addresses in commands and agent configs name services of the project
//     and ports they listen on, and a service depends on every service it
//     dials (so `docker compose up <service>` starts them); nothing in a
//     container dials or listens on loopback; published ports reach a
//     listener and do not collide;
//   - agent configurations mounted into agent containers exist and load with
//     agent/config, and route to the revisions the demo services really are.
//
// What it cannot check without Docker: that the pinned tags exist in their
// registries, what the images do at run time, and the images' own users and
// file ownership.
package compose

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/distribution/reference"
)

// Finding is one violation.
type Finding struct {
	// Where names the service or file:line concerned.
	Where string
	// Problem says what is wrong, in words a reader can act on.
	Problem string
}

func (f Finding) String() string { return f.Where + ": " + f.Problem }

// Options configure Check.
type Options struct {
	// ProjectDir is the Compose project directory: relative paths in the
	// file resolve against it, and every build context and bind-mount
	// source must be inside it. Required.
	ProjectDir string
	// File is the Compose file; default ProjectDir/docker-compose.yml.
	File string
	// Build replays each Dockerfile's `go build` steps on the files the
	// Dockerfile copies and checks service flags against the binaries.
	// It runs the go command (minutes on a cold build cache).
	Build bool
	// WorkDir receives the replayed build trees; required with Build.
	WorkDir string
}

// Check loads and checks the Compose file. The error is non-nil only when
// the file cannot be loaded or compose-go finds it invalid; every other
// problem is a Finding, sorted by where it was found.
func Check(ctx context.Context, o Options) ([]Finding, error) {
	dir, err := filepath.Abs(o.ProjectDir)
	if err != nil {
		return nil, fmt.Errorf("project directory: %w", err)
	}
	o.ProjectDir = dir
	if o.File == "" {
		o.File = filepath.Join(dir, "docker-compose.yml")
	}
	if o.Build && o.WorkDir == "" {
		return nil, fmt.Errorf("Options.WorkDir is required with Build")
	}
	project, err := load(ctx, dir, o.File)
	if err != nil {
		return nil, err
	}
	c := &checker{o: o, project: project, images: map[string]*image{}, built: map[string]*image{}}
	c.run(ctx)
	slices.SortStableFunc(c.findings, func(a, b Finding) int { return strings.Compare(a.Where, b.Where) })
	return c.findings, nil
}

// load loads a Compose file as `docker compose --project-directory dir -f
// file` would, with schema validation and consistency checks, paths resolved
// against dir, and no environment variables (so the result does not depend
// on the caller's shell).
func load(ctx context.Context, dir, file string) (*types.Project, error) {
	popts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(dir),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, fmt.Errorf("compose options: %w", err)
	}
	project, err := popts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	return project, nil
}

type checker struct {
	o       Options
	project *types.Project
	images  map[string]*image // by Dockerfile path and context
	built   map[string]*image // by service name, for services with build
	replays int               // go builds replayed, to name their directories
	// buildFailed is set when a replayed go build of the Dockerfile being
	// analysed failed, so its consequences are not reported again.
	buildFailed bool
	findings    []Finding
}

func (c *checker) add(where, format string, args ...any) {
	c.findings = append(c.findings, Finding{Where: where, Problem: fmt.Sprintf(format, args...)})
}

// rel renders path relative to the project directory when it is inside.
func (c *checker) rel(path string) string {
	if r, ok := c.inside(path); ok {
		return r
	}
	return path
}

// inside reports whether path is inside the project directory, and its
// slash-separated relative path.
func (c *checker) inside(path string) (string, bool) {
	r, err := filepath.Rel(c.o.ProjectDir, path)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) || filepath.IsAbs(r) {
		return "", false
	}
	return filepath.ToSlash(r), true
}

func (c *checker) run(ctx context.Context) {
	names := c.project.ServiceNames()
	slices.Sort(names)
	// First every image, so that address checks can look at any service.
	for _, name := range names {
		svc := c.project.Services[name]
		where := fmt.Sprintf("service %q", name)
		if svc.Build != nil {
			if img := c.checkBuild(ctx, where, svc.Build); img != nil {
				c.built[name] = img
			}
		} else if err := pinned(svc.Image); err != nil {
			c.add(where, "image %q: %v", svc.Image, err)
		}
	}
	hostPorts := map[string]string{} // "ip:port/proto" -> service
	for _, name := range names {
		svc := c.project.Services[name]
		where := fmt.Sprintf("service %q", name)
		img := c.built[name]
		c.checkVolumes(where, svc)
		c.checkDependsOn(where, svc)
		for _, p := range svc.Ports {
			if p.Published == "" {
				continue
			}
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			key := net.JoinHostPort(p.HostIP, p.Published) + "/" + proto
			if other, dup := hostPorts[key]; dup {
				c.add(where, "host port %s is already published by service %q", key, other)
			}
			hostPorts[key] = name
		}
		args := c.args(svc, img)
		c.checkAddresses(where, svc, args)
		if img != nil {
			c.checkFlags(where, svc, img, args)
			c.checkPublished(where, svc, img)
			if img.binaryName() == "sluice-agent" {
				c.checkAgent(where, svc, args)
			}
		}
	}
}

// args returns the arguments the service's process gets after its
// entrypoint: the service's command, or else the image's CMD.
func (c *checker) args(svc types.ServiceConfig, img *image) []string {
	if len(svc.Command) > 0 {
		return svc.Command
	}
	if img != nil {
		return img.cmd
	}
	return nil
}

func (c *checker) checkBuild(ctx context.Context, where string, b *types.BuildConfig) *image {
	if b.DockerfileInline != "" {
		c.add(where, "build.dockerfile_inline is not checked; put the Dockerfile under deploy/")
		return nil
	}
	ctxDir := b.Context
	if !filepath.IsAbs(ctxDir) {
		ctxDir = filepath.Join(c.o.ProjectDir, ctxDir)
	}
	if _, ok := c.inside(ctxDir); !ok {
		c.add(where, "build context %s is outside the project directory %s", ctxDir, c.o.ProjectDir)
		return nil
	}
	if st, err := os.Stat(ctxDir); err != nil || !st.IsDir() {
		c.add(where, "build context %s is not a directory", c.rel(ctxDir))
		return nil
	}
	df := b.Dockerfile
	if df == "" {
		df = "Dockerfile"
	}
	if !filepath.IsAbs(df) {
		df = filepath.Join(ctxDir, df)
	}
	if _, err := os.Stat(df); err != nil {
		c.add(where, "Dockerfile %s does not exist", c.rel(df))
		return nil
	}
	if b.Target != "" {
		c.add(where, "build.target is not supported by this checker")
	}
	key := df + "\x00" + ctxDir
	img, ok := c.images[key]
	if !ok {
		img = c.analyse(ctx, ctxDir, df)
		c.images[key] = img
	}
	return img
}

func (c *checker) checkVolumes(where string, svc types.ServiceConfig) {
	for _, v := range svc.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		if _, ok := c.inside(v.Source); !ok {
			c.add(where, "bind mount source %s is outside the project directory", v.Source)
			continue
		}
		if _, err := os.Stat(v.Source); err != nil {
			c.add(where, "bind mount source %s does not exist (Docker would create an empty directory there)", c.rel(v.Source))
		}
	}
}

func (c *checker) checkDependsOn(where string, svc types.ServiceConfig) {
	deps := make([]string, 0, len(svc.DependsOn))
	for d := range svc.DependsOn {
		deps = append(deps, d)
	}
	slices.Sort(deps)
	for _, d := range deps {
		if svc.DependsOn[d].Condition != types.ServiceConditionHealthy {
			continue
		}
		dep, ok := c.project.Services[d]
		if !ok {
			continue // compose-go reports it
		}
		hc := dep.HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
			c.add(where, "depends on %q being healthy, but %q has no healthcheck", d, d)
		}
	}
}

// checkAddresses looks at every argument of svc that is an address
// (host:port or a URL with a host): a named host must be a service of the
// project that svc depends on, and no address may be loopback, which in a
// container is neither reachable from the host and the other containers (a
// listener) nor another service (a dialled address).
func (c *checker) checkAddresses(where string, svc types.ServiceConfig, args []string) {
	for _, a := range args {
		if _, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "-") {
			a = v
		}
		c.checkAddress(where, svc, "argument", a)
	}
}

// checkAddress checks one address that service from listens on or dials
// (see checkAddresses); what names it in a finding.
func (c *checker) checkAddress(where string, from types.ServiceConfig, what, value string) {
	host, port, ok := splitAddress(value)
	if !ok {
		return
	}
	switch {
	case host == "localhost" || net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback():
		c.add(where, "%s %q uses a loopback address, which in a container is reachable neither from outside nor as another service", what, value)
	case host == "" || net.ParseIP(host) != nil:
	default:
		target, ok := c.project.Services[host]
		if !ok {
			c.add(where, "%s %q names host %q, which is not a service of this project", what, value, host)
			return
		}
		if _, dep := from.DependsOn[host]; !dep && host != from.Name {
			c.add(where, "%s %q: service %q dials %q but does not depend on it, so `docker compose up %s` does not start it", what, value, from.Name, host, from.Name)
		}
		img := c.built[host]
		if port == "" || img == nil {
			return
		}
		if !slices.Contains(c.listenPorts(target, img), port) {
			c.add(where, "%s %q: service %q listens on no port %s", what, value, host, port)
		}
	}
}

// listenPorts returns the ports a built service listens on: those of
// addresses with an unspecified host in its arguments, and for an agent
// those of its configuration.
func (c *checker) listenPorts(svc types.ServiceConfig, img *image) []string {
	var ports []string
	add := func(v string) {
		host, port, ok := splitAddress(v)
		if ok && port != "" && (host == "" || host == "0.0.0.0" || host == "::") {
			ports = append(ports, port)
		}
	}
	args := c.args(svc, img)
	for _, a := range args {
		if _, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(a, "-") {
			a = v
		}
		add(a)
	}
	if img.binaryName() == "sluice-agent" {
		if cfg, _, err := c.agentConfig(svc, args); err == nil {
			add(cfg.Admin)
			for _, s := range cfg.Services {
				add(s.Listen)
			}
		}
	}
	return ports
}

// checkPublished checks that every published port of a built service
// reaches something the service listens on.
func (c *checker) checkPublished(where string, svc types.ServiceConfig, img *image) {
	if img.binaryName() == "sluice-agent" {
		if _, _, err := c.agentConfig(svc, c.args(svc, img)); err != nil {
			return // the configuration's own finding says why
		}
	}
	listening := c.listenPorts(svc, img)
	for _, p := range svc.Ports {
		if !slices.Contains(listening, strconv.FormatUint(uint64(p.Target), 10)) {
			c.add(where, "publishes container port %d, but the service listens on %v", p.Target, listening)
		}
	}
}

// splitAddress extracts host and port from "host:port" (numeric port) or a
// URL with a host ("nats://nats:4222"); ok is false for anything else.
func splitAddress(v string) (host, port string, ok bool) {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			return "", "", false
		}
		return u.Hostname(), u.Port(), true
	}
	h, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", "", false
	}
	if _, err := strconv.ParseUint(p, 10, 16); err != nil {
		return "", "", false
	}
	return h, p, true
}

// pinned reports why an image reference is not pinned: it must carry a
// digest, or a tag other than "latest".
func pinned(ref string) error {
	if ref == "" {
		return fmt.Errorf("no image and no build")
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("not a valid image reference: %w", err)
	}
	if _, ok := named.(reference.Digested); ok {
		return nil
	}
	tagged, ok := named.(reference.Tagged)
	switch {
	case !ok:
		return fmt.Errorf("not pinned: no tag means \"latest\", which moves; pin a version tag or a digest")
	case tagged.Tag() == "latest":
		return fmt.Errorf("not pinned: tag \"latest\" moves; pin a version tag or a digest")
	}
	return nil
}

// flagValue returns the value given to -name or --name in args, in either
// the "--name value" or the "--name=value" form; "" when absent.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		k, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if k != name {
			continue
		}
		if hasValue {
			return v
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// checkFlags checks the service's arguments against the flags its binary
// defines (known only when the image was built, Options.Build).
func (c *checker) checkFlags(where string, svc types.ServiceConfig, img *image, args []string) {
	if img.flags == nil {
		return
	}
	if len(svc.Entrypoint) > 0 {
		c.add(where, "an entrypoint override is not checked by this checker")
		return
	}
	known := make([]string, 0, len(img.flags))
	for f := range img.flags {
		known = append(known, "--"+f)
	}
	slices.Sort(known)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			c.add(where, "argument %q is not a flag: Go's flag package stops there and ignores the rest", a)
			return
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, ok := img.flags[name]
		if !ok {
			c.add(where, "%s defines no flag %s (it has %s)", img.binaryName(), a, strings.Join(known, ", "))
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // presumably its value
			}
			continue
		}
		if takesValue && !hasValue {
			i++
			if i == len(args) {
				c.add(where, "flag %s needs a value", a)
			}
		}
	}
}
