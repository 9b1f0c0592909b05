package lint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/bulkstream/bulkstream"

// forbidden lists, per package (import path relative to the module), the
// import path prefixes its non-test files must not import.
var forbidden = map[string][]string{
	"index":              {module + "/", "github.com/nats-io/", "net/http"},
	"ingest":             {module + "/export", module + "/httpapi", module + "/metrics", module + "/cmd", "github.com/nats-io/nats-server", "net/http"},
	"jsstore":            {module + "/ingest", module + "/httpapi", module + "/metrics", module + "/cmd", "github.com/nats-io/nats-server", "net/http"},
	"export":             {module + "/ingest", module + "/httpapi", module + "/metrics", module + "/cmd", "github.com/nats-io/"},
	"httpapi":            {module + "/ingest", module + "/index", module + "/metrics", module + "/cmd", "github.com/nats-io/"},
	"metrics":            {module + "/"},
	"internal/synth":     {module + "/", "github.com/nats-io/", "github.com/cockroachdb/"},
	"internal/jsonobj":   {module + "/", "github.com/"}, // pure leaves: stdlib only
	"internal/fhir":      {module + "/", "github.com/"},
	"internal/fhirdefs":  {module + "/", "github.com/"}, // and its generator, gen
	"internal/diskspace": {module + "/", "github.com/"},
	// internal/search is a leaf: stdlib and the pure leaves fhir, fhirdefs, jsonobj.
	"internal/search": {module + "/", "github.com/"},
	// internal/smart is a leaf: stdlib, go-jose and internal/fhir only.
	"internal/smart": {module + "/", "github.com/nats-io/", "github.com/cockroachdb/", "github.com/prometheus/", "github.com/julienschmidt/"},
	// internal/bulkclient is a leaf: stdlib and internal/smart (tokens) only.
	"internal/bulkclient": {module + "/", "github.com/", "golang.org/"},
	// internal/atomicfile is a pure leaf (stdlib only) that every package,
	// internal/ ones too, may import.
	"internal/atomicfile": {module + "/", "github.com/"},
}

// goosList are the platforms whose builds TestForbiddenImports lists with
// go list: a file behind a build constraint (export/stamp_bsd.go,
// internal/diskspace/free_other.go) takes part in one of them.
var goosList = []string{"linux", "darwin", "freebsd", "windows"}

// TestForbiddenImports fails on an import that the table in doc.go does
// not allow, on any platform and through any path:
//
//   - direct: every non-test .go file of a package, whatever its build
//     constraints, imports nothing its rules forbid;
//   - through the module: a bulkstream package without rules of its own
//     (a package added later, say) that a ruled package imports, directly
//     or through others like it, is held to the importer's rules; a
//     package with rules answers for its own imports;
//   - through other modules: no package a ruled package links, on any
//     of goosList, comes from a module its rules forbid (index links no
//     NATS code through pebble, say). The standard library is exempt
//     here: third-party code may use net/http.
func TestForbiddenImports(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	direct, constrained := parseImports(t, root)
	for _, want := range []string{"index", "ingest", "httpapi", "metrics", "cmd/bulkstream"} {
		if _, ok := direct[want]; !ok {
			t.Errorf("package %s not found: the walk is broken", want)
		}
	}
	if constrained == 0 {
		t.Error("no file behind a build constraint was parsed: the walk misses other platforms' files")
	}
	for rel, imps := range direct {
		dir := ruleDir(rel)
		if dir == "" {
			continue
		}
		for _, imp := range imps {
			if b := forbids(dir, imp); b != "" {
				t.Errorf("%s imports %s; the import rules (internal/lint/doc.go) forbid %s*", rel, imp, b)
			}
		}
	}

	for _, goos := range goosList {
		pkgs := listPackages(t, root, goos)
		for path, p := range pkgs {
			rel, ok := strings.CutPrefix(path, module+"/")
			if !ok {
				continue
			}
			dir := ruleDir(rel)
			if dir == "" {
				continue
			}
			// What rel reaches without passing through another ruled
			// bulkstream package, which answers for its own imports.
			// Third-party code may use the standard library (net/http,
			// say), so what only it links is not held to rel's rules.
			reached := map[string]string{} // import path → through what
			thirdParty := map[string]bool{}
			var walk func(imps []string, via string)
			walk = func(imps []string, via string) {
				for _, imp := range imps {
					if _, ok := reached[imp]; ok && !thirdParty[imp] {
						continue
					}
					q, inModule := strings.CutPrefix(imp, module+"/")
					if inModule && ruleDir(q) != "" {
						continue
					}
					reached[imp], thirdParty[imp] = via, false
					if inModule {
						walk(pkgs[imp].Imports, via+" → "+q)
						continue
					}
					for _, d := range pkgs[imp].Deps {
						if _, ok := reached[d]; !ok {
							reached[d], thirdParty[d] = via+" → "+imp, true
						}
					}
				}
			}
			walk(p.Imports, rel)
			for imp, via := range reached {
				if via == rel || thirdParty[imp] && !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
					continue // direct imports are checked above, on every platform
				}
				if b := forbids(dir, imp); b != "" {
					t.Errorf("GOOS=%s: %s imports %s through %s; the import rules (internal/lint/doc.go) forbid %s*", goos, rel, imp, via, b)
				}
			}
		}
	}
}

