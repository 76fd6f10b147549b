// Package config loads and validates the edge agent's YAML configuration.
//
// A configuration names the agent, the NATS server it takes desired routing
// from, the directory it persists applied state to, the admin address, how
// many seconds of metrics it keeps while NATS is away, and for every
// service it fronts: the listen address, the revision served before any
// desired state arrives, the upstream addresses of every revision it can
// route to, and which upstream statuses count as errors in its metrics.
// Unknown fields are errors, so a typo never silently drops a setting.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/revision"
	"github.com/sluicehq/sluice/core/rollout"
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
	// applied; it must be one of Revisions.
	Initial string `yaml:"initial"`
	// Revisions maps each immutable revision to its upstream host:port
	// addresses, used round-robin.
	Revisions map[string][]string `yaml:"revisions"`
	// ErrorStatuses are the upstream answers counted as errors in the
	// metrics: status classes ("5xx") or codes ("429"). Empty means
	// ["5xx"]. Upstreams that cannot be reached are always errors.
	ErrorStatuses []string `yaml:"errorStatuses"`
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
		if len(s.Revisions) == 0 {
			bad(p+".revisions", "at least one revision with upstream addresses is required")
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
		switch {
		case s.Initial == "":
			bad(p+".initial", "is required: the revision served until a desired state is applied")
		case s.Revisions[s.Initial] == nil:
			bad(p+".initial", "%q is not one of the service's revisions", s.Initial)
		}
	}
	return errors.Join(errs...)
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
