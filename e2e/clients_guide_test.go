package e2e_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// goBlock is a fenced Go block of docs/clients.md.
var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// TestClientsGuideQuotesTheTests: every Go block of docs/clients.md is
// quoted from this file, so the guide shows set-ups that the tests run.
func TestClientsGuideQuotesTheTests(t *testing.T) {
	doc, err := os.ReadFile("../docs/clients.md")
	if err != nil {
		t.Fatal(err)
	}
	src := map[string]string{}
	for _, f := range []string{"clients_test.go", "pagination_test.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src[f] = string(b)
	}
	blocks := goBlock.FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 3 {
		t.Fatalf("docs/clients.md has %d Go blocks, want the go-atlassian v1 and v2 set-ups and the ServiceNow call", len(blocks))
	}
	for _, b := range blocks {
		quoted := false
		for _, s := range src {
			quoted = quoted || strings.Contains(s, b[1])
		}
		if !quoted {
			t.Errorf("docs/clients.md shows code that no test runs:\n%s", b[1])
		}
	}
}
