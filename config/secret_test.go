package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestHideConfigSecrets(t *testing.T) {
	vars := map[string]string{
		"BROKER_AUTH_HS256_SECRET":        "hs256-secret-value-0123456789abcdef",
		"BROKER_ENCRYPTION_KEY":           "c2VjcmV0LWVuY3J5cHRpb24ta2V5LXZhbHVlLTMyYnk=",
		"BROKER_ENCRYPTION_PREVIOUS_KEYS": "cHJldmlvdXMtZW5jcnlwdGlvbi1rZXktdmFsdWUtMzI=",
		"BROKER_REDIS_URL":                "rediss://:redis-password-value@redis.example.com:6380",
		"BROKER_VAULT_ADDR":               "https://vault.example.com",
		"BROKER_VAULT_TOKEN":              "vault-token-value",
		"BROKER_SERVICENOW_CLIENT_ID":     "sn-client",
		"BROKER_SERVICENOW_CLIENT_SECRET": "servicenow-secret-value",
		"BROKER_CONFLUENCE_CLIENT_ID":     "atl-client",
		"BROKER_CONFLUENCE_CLIENT_SECRET": "confluence-secret-value",
	}
	c, err := Load(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	// Only one Vault auth method may be configured, so the AppRole secret is
	// set on the loaded Config directly.
	vars["BROKER_VAULT_APPROLE_SECRET_ID"] = "approle-secret-id-value"
	c.VaultAppRoleSecretID = Secret(vars["BROKER_VAULT_APPROLE_SECRET_ID"])
	// The secrets to look for come from the settings table, so a Secret
	// field added later is covered without touching this test.
	var secrets []string
	for _, s := range allSettings() {
		if s.isSecret() {
			v, ok := vars[s.Env]
			if !ok {
				t.Fatalf("test sets no value for secret %s", s.Env)
			}
			secrets = append(secrets, v)
		}
	}
	secrets = append(secrets, "redis-password-value")

	outputs := map[string]string{
		"%v":              fmt.Sprintf("%v", c),
		"%+v":             fmt.Sprintf("%+v", c),
		"%#v":             fmt.Sprintf("%#v", c),
		"%v of the value": fmt.Sprintf("%v", *c),
		// Verbs that fmt applies to the raw string of a type without
		// a Formatter.
		"%q %x %X %s of a secret": fmt.Sprintf("%q %x %X %s", c.VaultToken, c.VaultToken, c.VaultToken, c.VaultToken),
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(y)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("config", "config", c, "token", c.VaultToken, slog.Any("secret", c.AuthHS256Secret))
		outputs[name] = buf.String()
	}

	// encoding/json escapes < and >.
	unescape := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">")
	for name, out := range outputs {
		out = unescape.Replace(out)
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s output shows secret %q:\n%s", name, s, out)
			}
		}
		// The field must be there, hidden, rather than left out.
		if !strings.Contains(out, redacted) {
			t.Errorf("%s output has no %s:\n%s", name, redacted, out)
		}
	}
}

func TestSecret(t *testing.T) {
	s := Secret("value")
	if s.Reveal() != "value" {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
	var empty Secret
	for _, tc := range []struct{ name, got, want string }{
		{"String", s.String(), redacted},
		{"GoString", s.GoString(), redacted},
		{"%d", fmt.Sprintf("%d", s), redacted},
		{"empty String", empty.String(), ""},
		{"empty %v", fmt.Sprintf("%v", empty), ""},
		{"empty LogValue", empty.LogValue().String(), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if j, _ := json.Marshal(empty); string(j) != `""` {
		t.Errorf("empty MarshalJSON = %s, want \"\"", j)
	}
}
