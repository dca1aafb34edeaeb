package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/embedded"
)

// TestRotateKeyCommand: `broker rotate-key` re-seals an embedded store
// written with the old key, after which the new key alone opens it.
func TestRotateKeyCommand(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(oldKey)
	_, _ = rand.Read(newKey)
	s, err := embedded.Open(embedded.Options{Dir: dir, Key: oldKey})
	if err != nil {
		t.Fatal(err)
	}
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	if _, err := s.PutConnection(context.Background(), broker.Connection{Key: k, Tokens: broker.Tokens{AccessToken: "at"}}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	env := map[string]string{
		"BROKER_AUTH_HS256_SECRET":        "0123456789abcdef0123456789abcdef",
		"BROKER_DATA_DIR":                 dir,
		"BROKER_ENCRYPTION_KEY":           base64.StdEncoding.EncodeToString(newKey),
		"BROKER_ENCRYPTION_PREVIOUS_KEYS": base64.StdEncoding.EncodeToString(oldKey),
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"rotate-key"}, func(k string) string { return env[k] }, &out, &errOut); err != nil {
		t.Fatalf("rotate-key: %v\n%s", err, errOut.String())
	}
	// The background pass may race the command's own; together they
	// re-seal both records (the connection and the key marker).
	if !strings.HasPrefix(out.String(), "re-sealed ") {
		t.Fatalf("output %q", out.String())
	}
	s, err = embedded.Open(embedded.Options{Dir: dir, Key: newKey})
	if err != nil {
		t.Fatalf("new key alone after rotate-key: %v", err)
	}
	defer s.Close()
	if c, err := s.GetConnection(context.Background(), k); err != nil || c.Tokens.AccessToken != "at" {
		t.Fatalf("connection after rotate-key: %v", err)
	}
}
