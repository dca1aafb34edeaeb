package webhook

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
)

// GlobalEndpoint is a receiver the operator configures
// (BROKER_WEBHOOK_ENDPOINTS_FILE): it gets the events of every account. It
// is not in the store and not reachable through the per-account API; its
// queue is, under the id "global_<name>", so that its deliveries share the
// outbox, the leases and the retries of the per-account endpoints.
type GlobalEndpoint struct {
	// Name is the endpoint's label in metrics and logs.
	Name        string
	URL         string
	Description string
	// Events it receives; empty is every type.
	Events []broker.EventType
	// Secret signs deliveries; PreviousSecret, while set, signs them too,
	// so that receivers can switch during a rotation.
	Secret, PreviousSecret config.Secret
}

// globalPrefix starts every global endpoint's queue id; per-account ids
// start with "ep_", so the two never meet.
const globalPrefix = "global_"

// ID is the endpoint's queue id in the outbox.
func (g GlobalEndpoint) ID() string { return globalPrefix + g.Name }

// accountLabel is the endpoint label of every per-account endpoint's
// deliveries: their number is unbounded, global ones are named by the
// operator.
const accountLabel = "account"

// globalFile is BROKER_WEBHOOK_ENDPOINTS_FILE, decoded strictly.
type globalFile struct {
	Endpoints []globalEntry `yaml:"endpoints"`
}

type globalEntry struct {
	Name        string   `yaml:"name"`
	URL         string   `yaml:"url"`
	Description string   `yaml:"description"`
	Events      []string `yaml:"events"`
	// Exactly one of the three gives the secret: inline (the file is then
	// a secret itself), a file (a mounted Kubernetes Secret) or an
	// environment variable.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
	// At most one of these gives the previous secret during a rotation.
	PreviousSecret     string `yaml:"previous_secret"`
	PreviousSecretFile string `yaml:"previous_secret_file"`
	PreviousSecretEnv  string `yaml:"previous_secret_env"`
}

var (
	globalName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	goType     = regexp.MustCompile(` in type \S+`)
)

// LoadGlobalEndpoints reads the endpoints file at path: secret_env names
// are looked up with lookupEnv, secret files are read from disk, and URLs
// are checked as CheckURL does. Errors name the endpoint and the field on
// one line, never a secret.
func LoadGlobalEndpoints(path string, lookupEnv func(string) (string, bool), allowPrivate bool) ([]GlobalEndpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err // it names the path
	}
	eps, err := ParseGlobalEndpoints(b, lookupEnv, allowPrivate)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return eps, nil
}

// ParseGlobalEndpoints decodes and checks an endpoints file; see
// LoadGlobalEndpoints.
func ParseGlobalEndpoints(b []byte, lookupEnv func(string) (string, bool), allowPrivate bool) ([]GlobalEndpoint, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f globalFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: it needs an endpoints list")
		}
		// yaml.v3 lists several errors on several lines and names Go
		// types; start-up errors are one line in the file's terms.
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, errors.New(goType.ReplaceAllString(strings.Join(te.Errors, "; "), ""))
		}
		return nil, err
	}
	if len(f.Endpoints) == 0 {
		return nil, errors.New("the file lists no endpoints")
	}
	out := make([]GlobalEndpoint, 0, len(f.Endpoints))
	seen := map[string]bool{}
	for i, e := range f.Endpoints {
		g, err := compileGlobal(e, lookupEnv, allowPrivate)
		where := fmt.Sprintf("endpoint %d", i+1)
		if e.Name != "" {
			where += fmt.Sprintf(" (%s)", e.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if seen[g.Name] {
			return nil, fmt.Errorf("%s: name is used by another endpoint", where)
		}
		seen[g.Name] = true
		out = append(out, g)
	}
	return out, nil
}

func compileGlobal(e globalEntry, lookupEnv func(string) (string, bool), allowPrivate bool) (GlobalEndpoint, error) {
	g := GlobalEndpoint{Name: e.Name, URL: e.URL, Description: e.Description}
	switch {
	case !globalName.MatchString(e.Name):
		return g, errors.New("name must be 1 to 63 lower-case letters, digits, - or _, starting with a letter")
	case e.Name == accountLabel:
		return g, fmt.Errorf("name %q is reserved: it labels the per-account endpoints in metrics", accountLabel)
	}
	if _, err := CheckURL(e.URL, allowPrivate); err != nil {
		if !allowPrivate {
			return g, fmt.Errorf("%w (BROKER_WEBHOOK_ALLOW_PRIVATE_URLS admits http and private addresses)", err)
		}
		return g, err
	}
	for _, t := range e.Events {
		if !slices.Contains(broker.EventTypes(), broker.EventType(t)) {
			return g, fmt.Errorf("events: unknown event type %q (want one of %v)", t, broker.EventTypes())
		}
		if !slices.Contains(g.Events, broker.EventType(t)) {
			g.Events = append(g.Events, broker.EventType(t))
		}
	}
	sec, err := secretFrom("secret", e.Secret, e.SecretFile, e.SecretEnv, lookupEnv)
	if err != nil {
		return g, err
	}
	if sec == "" {
		return g, errors.New("one of secret, secret_file or secret_env is required")
	}
	prev, err := secretFrom("previous_secret", e.PreviousSecret, e.PreviousSecretFile, e.PreviousSecretEnv, lookupEnv)
	if err != nil {
		return g, err
	}
	g.Secret, g.PreviousSecret = config.Secret(sec), config.Secret(prev)
	return g, nil
}

// secretFrom reads the one source of a secret that is set; "" when none.
func secretFrom(field, inline, file, env string, lookupEnv func(string) (string, bool)) (string, error) {
	n := 0
	for _, s := range []string{inline, file, env} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return "", fmt.Errorf("set only one of %s, %s_file and %s_env", field, field, field)
	}
	var v, from string
	switch {
	case inline != "":
		v, from = inline, field
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", field, err)
		}
		v, from = strings.TrimSpace(string(b)), fmt.Sprintf("%s_file %s", field, file)
	case env != "":
		var ok bool
		if v, ok = lookupEnv(env); !ok || strings.TrimSpace(v) == "" {
			return "", fmt.Errorf("%s_env: the variable %s is not set", field, env)
		}
		v, from = strings.TrimSpace(v), fmt.Sprintf("%s_env %s", field, env)
	default:
		return "", nil
	}
	if err := checkSecret(v); err != nil {
		return "", fmt.Errorf("%s: %w", from, err)
	}
	return v, nil
}

// checkSecret accepts a Standard Webhooks secret: whsec_ and the base64 of
// 24 to 64 random bytes (the spec's bounds). The value is never echoed.
func checkSecret(s string) error {
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return errors.New("the secret must be whsec_ followed by base64 (e.g. `echo whsec_$(openssl rand -base64 32)`)")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return errors.New("the secret after whsec_ is not standard base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return fmt.Errorf("the secret decodes to %d bytes; want 24 to 64", len(key))
	}
	return nil
}

// endpoint is the Endpoint form the deliverer signs with. The previous
// secret signs for as long as it is configured (zero PreviousSecretUntil).
func (g GlobalEndpoint) endpoint() Endpoint {
	return Endpoint{ID: g.ID(), URL: g.URL, Description: g.Description,
		Secret: g.Secret.Reveal(), PreviousSecret: g.PreviousSecret.Reveal()}
}

// wants reports whether the endpoint takes events of type t.
func (g GlobalEndpoint) wants(t broker.EventType) bool {
	return len(g.Events) == 0 || slices.Contains(g.Events, t)
}
