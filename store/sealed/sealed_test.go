package sealed

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func newBox(t *testing.T) *Box {
	t.Helper()
	b, err := New(newKeyBytes())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newKeyBytes() []byte {
	k := make([]byte, KeySize)
	_, _ = rand.Read(k)
	return k
}

func TestSealOpen(t *testing.T) {
	b := newBox(t)
	type rec struct{ Token string }
	s, err := b.Seal([]byte("bucket\x00key"), rec{"secret-token-value"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte("secret-token-value")) || s[0] != formatV2 {
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
	if err := b.Open([]byte("bucket\x00key"), append([]byte{9}, s[1:]...), &got); err == nil || !strings.Contains(err.Error(), "unknown format") {
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

// sealV1 seals as the broker did before key rotation: format byte 1, no key id.
func sealV1(t *testing.T, raw, where []byte, v any) []byte {
	t.Helper()
	b, err := New(raw)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(v)
	out := []byte{formatV1}
	return b.current.aead.Seal(out, nil, plain, additionalData([]byte{formatV1}, where))
}

func TestKeyRing(t *testing.T) {
	type rec struct{ Token string }
	oldKey, newKey := newKeyBytes(), newKeyBytes()
	where := []byte("bucket\x00key")
	oldBox, _ := New(oldKey)
	ring, err := New(newKey, oldKey, newKey) // duplicates are ignored
	if err != nil {
		t.Fatal(err)
	}
	if ring.CurrentKeyID() != FormatKeyID(KeyID(newKey)) || len(ring.all) != 2 {
		t.Fatalf("ring: current %s, %d keys", ring.CurrentKeyID(), len(ring.all))
	}
	byOld, _ := oldBox.Seal(where, rec{"old"})
	legacy := sealV1(t, oldKey, where, rec{"legacy"})
	for name, s := range map[string][]byte{"v2 under the previous key": byOld, "v1 (before rotation)": legacy} {
		var got rec
		if err := ring.Open(where, s, &got); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if ring.Current(s) {
			t.Errorf("%s reported current", name)
		}
		resealed, err := ring.Reseal(where, s)
		if err != nil {
			t.Fatalf("%s: reseal: %v", name, err)
		}
		if !ring.Current(resealed) {
			t.Errorf("%s: resealed value is not current", name)
		}
		onlyNew, _ := New(newKey)
		var again rec
		if err := onlyNew.Open(where, resealed, &again); err != nil || again != got {
			t.Errorf("%s: resealed value does not open with the new key alone: %v %+v", name, err, again)
		}
		if _, err := ring.Reseal([]byte("elsewhere"), s); err == nil {
			t.Errorf("%s: reseal for another location succeeded", name)
		}
	}
	byNew, _ := ring.Seal(where, rec{"new"})
	var got rec
	if err := oldBox.Open(where, byNew, &got); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("the old key alone opened a value sealed by the new one: %v", err)
	}
	// The key id is authenticated: relabelling a value with another id fails.
	relabelled := bytes.Clone(byOld)
	binary.BigEndian.PutUint32(relabelled[1:], KeyID(newKey))
	if err := ring.Open(where, relabelled, &got); err == nil {
		t.Errorf("a value relabelled with another key id opened")
	}
	if _, err := New(newKey, oldKey[:8]); err == nil || !strings.Contains(err.Error(), "previous key 1") {
		t.Errorf("a short previous key: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	a, b := newKeyBytes(), newKeyBytes()
	keys, err := ParseKeys(base64.StdEncoding.EncodeToString(a) + ", ," + base64.RawURLEncoding.EncodeToString(b))
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[0], a) || !bytes.Equal(keys[1], b) {
		t.Fatalf("ParseKeys: %v %d", err, len(keys))
	}
	if _, err := ParseKeys("x," + base64.StdEncoding.EncodeToString(a)); err == nil || !strings.Contains(err.Error(), "key 1") {
		t.Fatalf("bad entry: %v", err)
	}
}
