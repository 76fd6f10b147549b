package compose

import (
	"fmt"
	"path"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/sluicehq/sluice/agent/config"
)

// agentConfig loads the configuration an agent service runs with: the file
// bind-mounted at the path its --config flag names.
func (c *checker) agentConfig(svc types.ServiceConfig, args []string) (config.Config, types.ServiceVolumeConfig, error) {
	target := flagValue(args, "config")
	if target == "" {
		return config.Config{}, types.ServiceVolumeConfig{}, fmt.Errorf("the agent gets no --config")
	}
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeBind && path.Clean(v.Target) == path.Clean(target) {
			cfg, err := config.Load(v.Source)
			return cfg, v, err
		}
	}
	return config.Config{}, types.ServiceVolumeConfig{}, fmt.Errorf("--config %s is not a bind-mounted file", target)
}

// checkAgent checks an agent service's configuration file: it loads with
// agent/config, is mounted read-only, keeps its state on a volume, names
// services of the project that the agent depends on, on ports they listen
// on, and routes each revision
// to the services that really are that revision (their --revision flag).
func (c *checker) checkAgent(where string, svc types.ServiceConfig, args []string) {
	cfg, mount, err := c.agentConfig(svc, args)
	if err != nil {
		c.add(where, "agent configuration: %v", err)
		return
	}
	if !mount.ReadOnly {
		c.add(where, "the agent configuration %s should be mounted read-only", c.rel(mount.Source))
	}
	file := c.rel(mount.Source)
	onVolume := false
	for _, v := range svc.Volumes {
		t := path.Clean(v.Target)
		if v.Type == types.VolumeTypeVolume && (cfg.StateDir == t || strings.HasPrefix(path.Clean(cfg.StateDir), t+"/")) {
			onVolume = true
		}
	}
	if !onVolume {
		c.add(file, "stateDir %s is not on a named volume of service %q: applied routing is lost when the container is re-created", cfg.StateDir, svc.Name)
	}
	for _, u := range strings.Split(cfg.NATS, ",") {
		c.checkAddress(file, svc, "nats", strings.TrimSpace(u))
	}
	if cfg.Admin != "" {
		c.checkAddress(file, svc, "admin", cfg.Admin)
	}
	for i, s := range cfg.Services {
		c.checkAddress(file, svc, fmt.Sprintf("services[%d].listen", i), s.Listen)
		for _, rev := range s.RevisionNames() {
			for k, addr := range s.Revisions[rev] {
				what := fmt.Sprintf("services[%d].revisions[%q][%d]", i, rev, k)
				c.checkAddress(file, svc, what, addr)
				host, _, ok := splitAddress(addr)
				target, isService := c.project.Services[host]
				if !ok || !isService {
					continue
				}
				if served := flagValue(c.args(target, c.built[host]), "revision"); served != "" && served != rev {
					c.add(file, "%s: %s routes revision %s to service %q, which serves revision %s", what, addr, rev, host, served)
				}
			}
		}
	}
}
