package config

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the generated table in docs/configuration.md")

const (
	docPath  = "../docs/configuration.md"
	docBegin = "<!-- BEGIN generated from config/settings.go and vendors/*/config.go by `go test ./config -run TestConfigDoc -update`; do not edit -->"
	docEnd   = "<!-- END generated -->"
)

// settingsTable renders the settings as the markdown table of
// docs/configuration.md.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| variable | meaning | default |\n|---|---|---|\n")
	for _, s := range allSettings() {
		desc := s.Description
		if s.isSecret() {
			desc += " **(secret)**"
		}
		def := "none"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		b.WriteString("| `" + s.Env + "` | " + strings.ReplaceAll(desc, "|", `\|`) + " | " + def + " |\n")
	}
	return b.String()
}

// TestConfigDoc keeps the table in docs/configuration.md equal to the
// settings the package reads; -update rewrites it.
func TestConfigDoc(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	before, rest, ok := strings.Cut(doc, docBegin)
	_, after, ok2 := strings.Cut(rest, docEnd)
	if !ok || !ok2 {
		t.Fatalf("%s lacks the markers %q and %q around the settings table", docPath, docBegin, docEnd)
	}
	want := before + docBegin + "\n" + settingsTable() + docEnd + after
	if *update {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if diff := cmp.Diff(strings.Split(want, "\n"), strings.Split(doc, "\n")); diff != "" {
		t.Errorf("%s is stale; run `go test ./config -run TestConfigDoc -update` (-want +got):\n%s", docPath, diff)
	}
}

// TestConfigDocNames: every variable the package reads has a table row, and
// every BROKER_ name anywhere in the doc is one the package reads, so prose
// cannot mention a variable that was renamed or never existed.
func TestConfigDocNames(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	known := map[string]bool{}
	for _, s := range allSettings() {
		known[s.Env] = true
		if !strings.Contains(doc, "\n| `"+s.Env+"` |") {
			t.Errorf("%s has no table row for %s", docPath, s.Env)
		}
	}
	for _, name := range regexp.MustCompile(`BROKER_[A-Z0-9_]*[A-Z0-9]`).FindAllString(doc, -1) {
		if !known[name] {
			t.Errorf("%s names %s, which the config package does not read", docPath, name)
		}
	}
}
