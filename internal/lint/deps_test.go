package lint

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/bulkstream/bulkstream"

// forbidden lists, per package (import path relative to the module), the
// import path prefixes its non-test files must not import.
var forbidden = map[string][]string{
	"index":              {module + "/", "github.com/nats-io/", "net/http"},
	"ingest":             {module + "/export", module + "/httpapi", module + "/metrics", module + "/cmd", "github.com/nats-io/nats-server", "net/http"},
	"export":             {module + "/ingest", module + "/httpapi", module + "/metrics", module + "/cmd", "github.com/nats-io/"},
	"httpapi":            {module + "/ingest", module + "/index", module + "/metrics", module + "/cmd", "github.com/nats-io/"},
	"metrics":            {module + "/"},
	"internal/synth":     {module + "/", "github.com/nats-io/", "github.com/cockroachdb/"},
	"internal/jsonobj":   {module + "/", "github.com/"}, // pure leaves: stdlib only
	"internal/fhir":      {module + "/", "github.com/"},
	"internal/fhirdefs":  {module + "/", "github.com/"}, // and its generator, gen
	"internal/diskspace": {module + "/", "github.com/"},
	// internal/smart is a leaf: stdlib, go-jose and internal/fhir only.
	"internal/smart": {module + "/", "github.com/nats-io/", "github.com/cockroachdb/", "github.com/prometheus/", "github.com/julienschmidt/"},
	// internal/bulkclient is a leaf: stdlib and internal/smart (tokens) only.
	"internal/bulkclient": {module + "/", "github.com/", "golang.org/"},
	// internal/atomicfile is a pure leaf (stdlib only) that every package,
	// internal/ ones too, may import.
	"internal/atomicfile": {module + "/", "github.com/"},
}

// TestForbiddenImports walks every package of the module and fails on an
// import edge that the table in doc.go does not allow.
func TestForbiddenImports(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "data" || name == "bin") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		for dir, bad := range forbidden {
			if rel != dir && !strings.HasPrefix(rel, dir+"/") {
				continue
			}
			if rel == "ingest/ingesttest" || strings.HasSuffix(rel, "test") && rel != dir {
				// <pkg>test helper packages run servers for tests.
				continue
			}
			for _, imp := range pkg.Imports {
				for _, b := range bad {
					if strings.HasPrefix(imp, b) && !strings.HasPrefix(imp, module+"/"+dir) && !allowed(dir, imp) {
						t.Errorf("%s imports %s; the import rules (internal/lint/doc.go) forbid %s*", rel, imp, b)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"index", "ingest", "httpapi", "metrics", "cmd/bulkstream"} {
		if !seen[want] {
			t.Errorf("package %s not found: the walk is broken", want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
}

// allowed lists the edges that a forbidden prefix would otherwise catch.
func allowed(dir, imp string) bool {
	if (imp == module+"/internal/jsonobj" || imp == module+"/internal/fhir" || imp == module+"/internal/fhirdefs" || imp == module+"/internal/diskspace") && !strings.HasPrefix(dir, "internal/") {
		return true // shared pure leaves any package may use
	}
	if imp == module+"/internal/atomicfile" {
		return true
	}
	if dir == "internal/synth" && imp == module+"/internal/jsonobj" {
		return true
	}
	if dir == "internal/smart" && imp == module+"/internal/fhir" {
		return true
	}
	if dir == "internal/bulkclient" && imp == module+"/internal/smart" {
		return true
	}
	switch dir {
	case "ingest":
		return imp == module+"/index"
	case "export":
		return imp == module+"/index"
	case "httpapi":
		return slices.Contains([]string{module + "/export", module + "/internal/smart"}, imp)
	}
	return false
}
