package app_test

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestOpenAPIMatchesRoutes keeps docs/openapi.yaml and the served routes in
// step: every served route is documented and every documented one served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	raw, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for m := range item {
			if methods[m] {
				documented[strings.ToUpper(m)+" "+param.ReplaceAllString(path, "{}")] = true
			}
		}
	}
	e := testenv.StartBroker(t)
	served := map[string]bool{}
	for _, r := range e.App.Routes() {
		// gin's ":name" and "*name" are OpenAPI's "{name}".
		p := regexp.MustCompile(`[:*][A-Za-z]+`).ReplaceAllString(r.Path, "{}")
		served[r.Method+" "+p] = true
	}
	var missing, extra []string
	for k := range served {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !served[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("served but not in docs/openapi.yaml: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("in docs/openapi.yaml but not served: %v", extra)
	}
	if len(served) < 10 {
		t.Errorf("only %d routes served: the comparison cannot be trusted", len(served))
	}
}