// ruleDir is the key of forbidden whose rules hold for the package at rel
// (relative to the module root), or "" when none do. <pkg>test helper
// packages (ingest/ingesttest, index/indextest) run servers for tests and
// are exempt.
func ruleDir(rel string) string {
	for dir := range forbidden {
		if rel != dir && !strings.HasPrefix(rel, dir+"/") {
			continue
		}
		if rel != dir && strings.HasSuffix(rel, "test") {
			return ""
		}
		return dir
	}
	return ""
}

// forbids returns the prefix of dir's rules that imp matches, or "" when
// dir may import imp.
func forbids(dir, imp string) string {
	for _, b := range forbidden[dir] {
		if strings.HasPrefix(imp, b) && !strings.HasPrefix(imp, module+"/"+dir) && !allowed(dir, imp) {
			return b
		}
	}
	return ""
}

// parseImports reads the imports of every non-test .go file under root,
// ignoring build constraints, by package directory (relative to root). It
// also counts the files that the build for this platform leaves out.
func parseImports(t *testing.T, root string) (imports map[string][]string, constrained int) {
	t.Helper()
	imports = map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "data" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		imps := imports[rel]
		for _, is := range f.Imports {
			imp, err := strconv.Unquote(is.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if !slices.Contains(imps, imp) {
				imps = append(imps, imp)
			}
		}
		imports[rel] = imps
		if ok, err := build.Default.MatchFile(filepath.Dir(path), name); err == nil && !ok {
			constrained++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return imports, constrained
}

// listedPackage is the part of go list -json that TestForbiddenImports
// reads.
type listedPackage struct {
	ImportPath string
	Imports    []string // direct, for this platform
	Deps       []string // transitive, for this platform
}

// listPackages runs go list -deps -json ./... for goos and returns every
// package the module's packages link, theirs included, by import path.
func listPackages(t *testing.T, root, goos string) map[string]listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Imports,Deps", "./...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("GOOS=%s go list: %v\n%s", goos, err, stderr.String())
	}
	pkgs := map[string]listedPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("GOOS=%s go list: %v", goos, err)
		}
		pkgs[p.ImportPath] = p
	}
	if _, ok := pkgs[module+"/index"]; !ok {
		t.Fatalf("GOOS=%s go list found no packages of %s", goos, module)
	}
	return pkgs
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
	if dir == "internal/search" && slices.Contains([]string{module + "/internal/fhir", module + "/internal/fhirdefs", module + "/internal/jsonobj"}, imp) {
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
		return imp == module+"/index" || imp == module+"/internal/search"
	case "httpapi":
		return slices.Contains([]string{module + "/export", module + "/internal/smart"}, imp)
	}
	return false
}
