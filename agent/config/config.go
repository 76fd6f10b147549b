// Package config loads and validates the edge agent's YAML configuration.
//
// A configuration names the agent, the NATS server it takes desired routing
// from, the directory it persists applied state to, the admin address, how
// many seconds of metrics it keeps while NATS is away, and for every
// service it fronts: the listen address, the revision served before any
// desired state arrives, the upstream addresses of the revisions it routes
// to by address, how it runs every other revision itself from its artifact
// (the run section), which upstream statuses count as errors in its
// metrics, and which feature flags it evaluates per request (the flags
// section). Unknown fields are errors, so a typo never silently drops a
// setting.
//
// A service's flags section lists feature flags evaluated for every
// request the service's proxy forwards:
//
//	flags:
//	  - key: new-checkout          # flag key (required)
//	    environment: prod          # flag environment (required, a DNS label)
//	    targetingKey: {header: X-User-ID}   # or {cookie: uid}; exactly one
//	    header: X-Checkout-Variant # optional; default X-Sluice-Flag-<key>
//
// The variant the flag serves the request's targeting key is passed to the
// upstream in header (a copy sent by the client is always removed first),
// and the request is counted in the metrics under the variant
// "flag:<key>:<variant>" (core/metrics.FlagVariant) as well as under its
// revision. header may be left out only when "X-Sluice-Flag-<key>" is a
// valid header name; keys and headers must be unique within a service.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/revision"
	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/flags/store"
)

// Config is the whole agent configuration.
type Config struct {
	// ID identifies the agent in the fleet; it must match bus.AgentIDPattern.
	ID string `yaml:"id"`
	// Labels are matched against a desired state's selector.
	Labels map[string]string `yaml:"labels"`
	// NATS is the server URL (or comma-separated URLs) of the control bus.
	NATS string `yaml:"nats"`
	// StateDir holds state.json, the last applied routing per service.
	StateDir string `yaml:"stateDir"`
	// Admin is the host:port of /metrics, /healthz, /readyz and /state;
	// empty disables the admin server.
	Admin string `yaml:"admin"`
	// Metrics tunes the per-second metrics the agent publishes.
	Metrics Metrics `yaml:"metrics"`
	// Services are the services this agent fronts.
	Services []Service `yaml:"services"`
}

// DefaultMetricsQueueSeconds is Metrics.QueueSeconds when unset.
const DefaultMetricsQueueSeconds = 600

// Metrics tunes the per-second metrics.
type Metrics struct {
	// QueueSeconds is how many one-second batches are kept while they
	// cannot be delivered (NATS away); beyond it the oldest are dropped and
	// counted. 0 means DefaultMetricsQueueSeconds.
	QueueSeconds int `yaml:"queueSeconds"`
}

// Service is one proxied service.
type Service struct {
	// Name is the service name (a DNS label); the agent watches
	// bus.DesiredKey(Name).
	Name string `yaml:"name"`
	// Listen is the proxy's host:port.
	Listen string `yaml:"listen"`
	// Initial is the revision served at 100 % until a desired state is
	// applied; it must be one of Revisions, or any revision when Run is set.
	Initial string `yaml:"initial"`
	// Revisions maps each immutable revision to its upstream host:port
	// addresses, used round-robin. These revisions run elsewhere; the agent
	// only routes to them.
	Revisions map[string][]string `yaml:"revisions"`
	// Run, when set, lets the agent run every other revision itself: it
	// fetches the revision's artifact by digest, verifies it and starts
	// instances of it. Without Run, a desired state naming a revision not in
	// Revisions is rejected.
	Run *Run `yaml:"run"`
	// ErrorStatuses are the upstream answers counted as errors in the
	// metrics: status classes ("5xx") or codes ("429"). Empty means
	// ["5xx"]. Upstreams that cannot be reached are always errors.
	ErrorStatuses []string `yaml:"errorStatuses"`
	// Flags are feature flags evaluated for every request the service's
	// proxy forwards; see Flag.
	Flags []Flag `yaml:"flags"`
}

