package vaultstore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/broker"
)

// A server in front of Vault that answers with a non-JSON page repeating the
// request (some proxies' error pages do): the error keeps the status and
// drops the page, and no secret of the request reaches the message.
func TestErrorsDropEchoedBodies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>upstream failed for " + r.Header.Get("X-Vault-Token") + " " + string(body) + "</html>"))
	}))
	defer srv.Close()

	client, err := newAPIClient(ClientOptions{Addr: srv.URL, Token: "x", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken("hvs.vault-token-value")
	s, err := New(Options{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	c := broker.Connection{
		Key:     broker.Key{Account: "acme", Vendor: "servicenow"},
		Tokens:  broker.Tokens{AccessToken: "access-token-value", RefreshToken: "refresh-token-value"},
		Version: 3,
	}
	_, err = s.PutConnection(context.Background(), c)
	if err == nil {
		t.Fatal("PutConnection succeeded against a failing server")
	}
	var ve *VaultError
	if !errors.As(err, &ve) || ve.StatusCode != http.StatusBadGateway {
		t.Errorf("error %v: want a *VaultError with status 502", err)
	}
	for _, secret := range []string{"hvs.vault-token-value", "access-token-value", "refresh-token-value", "<html>"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error repeats %q: %v", secret, err)
		}
	}
}

// Vault's own error strings are kept, minus any secret the call involved.
func TestSafeErrorRedacts(t *testing.T) {
	err := safeError(&api.ResponseError{
		HTTPMethod: "PUT", URL: "http://vault:8200/v1/secret/data/x?version=2", StatusCode: 400,
		Errors: []string{"bad value s3cr3t-token", "second"},
	}, "s3cr3t-token", "")
	want := "vault: PUT /v1/secret/data/x?version=2: HTTP 400: bad value <redacted>; second"
	if err.Error() != want {
		t.Errorf("got  %q\nwant %q", err, want)
	}
	if !errors.Is(safeError(context.DeadlineExceeded), context.DeadlineExceeded) {
		t.Error("a deadline is no longer errors.Is context.DeadlineExceeded")
	}
}
