package sealed

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
)

func newBox(t *testing.T) *Box {
	t.Helper()
	k := make([]byte, KeySize)
	_, _ = rand.Read(k)
	b, err := New(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	b := newBox(t)
	type rec struct{ Token string }
	s, err := b.Seal([]byte("bucket\x00key"), rec{"secret-token-value"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte("secret-token-value")) || s[0] != formatV1 {
		t.Fatalf("sealed value leaks or lacks its format byte")
	}
	var got rec
	if err := b.Open([]byte("bucket\x00key"), s, &got); err != nil || got.Token != "secret-token-value" {
		t.Fatalf("open: %v %+v", err, got)
	}
	if err := b.Open([]byte("bucket\x00other"), s, &got); err == nil {
		t.Errorf("a value moved to another location opened")
	}
	if err := newBox(t).Open([]byte("bucket\x00key"), s, &got); err == nil {
		t.Errorf("another key opened the value")
	}
	tampered := bytes.Clone(s)
	tampered[len(tampered)-1] ^= 1
	if err := b.Open([]byte("bucket\x00key"), tampered, &got); err == nil {
		t.Errorf("a tampered value opened")
	}
	if err := b.Open([]byte("bucket\x00key"), append([]byte{2}, s[1:]...), &got); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("an unknown format opened: %v", err)
	}
	s2, _ := b.Seal([]byte("bucket\x00key"), rec{"secret-token-value"})
	if bytes.Equal(s, s2) {
		t.Errorf("two seals of one value are equal: the nonce is not random")
	}
}

func TestParseKey(t *testing.T) {
	raw := make([]byte, KeySize)
	_, _ = rand.Read(raw)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if got, err := ParseKey(" " + enc.EncodeToString(raw) + "\n"); err != nil || !bytes.Equal(got, raw) {
			t.Errorf("ParseKey: %v", err)
		}
	}
	short := base64.StdEncoding.EncodeToString(raw[:16])
	for _, bad := range []string{"", "not base64 !", short} {
		_, err := ParseKey(bad)
		if err == nil || (bad != "" && strings.Contains(err.Error(), bad)) {
			t.Errorf("ParseKey(%q): %v", bad, err)
		}
	}
	if _, err := New(raw[:16]); err == nil {
		t.Errorf("New accepted a 16-byte key")
	}
}
