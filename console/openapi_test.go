package console

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestOpenAPIDescribesEveryRoute keeps docs/openapi.yaml and the API's
// routes in step: every route is described with its method, and nothing
// described is missing.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	src, err := os.ReadFile("routes.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(doc, &spec); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	routes := regexp.MustCompile(`"(GET|POST|DELETE) (/api/v1/[^"]*)"`).FindAllStringSubmatch(string(src), -1)
	if len(routes) < 20 {
		t.Fatalf("found only %d API routes in routes.go", len(routes))
	}
	seen := map[string]bool{}
	for _, r := range routes {
		method, path := strings.ToLower(r[1]), r[2]
		seen[method+" "+path] = true
		ops, ok := spec.Paths[path]
		if !ok {
			t.Errorf("%s %s is not in docs/openapi.yaml", r[1], path)
			continue
		}
		if _, ok := ops[method]; !ok {
			t.Errorf("docs/openapi.yaml describes %s but not its %s", path, r[1])
		}
	}
	for path, ops := range spec.Paths {
		for method := range ops {
			if !seen[method+" "+path] {
				t.Errorf("docs/openapi.yaml describes %s %s, which the console does not serve", method, path)
			}
		}
	}
}
