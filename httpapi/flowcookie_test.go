package httpapi

import (
	"net/url"
	"testing"
)

// TestSecureContext: the __Host- cookie is used wherever a browser keeps a
// Secure cookie (https, plain-http loopback), the unprefixed one elsewhere.
func TestSecureContext(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://broker.example.com":        true,
		"http://127.0.0.1:8080":             true,
		"http://127.3.4.5":                  true,
		"http://[::1]:8080":                 true,
		"http://localhost:8080":             true,
		"http://broker.localhost":           true,
		"http://broker.example.com":         false,
		"http://10.0.0.5:8080":              false,
		"http://localhost.example.com":      false,
		"http://[::ffff:127.0.0.1]:8080":    true,
		"http://127.0.0.1.attacker.example": false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := SecureContext(u); got != want {
			t.Errorf("SecureContext(%s) = %v, want %v", raw, got, want)
		}
	}
}