// FlagHeaderPrefix starts a flag's default variant header:
// X-Sluice-Flag-<key>.
const FlagHeaderPrefix = "X-Sluice-Flag-"

// Flag is a feature flag the proxy evaluates per request: the variant the
// flag serves the request's targeting key is set in a request header for
// the upstream and the request is counted under that variant in the
// metrics.
type Flag struct {
	// Key is the flag key.
	Key string `yaml:"key"`
	// Environment is the flag environment (a DNS label such as prod) whose
	// definition of the flag is evaluated.
	Environment string `yaml:"environment"`
	// TargetingKey names the request header or cookie whose value is the
	// evaluation's targeting key; exactly one of header and cookie is set.
	TargetingKey route.Match `yaml:"targetingKey"`
	// Header is the request header that carries the variant to the
	// upstream; empty means FlagHeaderPrefix + Key (see VariantHeader).
	Header string `yaml:"header"`
}

// VariantHeader returns the header carrying the flag's variant: Header, or
// FlagHeaderPrefix + Key when Header is empty, in canonical form.
func (f Flag) VariantHeader() string {
	if f.Header != "" {
		return http.CanonicalHeaderKey(f.Header)
	}
	return http.CanonicalHeaderKey(FlagHeaderPrefix + f.Key)
}

// FlagEnvironments returns the environments of every service's flags,
// sorted and unique; empty when no service has flags.
func (c Config) FlagEnvironments() []string {
	var out []string
	for _, s := range c.Services {
		for _, f := range s.Flags {
			out = append(out, f.Environment)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Placeholders substituted in Run.Command and Run.Args for each instance.
const (
	// PlaceholderPort is the loopback port the instance must listen on
	// (also in the PORT environment variable).
	PlaceholderPort = "{port}"
	// PlaceholderEntrypoint is the absolute path of the artifact's program:
	// the executable itself, or the file a tarball's sluice.entrypoint names.
	PlaceholderEntrypoint = "{entrypoint}"
	// PlaceholderDir is the absolute path of the directory the artifact was
	// unpacked into (the instance's working directory).
	PlaceholderDir = "{dir}"
)

// Defaults of the run section.
const (
	DefaultInstances      = 1
	MaxInstances          = 64
	DefaultStartupTimeout = 60 * time.Second
	DefaultDrain          = 10 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultProbePeriod    = 500 * time.Millisecond
	DefaultProbeTimeout   = time.Second
	DefaultProbeFailures  = 3
	DefaultBackoffInitial = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

// Run says how the agent runs a service's revisions from their artifacts.
// Zero durations and counts take the defaults above (WithDefaults).
type Run struct {
	// Instances is how many processes of each revision run; default 1.
	Instances int `yaml:"instances"`
	// Command is the program and its first arguments; default
	// ["{entrypoint}"]. Placeholders: {port}, {entrypoint}, {dir}.
	Command []string `yaml:"command"`
	// Args are appended to Command, with the same placeholders.
	Args []string `yaml:"args"`
	// Env is added to the instance's environment (beside PATH, PORT and
	// SLUICE_SERVICE, SLUICE_REVISION, SLUICE_INSTANCE, which the agent
	// sets and which cannot be overridden).
	Env map[string]string `yaml:"env"`
	// Readiness is the probe that decides when an instance takes traffic.
	Readiness Probe `yaml:"readiness"`
	// StartupTimeout bounds how long a desired state waits for each of its
	// revisions to have a ready instance; after it the state is rejected.
	StartupTimeout time.Duration `yaml:"startupTimeout"`
	// Drain is how long a revision that is no longer desired keeps running
	// after routing stopped sending it requests, so requests in flight
	// finish; then its instances are stopped.
	Drain time.Duration `yaml:"drain"`
	// StopTimeout is how long a stopping instance gets between SIGTERM and
	// SIGKILL.
	StopTimeout time.Duration `yaml:"stopTimeout"`
	// RestartBackoff paces restarts of instances that exit.
	RestartBackoff Backoff `yaml:"restartBackoff"`
}

// Probe is a readiness probe: an HTTP GET of a path (any 2xx or 3xx
// passes) or a TCP connect to the instance's port. Neither set means TCP.
type Probe struct {
	// HTTPGet is the path to GET, starting with "/".
	HTTPGet string `yaml:"httpGet"`
	// TCP probes by connecting to the port.
	TCP bool `yaml:"tcp"`
	// Period between probes; default 500ms.
	Period time.Duration `yaml:"period"`
	// Timeout of one probe; default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// FailureThreshold is how many consecutive failures take a ready
	// instance out of rotation; default 3.
	FailureThreshold int `yaml:"failureThreshold"`
}

// Backoff is a doubling delay between restarts.
type Backoff struct {
	// Initial delay; default 500ms.
	Initial time.Duration `yaml:"initial"`
	// Max delay; default 30s.
	Max time.Duration `yaml:"max"`
}

// WithDefaults returns r with every zero field set to its default.
func (r Run) WithDefaults() Run {
	if r.Instances == 0 {
		r.Instances = DefaultInstances
	}
	if len(r.Command) == 0 {
		r.Command = []string{PlaceholderEntrypoint}
	}
	if r.StartupTimeout == 0 {
		r.StartupTimeout = DefaultStartupTimeout
	}
	if r.Drain == 0 {
		r.Drain = DefaultDrain
	}
	if r.StopTimeout == 0 {
		r.StopTimeout = DefaultStopTimeout
	}
	if r.Readiness.HTTPGet == "" {
		r.Readiness.TCP = true
	}
	if r.Readiness.Period == 0 {
		r.Readiness.Period = DefaultProbePeriod
	}
	if r.Readiness.Timeout == 0 {
		r.Readiness.Timeout = DefaultProbeTimeout
	}
	if r.Readiness.FailureThreshold == 0 {
		r.Readiness.FailureThreshold = DefaultProbeFailures
	}
	if r.RestartBackoff.Initial == 0 {
		r.RestartBackoff.Initial = DefaultBackoffInitial
	}
	if r.RestartBackoff.Max == 0 {
		r.RestartBackoff.Max = max(DefaultBackoffMax, r.RestartBackoff.Initial)
	}
	return r
}

// UsesEntrypoint reports whether the command line names {entrypoint}, so
// the artifact must have one.
func (r Run) UsesEntrypoint() bool {
	for _, a := range slices.Concat(r.WithDefaults().Command, r.Args) {
		if strings.Contains(a, PlaceholderEntrypoint) {
			return true
		}
	}
	return false
}

// RevisionNames returns the service's revisions, sorted.
func (s Service) RevisionNames() []string {
	out := make([]string, 0, len(s.Revisions))
	for r := range s.Revisions {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Load reads and validates the file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read agent config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("agent config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML strictly (unknown fields and duplicate keys are
// errors) and validates the result.
func Parse(data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errors.New("config is empty")
		}
		return Config{}, fmt.Errorf("decode YAML: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks every field and returns one error per invalid field, each
// naming the field's path (for example `services[1].revisions["x"][0]`),
// joined with errors.Join; nil when the configuration is usable.
func (c Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if !bus.AgentIDPattern.MatchString(c.ID) {
		bad("id", "must match %s, got %q", bus.AgentIDPattern, c.ID)
	}
	for k := range c.Labels {
		if k == "" {
			bad("labels", "a label key is empty")
		}
	}
	if c.NATS == "" {
		bad("nats", "is required (e.g. nats://127.0.0.1:4222)")
	}
	if c.StateDir == "" {
		bad("stateDir", "is required")
	}
	if c.Admin != "" {
		if err := hostPort(c.Admin); err != nil {
			bad("admin", "%v", err)
		}
	}
	if c.Metrics.QueueSeconds < 0 {
		bad("metrics.queueSeconds", "must not be negative, got %d", c.Metrics.QueueSeconds)
	}
	if len(c.Services) == 0 {
		bad("services", "at least one service is required")
	}
	names := map[string]int{}
	listens := map[string]int{}
	for i, s := range c.Services {
		p := "services[" + strconv.Itoa(i) + "]"
		if !rollout.ValidName(s.Name) {
			bad(p+".name", "must be a DNS label (lower-case letters, digits and '-', 1-63 characters), got %q", s.Name)
		} else if j, dup := names[s.Name]; dup {
			bad(p+".name", "%q is already used by services[%d]", s.Name, j)
		} else {
			names[s.Name] = i
		}
		if err := hostPort(s.Listen); err != nil {
			bad(p+".listen", "%v", err)
		} else if j, dup := listens[s.Listen]; dup && !ephemeral(s.Listen) {
			bad(p+".listen", "%q is already used by services[%d]", s.Listen, j)
		} else {
			listens[s.Listen] = i
		}
		if len(s.Revisions) == 0 && s.Run == nil {
			bad(p+".revisions", "at least one revision with upstream addresses is required (or a run section)")
		}
		for _, rev := range s.RevisionNames() {
			rp := fmt.Sprintf("%s.revisions[%q]", p, rev)
			if _, err := revision.Parse(rev); err != nil {
				bad(rp, "%v", err)
			}
			addrs := s.Revisions[rev]
			if len(addrs) == 0 {
				bad(rp, "at least one upstream address is required")
			}
			for k, a := range addrs {
				if err := hostPort(a); err != nil {
					bad(rp+"["+strconv.Itoa(k)+"]", "%v", err)
				}
			}
		}
		for k, st := range s.ErrorStatuses {
			if !meter.ValidStatus(st) {
				bad(p+".errorStatuses["+strconv.Itoa(k)+"]", "%q is neither a status class like \"5xx\" nor a status code 100-599", st)
			}
		}
		if s.Run != nil {
			validRun(p+".run", *s.Run, bad)
		}
		validFlags(p+".flags", s.Flags, bad)
		switch {
		case s.Initial == "":
			bad(p+".initial", "is required: the revision served until a desired state is applied")
		case s.Revisions[s.Initial] != nil:
		case s.Run == nil:
			bad(p+".initial", "%q is not one of the service's revisions", s.Initial)
		default:
			if _, err := revision.Parse(s.Initial); err != nil {
				bad(p+".initial", "%v", err)
			}
		}
	}
	return errors.Join(errs...)
}

// hopHeaders are removed by the proxy before forwarding, so they cannot
// carry a variant to the upstream.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func validFlags(p string, flags []Flag, bad func(path, format string, args ...any)) {
	keys := map[string]int{}
	headers := map[string]int{}
	for i, f := range flags {
		fp := p + "[" + strconv.Itoa(i) + "]"
		if f.Key == "" {
			bad(fp+".key", "is required")
		} else if err := store.CheckKey(f.Key); err != nil {
			bad(fp+".key", "%v", err)
		} else if j, dup := keys[f.Key]; dup {
			bad(fp+".key", "%q is already used by %s[%d]", f.Key, p, j)
		} else {
			keys[f.Key] = i
		}
		if f.Environment == "" {
			bad(fp+".environment", "is required")
		} else if err := store.CheckEnvironment(f.Environment); err != nil {
			bad(fp+".environment", "%v", err)
		}
		tk := f.TargetingKey
		switch {
		case (tk.Header == "") == (tk.Cookie == ""):
			bad(fp+".targetingKey", "set exactly one of header and cookie")
		case tk.Header != "" && !httpguts.ValidHeaderFieldName(tk.Header):
			bad(fp+".targetingKey.header", "%q is not a valid header name", tk.Header)
		case tk.Cookie != "" && !httpguts.ValidHeaderFieldName(tk.Cookie):
			bad(fp+".targetingKey.cookie", "%q is not a valid cookie name", tk.Cookie)
		}
		hp := fp + ".header"
		switch {
		case f.Header == "" && f.Key == "":
			continue
		case f.Header == "" && !httpguts.ValidHeaderFieldName(FlagHeaderPrefix+f.Key):
			bad(hp, "is required: the default %q is not a valid header name", FlagHeaderPrefix+f.Key)
			continue
		case f.Header != "" && !httpguts.ValidHeaderFieldName(f.Header):
			bad(hp, "%q is not a valid header name", f.Header)
			continue
		}
		h := f.VariantHeader()
		switch {
		case slices.Contains(hopHeaders, h) || h == "Host":
			bad(hp, "%s cannot carry a variant to the upstream", h)
		case tk.Header != "" && http.CanonicalHeaderKey(tk.Header) == h:
			bad(hp, "%s is also the targeting key header", h)
		default:
			if j, dup := headers[h]; dup {
				bad(hp, "%s is already used by %s[%d]", h, p, j)
			} else {
				headers[h] = i
			}
		}
	}
}

var (
	placeholder = regexp.MustCompile(`\{[a-z]+\}`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// reservedEnv are set by the agent for every instance.
var reservedEnv = []string{"PATH", "PORT", "SLUICE_SERVICE", "SLUICE_REVISION", "SLUICE_INSTANCE"}

func validRun(p string, r Run, bad func(path, format string, args ...any)) {
	if r.Instances < 0 || r.Instances > MaxInstances {
		bad(p+".instances", "must be 1-%d, got %d", MaxInstances, r.Instances)
	}
	words := func(field string, list []string) {
		for i, w := range list {
			wp := p + "." + field + "[" + strconv.Itoa(i) + "]"
			if field == "command" && w == "" {
				bad(wp, "is empty")
			}
			for _, ph := range placeholder.FindAllString(w, -1) {
				switch ph {
				case PlaceholderPort, PlaceholderEntrypoint, PlaceholderDir:
				default:
					bad(wp, "unknown placeholder %s; want {port}, {entrypoint} or {dir}", ph)
				}
			}
		}
	}
	words("command", r.Command)
	words("args", r.Args)
	for _, k := range slices.Sorted(maps.Keys(r.Env)) {
		switch {
		case !envName.MatchString(k):
			bad(p+".env", "%q is not a valid environment variable name", k)
		case slices.Contains(reservedEnv, k):
			bad(p+".env", "%s is set by the agent and cannot be overridden", k)
		}
	}
	pr := r.Readiness
	if pr.HTTPGet != "" && pr.TCP {
		bad(p+".readiness", "set one of httpGet and tcp, not both")
	}
	if pr.HTTPGet != "" && !strings.HasPrefix(pr.HTTPGet, "/") {
		bad(p+".readiness.httpGet", "%q must be a path starting with /", pr.HTTPGet)
	}
	if pr.FailureThreshold < 0 {
		bad(p+".readiness.failureThreshold", "must not be negative, got %d", pr.FailureThreshold)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"readiness.period", pr.Period}, {"readiness.timeout", pr.Timeout},
		{"startupTimeout", r.StartupTimeout}, {"drain", r.Drain}, {"stopTimeout", r.StopTimeout},
		{"restartBackoff.initial", r.RestartBackoff.Initial}, {"restartBackoff.max", r.RestartBackoff.Max},
	} {
		if d.v < 0 {
			bad(p+"."+d.name, "must not be negative, got %s", d.v)
		}
	}
	if r.RestartBackoff.Max > 0 && r.RestartBackoff.Max < r.RestartBackoff.Initial {
		bad(p+".restartBackoff.max", "%s is below initial %s", r.RestartBackoff.Max, r.RestartBackoff.Initial)
	}
}

// hostPort accepts "host:port" with a numeric port (0 allowed, meaning any
// free port, for tests).
func hostPort(s string) error {
	if s == "" {
		return errors.New("is required as host:port")
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has port %q, want 0-65535", s, port)
	}
	return nil
}

func ephemeral(s string) bool {
	_, port, _ := net.SplitHostPort(s)
	return port == "0"
}
