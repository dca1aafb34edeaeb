package setting

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// Redacted stands in for a secret wherever a value could be printed, encoded
// or logged: a Config is routinely dumped at start-up and in bug reports, and
// a single forgotten field there would leak a credential.
const Redacted = "<secret>"

// Secret is a configuration value that must never be shown: every way Go
// prints, encodes or logs a value yields "<secret>" (an empty Secret stays
// empty, so "not set" remains visible). Reveal is the one way to read it.
type Secret string

// Reveal returns the value, for the code that hands it to a library.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString covers %#v, which would otherwise print the underlying string.
func (s Secret) GoString() string { return s.String() }

// Format covers every other verb too (%q, %x, %d ...): fmt would otherwise
// hex-dump or quote the raw string for some of them.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText covers encoders that know only encoding.TextMarshaler (slog's
// text handler, TOML, XML, ...).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
