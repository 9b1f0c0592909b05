package bulkclient

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// runFiles writes a run's downloaded files into a fresh directory:
// outputs maps a type to its resources' "id" or "id:version" entries,
// deleted lists Type/id refs.
func runFiles(t *testing.T, outputs map[string][]string, deleted []string) []FileResult {
	t.Helper()
	dir := t.TempDir()
	var results []FileResult
	for _, typ := range slices.Sorted(maps.Keys(outputs)) {
		var b strings.Builder
		for _, e := range outputs[typ] {
			id, v, _ := strings.Cut(e, ":")
			fmt.Fprintf(&b, `{"resourceType":%q,"id":%q,"v":%q}`+"\n", typ, id, v)
		}
		p := filepath.Join(dir, typ+".1.ndjson")
		writeTestFile(t, p, b.String())
		n := int64(len(outputs[typ]))
		results = append(results, FileResult{Item: Item{Kind: KindOutput, File: File{Type: typ}, Name: filepath.Base(p)}, Path: p, Lines: n})
	}
	if len(deleted) > 0 {
		var b strings.Builder
		b.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
		for i, ref := range deleted {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"request":{"method":"DELETE","url":%q}}`, ref)
		}
		b.WriteString("]}\n")
		p := filepath.Join(dir, "deleted.1.ndjson")
		writeTestFile(t, p, b.String())
		results = append(results, FileResult{Item: Item{Kind: KindDeleted, Name: "deleted.1.ndjson"}, Path: p, Lines: 1})
	}
	return results
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mirrorState reads the mirror: file name → sorted "id:v" entries. Any
// other file in dir (a left temporary file) fails the test.
func mirrorState(t *testing.T, dir string) map[string][]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".ndjson") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("mirror holds %s, want only <Type>.ndjson files", e.Name())
			continue
		}
		typ := strings.TrimSuffix(e.Name(), ".ndjson")
		err := eachLine(filepath.Join(dir, e.Name()), func(line []byte) error {
			var r struct{ ResourceType, ID, V string }
			if err := json.Unmarshal(line, &r); err != nil {
				return err
			}
			if r.ResourceType != typ {
				t.Errorf("%s holds a %s", e.Name(), r.ResourceType)
			}
			got[typ] = append(got[typ], r.ID+":"+r.V)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got[typ])
	}
	return got
}

func sameMirror(t *testing.T, step string, got, want map[string][]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: mirror %v, want %v", step, got, want)
		return
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("%s: mirror %v, want %v", step, got, want)
			return
		}
	}
}

// TestApplyMirror: a full run replaces the mirror; an incremental run
// replaces changed resources, drops deleted ones (a type left empty loses
// its file) and keeps the rest; applying a run twice changes nothing; a
// full run over some types leaves the others alone, over all types
// removes the files of types it has no output for.
func TestApplyMirror(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mirror") // created by ApplyMirror
	apply := func(step string, full bool, types []string, results []FileResult, want map[string][]string) {
		t.Helper()
		if err := ApplyMirror(dir, results, full, types); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		sameMirror(t, step, mirrorState(t, dir), want)
	}
	apply("full", true, nil, runFiles(t, map[string][]string{
		"Patient":     {"a:1", "b:1", "c:1"},
		"Observation": {"x:1"},
	}, nil), map[string][]string{"Patient": {"a:1", "b:1", "c:1"}, "Observation": {"x:1"}})

	inc := runFiles(t, map[string][]string{"Patient": {"a:2", "d:1"}}, []string{"Patient/b", "Observation/x"})
	want := map[string][]string{"Patient": {"a:2", "c:1", "d:1"}}
	apply("incremental", false, nil, inc, want)
	apply("the same incremental again", false, nil, inc, want)

	apply("nothing changed", false, nil, nil, want)

	apply("full over Condition only", true, []string{"Condition"}, runFiles(t, map[string][]string{
		"Condition": {"k:1"},
	}, nil), map[string][]string{"Patient": {"a:2", "c:1", "d:1"}, "Condition": {"k:1"}})

	apply("full over everything", true, nil, runFiles(t, map[string][]string{
		"Patient": {"a:3"},
	}, nil), map[string][]string{"Patient": {"a:3"}})
}

// TestApplyMirrorRefusesBadInput: an output line that is not a resource
// of the file's type with an id, or a type that is no file name, fails
// the apply and leaves the mirror as it was, without temporary files.
func TestApplyMirrorRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := ApplyMirror(dir, runFiles(t, map[string][]string{"Patient": {"a:1"}}, nil), true, nil); err != nil {
		t.Fatal(err)
	}
	before := mirrorState(t, dir)

	bad := runFiles(t, map[string][]string{"Patient": {"b:1"}}, nil)
	writeTestFile(t, bad[0].Path, `{"resourceType":"Patient","id":"b"}`+"\n"+`{"resourceType":"Observation","id":"o"}`+"\n")
	if err := ApplyMirror(dir, bad, false, nil); err == nil || !strings.Contains(err.Error(), "no Patient with an id") {
		t.Errorf("a foreign line: err = %v, want one naming it", err)
	}
	if err := ApplyMirror(dir, runFiles(t, nil, []string{"../etc/b"}), false, nil); err == nil || !strings.Contains(err.Error(), "no file name") {
		t.Errorf("type ../etc: err = %v, want it refused", err)
	}
	sameMirror(t, "after the refused runs", mirrorState(t, dir), before)

	// A mirror file that is not NDJSON stops an incremental run before
	// anything is replaced; the temporary file goes.
	writeTestFile(t, filepath.Join(dir, "Patient.ndjson"), "not json\n")
	if err := ApplyMirror(dir, runFiles(t, map[string][]string{"Patient": {"c:1"}}, nil), false, nil); err == nil {
		t.Error("an incremental run over a corrupt mirror file succeeded")
	}
	if names, _ := filepath.Glob(filepath.Join(dir, ".*")); len(names) > 0 {
		t.Errorf("temporary files left: %v", names)
	}
}

// TestSummarize: outputs count their lines per type, the deleted files
// their DELETE entries, the error files their error and fatal issues
// (not warnings), with the first five messages.
func TestSummarize(t *testing.T) {
	results := runFiles(t, map[string][]string{"Patient": {"a", "b"}, "Observation": {"x"}}, []string{"Patient/c", "Condition/k"})
	var errs strings.Builder
	for i := range 7 {
		fmt.Fprintf(&errs, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"bad %d"},{"severity":"warning","code":"informational"}]}`+"\n", i)
	}
	p := filepath.Join(t.TempDir(), "error.1.ndjson")
	writeTestFile(t, p, errs.String())
	results = append(results, FileResult{Item: Item{Kind: KindError, Name: "error.1.ndjson"}, Path: p, Bytes: int64(errs.Len())})

	s, err := Summarize(results)
	if err != nil {
		t.Fatal(err)
	}
	if s.Files != 4 || s.Resources != 3 || s.PerType["Patient"] != 2 || s.PerType["Observation"] != 1 || s.Deleted != 2 {
		t.Errorf("summary %+v, want 4 files, 3 resources (2 Patient, 1 Observation), 2 deleted", s)
	}
	if s.Errors != 7 || len(s.Messages) != 5 || s.Messages[0] != "bad 0" {
		t.Errorf("errors %d, messages %q: want 7 errors and the first 5 messages", s.Errors, s.Messages)
	}
	if s.Bytes != int64(errs.Len()) {
		t.Errorf("bytes %d, want %d", s.Bytes, errs.Len())
	}
}

