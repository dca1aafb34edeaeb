package vaultstore_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
)

// fakeKubernetes is the one Kubernetes API call Vault's kubernetes auth
// makes: TokenReview. It accepts every token it is asked about as the
// service account tokenbroker/broker, and records them.
type fakeKubernetes struct {
	mu       sync.Mutex
	reviewed []string
}

func (k *fakeKubernetes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.NotFound(w, r)
		return
	}
	var review struct {
		Spec struct {
			Token string `json:"token"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	k.reviewed = append(k.reviewed, review.Spec.Token)
	k.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprint(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{
		"authenticated":true,"user":{"username":"system:serviceaccount:tokenbroker:broker","uid":"sa-uid-1"}}}`)
}

func (k *fakeKubernetes) sawToken(jwt string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Contains(k.reviewed, jwt)
}

// serviceAccountJWT is a service account token as Kubernetes issues them
// (legacy claims). Vault checks its claims, and asks TokenReview whether it
// is valid; without pem_keys it does not check the signature itself.
func serviceAccountJWT(t *testing.T, key *ecdsa.PrivateKey, serial int) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:tokenbroker:broker",
		"kubernetes.io/serviceaccount/namespace": "tokenbroker",
		"kubernetes.io/serviceaccount/service-account.name": "broker",
		"kubernetes.io/serviceaccount/service-account.uid":  "sa-uid-1",
		"jti": fmt.Sprint(serial),
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Kubernetes auth end to end: login with the mounted token, a store working
// on the resulting token, and, when that token reaches its max TTL, a new
// login that reads the token file again (kubelet rotates projected tokens).
func TestKubernetesAuth(t *testing.T) {
	t.Parallel()
	e := startVault(t)
	ctx := t.Context()
	k8s := &fakeKubernetes{}
	api8s := httptest.NewServer(k8s)
	t.Cleanup(api8s.Close)

	mount := "kubernetes-test"
	if err := e.root.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatalf("enable kubernetes auth: %v", err)
	}
	if _, err := e.root.Logical().WriteWithContext(ctx, "auth/"+mount+"/config", map[string]any{
		"kubernetes_host":      api8s.URL,
		"disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatalf("configure kubernetes auth: %v", err)
	}
	prefix := freshPrefix()
	if err := e.root.Sys().PutPolicyWithContext(ctx, prefix, policyFor(t, prefix)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/broker", map[string]any{
		"bound_service_account_names":      "broker",
		"bound_service_account_namespaces": "tokenbroker",
		"token_policies":                   prefix,
		"token_ttl":                        "3s",
		"token_max_ttl":                    "4s",
	}); err != nil {
		t.Fatalf("create role: %v", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	first := serviceAccountJWT(t, key, 1)
	if err := os.WriteFile(tokenFile, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	loggedIn := time.Now()
	client := e.client(t, vaultstore.ClientOptions{Kubernetes: &vaultstore.KubernetesAuth{
		Role: "broker", ServiceAccountTokenPath: tokenFile, MountPath: mount,
	}})
	if !k8s.sawToken(first) {
		t.Fatal("login did not present the mounted service account token")
	}
	s := newStore(t, vaultstore.Options{Client: client, Prefix: prefix})
	k := broker.Key{Account: "acme", Vendor: "confluence"}
	c := put(t, s, conn(k, "k8s"))

	// kubelet rotates the token; the next login must read the new one.
	rotated := serviceAccountJWT(t, key, 2)
	if err := os.WriteFile(tokenFile, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	for !k8s.sawToken(rotated) {
		if time.Since(loggedIn) > 15*time.Second {
			t.Fatal("no login with the rotated service account token 15 s after a token with a 4 s max TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Past the first Vault token's max TTL, only a new one can work.
	time.Sleep(time.Until(loggedIn.Add(5 * time.Second)))
	if got := get(t, s, k); got.Version != c.Version {
		t.Fatalf("read version %d after re-login, want %d", got.Version, c.Version)
	}
}
