package proxy

import (
	"fmt"
	"testing"
)

// TestBearerCache: every token gets exactly its own header value, also when
// tokens collide in a slot and replace each other, and a warm token's value
// is built once.
func TestBearerCache(t *testing.T) {
	c := newBearerCache()
	for round := range 3 {
		for i := range 4 * bearerSlots {
			tok := fmt.Sprintf("token-%d", i)
			if got := c.header(tok); len(got) != 1 || got[0] != "Bearer "+tok {
				t.Fatalf("round %d: header(%q) = %q", round, tok, got)
			}
		}
	}
	c.header("warm")
	if n := testing.AllocsPerRun(100, func() { c.header("warm") }); n != 0 {
		t.Errorf("a warm token allocates %v times", n)
	}
}
