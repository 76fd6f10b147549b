package serve

import (
	"fmt"
	"net/http"
	"strings"
)

// DefaultEnvironment is served when a request names no environment.
const DefaultEnvironment = "dev"

// The headers (gRPC metadata keys) that name an environment. flagd
// providers send their configured selector in the flagd-selector header.
const (
	EnvHeader         = "X-Sluice-Env"
	EnvMetadata       = "Sluice-Env"
	FlagdSelectorName = "Flagd-Selector"
)

// selectorEnvPrefix introduces an environment in a flagd selector.
const selectorEnvPrefix = "env:"

// Environment returns the environment a request names, from any of: the
// X-Sluice-Env header, the Sluice-Env header (gRPC metadata "sluice-env"),
// the Flagd-Selector header, and selector (the deprecated selector field
// of flagd's sync requests; "" elsewhere). A selector is a comma-separated
// list of terms of which exactly one must be "env:<name>". Names given in
// several places must agree. Empty values count as absent; without any,
// it is DefaultEnvironment.
// Errors describe the bad input, for an InvalidArgument or HTTP 400.
func Environment(h http.Header, selector string) (string, error) {
	env, err := namedEnvironment(h, selector)
	if err != nil || env != "" {
		return env, err
	}
	return DefaultEnvironment, nil
}

// namedEnvironment is Environment without the default: "" when the request
// names no environment.
func namedEnvironment(h http.Header, selector string) (string, error) {
	env := ""
	take := func(where, name string) error {
		if !validEnv(name) {
			return fmt.Errorf("%s: %q is not an environment name (letters, digits, '.', '_' and '-', at most 63)", where, name)
		}
		if env != "" && env != name {
			return fmt.Errorf("%s names environment %q, but %q was already chosen", where, name, env)
		}
		env = name
		return nil
	}
	for _, name := range []string{EnvHeader, EnvMetadata} {
		for _, v := range h.Values(name) {
			if v = strings.TrimSpace(v); v == "" {
				continue
			}
			if err := take("header "+name, v); err != nil {
				return "", err
			}
		}
	}
	sels := h.Values(FlagdSelectorName)
	if selector != "" {
		sels = append(sels, selector)
	}
	for _, sel := range sels {
		if strings.TrimSpace(sel) == "" {
			continue
		}
		name, err := selectorEnv(sel)
		if err != nil {
			return "", err
		}
		if err := take(fmt.Sprintf("selector %q", sel), name); err != nil {
			return "", err
		}
	}
	return env, nil
}

// selectorEnv reads the environment of a flagd selector ("env:prod").
func selectorEnv(sel string) (string, error) {
	name := ""
	for _, term := range strings.Split(sel, ",") {
		term = strings.TrimSpace(term)
		n, ok := strings.CutPrefix(term, selectorEnvPrefix)
		if !ok {
			return "", fmt.Errorf("selector %q: Sluice selects an environment with %q, and understands no other selector", sel, selectorEnvPrefix+"<name>")
		}
		if name != "" {
			return "", fmt.Errorf("selector %q names more than one environment", sel)
		}
		name = strings.TrimSpace(n)
	}
	return name, nil
}

func validEnv(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.':
		default:
			return false
		}
	}
	return true
}
