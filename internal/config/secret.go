package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/yamlx"
)

// redacted is what every Secret prints instead of its value.
const redacted = "<secret>"

// Secret is a string that never prints: fmt (every verb, %#v included),
// encoding/json, encoding.TextMarshaler (so YAML too) and log/slog all show
// "<secret>", or "" when the secret is empty so that "not set" stays visible.
// Reveal returns the value, for the one place that needs it.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// Reveal returns the values of secrets, for the one place that needs them.
func Reveal(secrets ...Secret) []string {
	out := make([]string, len(secrets))
	for i, s := range secrets {
		out[i] = s.Reveal()
	}
	return out
}

// String returns "<secret>", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// Format prints the redacted form for every verb and flag.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalJSON encodes the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText returns the redacted form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue makes log/slog print the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// UnmarshalYAML reads a secret from a YAML scalar; null leaves it empty. The
// error for any other node does not quote the node.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	n = yamlx.Resolve(n)
	switch {
	case n == nil || yamlx.IsNull(n):
		*s = ""
		return nil
	case n.Kind != yaml.ScalarNode:
		return errors.New("a secret must be a single string value, found " + yamlx.KindName(n))
	}
	*s = Secret(n.Value)
	return nil
}