// TestClearPrevious: the files and .part files a previous manifest.json
// lists go, with the manifest; other files stay; a manifest.json that is
// not a manifest leaves the directory alone.
func TestClearPrevious(t *testing.T) {
	dir := t.TempDir()
	m := &Manifest{Output: []File{{Type: "Patient", URL: "http://x/1"}, {Type: "Patient", URL: "http://x/2"}}}
	m.Raw, _ = json.Marshal(m)
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"Patient.1.ndjson", "Patient.2.ndjson.part", "notes.txt"} {
		writeTestFile(t, filepath.Join(dir, n), "x\n")
	}
	if err := ClearPrevious(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "notes.txt" {
		t.Errorf("left %v, want only notes.txt", ents)
	}

	writeTestFile(t, filepath.Join(dir, ManifestFile), "[1,2]")
	if err := ClearPrevious(dir); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("a foreign manifest.json: left %v, want it and notes.txt", ents)
	}
	if err := ClearPrevious(t.TempDir()); err != nil {
		t.Errorf("a directory without a manifest: %v", err)
	}
}

// TestState: a missing file is an empty state; Advance and Save persist
// the next _since per server and type list (the key ignores a final
// slash and the order of types); a corrupt file is an error naming it.
func TestState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	st, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	all := StateKey("https://bulk.example.org/fhir/", nil)
	some := StateKey("https://bulk.example.org/fhir", []string{"Patient", "Condition"})
	if all != "https://bulk.example.org/fhir" || some != "https://bulk.example.org/fhir?_type=Condition,Patient" {
		t.Errorf("keys %q and %q", all, some)
	}
	if st.Since(all) != "" {
		t.Errorf("empty state: since %q", st.Since(all))
	}
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600))
	st.Advance(all, "2026-03-04T04:00:00Z", now)
	st.Advance(some, "2026-03-04T04:30:00Z", now)
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v, mode %v; want 0600", err, fi.Mode())
	}
	again, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.Since(all) != "2026-03-04T04:00:00Z" || again.Since(StateKey("https://bulk.example.org/fhir", []string{"Condition", "Patient"})) != "2026-03-04T04:30:00Z" {
		t.Errorf("reloaded state %+v", again.Servers)
	}
	if u := again.Servers[all].Updated; u != "2026-03-04T04:06:07Z" {
		t.Errorf("updated %q, want the run's end in UTC", u)
	}

	writeTestFile(t, path, "{")
	if _, err := LoadState(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt state: err = %v, want one naming the file", err)
	}
}
