// Package revision parses and validates immutable revision references.
//
// A revision is always pinned to content: "name@sha256:<64 lower-case hex>".
// Mutable references such as "app:latest" or "app:v2", short digests and
// other algorithms are refused, because rolling back to a tag is ambiguous:
// the tag may have moved since it was deployed.
package revision

import (
	"errors"
	"fmt"
	"strings"
)

// Revision is a parsed immutable reference.
type Revision struct {
	// Name is the artifact or image name, e.g. "registry.example.com/shop/cart".
	Name string
	// Digest is the lower-case hex sha256 digest (64 characters).
	Digest string
}

// String renders the canonical "name@sha256:digest" form.
func (r Revision) String() string { return r.Name + "@sha256:" + r.Digest }

// Short renders "name@sha256:<first 12 hex>" for humans.
func (r Revision) Short() string { return r.Name + "@sha256:" + r.Digest[:12] }

// ErrMutable reports a reference without a digest, such as "app:latest".
var ErrMutable = errors.New("mutable reference: a revision must be pinned as name@sha256:<64 hex digest>")

// Parse validates s and returns the revision. The error explains what is
// wrong in words a user can act on; it never panics.
func Parse(s string) (Revision, error) {
	if s == "" {
		return Revision{}, errors.New("revision is empty: want name@sha256:<64 hex digest>")
	}
	name, digest, ok := strings.Cut(s, "@")
	if !ok {
		return Revision{}, fmt.Errorf("%q: %w", s, ErrMutable)
	}
	if err := validName(name); err != nil {
		return Revision{}, fmt.Errorf("%q: %w", s, err)
	}
	algo, hex, ok := strings.Cut(digest, ":")
	if !ok || algo != "sha256" {
		return Revision{}, fmt.Errorf("%q: digest must be sha256:<64 hex>, got %q", s, digest)
	}
	if len(hex) != 64 {
		return Revision{}, fmt.Errorf("%q: sha256 digest must have 64 hex characters, got %d", s, len(hex))
	}
	for i := 0; i < len(hex); i++ {
		c := hex[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return Revision{}, fmt.Errorf("%q: digest has a character that is not lower-case hex at position %d", s, i)
		}
	}
	return Revision{Name: name, Digest: hex}, nil
}

// validName accepts OCI-style repository names, optionally with a registry
// host and port: lower-case alphanumerics and the separators . _ - / and one
// ":" only as part of a host:port prefix. A trailing ":tag" before the digest
// (name:tag@sha256:…) is refused: the digest alone identifies the content,
// and a tag beside it invites the confusion the digest is there to remove.
func validName(name string) error {
	if name == "" {
		return errors.New("name before @ is empty")
	}
	if len(name) > 255 {
		return errors.New("name is longer than 255 characters")
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if p == "" {
			return errors.New("name has an empty path component")
		}
		if i == 0 && len(parts) > 1 && (strings.ContainsAny(p, ".:") || p == "localhost") {
			// registry host[:port]
			host, port, hasPort := strings.Cut(p, ":")
			if host == "" || (hasPort && !allDigits(port)) {
				return fmt.Errorf("registry %q is not host[:port]", p)
			}
			continue
		}
		if strings.Contains(p, ":") {
			return errors.New("name carries a tag; give only name@sha256:<digest>")
		}
		for j := 0; j < len(p); j++ {
			c := p[j]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("name component %q has character %q; use lower-case letters, digits, '.', '_', '-'", p, c)
			}
		}
	}
	return nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
