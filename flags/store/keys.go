package store

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyBytes bounds a flag key (UTF-8 bytes).
const MaxKeyBytes = 256

// EvaluatorsKey is the reserved KV key holding the environment's shared
// $evaluators object. No flag key encodes to it: it contains "/", which
// neither encoding below produces.
const EvaluatorsKey = "sluice/evaluators"

// encodedPrefix starts every encoded key. A plain key never contains "=".
const encodedPrefix = "="

// plainKey is a flag key stored as it is: letters, digits, "_", "-" and
// single dots between them (a dot is a NATS subject separator, so a key may
// not start or end with one or contain two in a row).
var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// ErrInvalidKey is returned for a flag key the store does not accept: empty,
// longer than MaxKeyBytes, not UTF-8, or containing control characters.
var ErrInvalidKey = errors.New("invalid flag key")

// CheckKey reports whether key can name a flag. flagd accepts any string;
// the store refuses only the empty string, invalid UTF-8, control
// characters and keys longer than MaxKeyBytes.
func CheckKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: must not be empty", ErrInvalidKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidKey, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidKey)
	case strings.IndexFunc(key, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %q contains a control character", ErrInvalidKey, key)
	}
	return nil
}

// EncodeKey maps a flag key to its KV key, reversibly. Keys made of
// letters, digits, "_", "-" and inner single dots (new-checkout,
// checkout.v2) are stored as they are; any other key becomes "=" followed
// by the unpadded base64url encoding of its UTF-8 bytes ("new ui" →
// "=bmV3IHVp"). A plain key never contains "=", so the two forms cannot
// collide, and neither contains "/", so they never collide with
// EvaluatorsKey.
func EncodeKey(key string) string {
	if plainKey.MatchString(key) {
		return key
	}
	return encodedPrefix + base64.RawURLEncoding.EncodeToString([]byte(key))
}

// DecodeKey reverses EncodeKey. ok is false for a KV key that EncodeKey
// cannot produce (such as EvaluatorsKey, or a key written by another tool).
func DecodeKey(kvKey string) (key string, ok bool) {
	if plainKey.MatchString(kvKey) {
		return kvKey, true
	}
	rest, found := strings.CutPrefix(kvKey, encodedPrefix)
	if !found {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return "", false
	}
	key = string(b)
	if plainKey.MatchString(key) || CheckKey(key) != nil {
		return "", false // not what EncodeKey produces
	}
	return key, true
}
