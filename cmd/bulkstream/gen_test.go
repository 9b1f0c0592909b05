package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream"
)

const genSample = "../../testdata/synthea-r4-100-patients.ndjson.gz"

func TestGen(t *testing.T) {
	t.Parallel()
	gen := func(t *testing.T, args ...string) (stdout []byte) {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := runGen(t.Context(), append([]string{"--sample", genSample}, args...), &out, &errOut); err != nil {
			t.Fatalf("gen %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		if !strings.HasPrefix(errOut.String(), "gen: ") || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("stderr: %q, want a one-line summary", errOut.String())
		}
		return out.Bytes()
	}
	read := func(t *testing.T, path string) []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	stdout := gen(t, "--scale", "2", "--seed", "9")
	if got, want := bytes.Count(stdout, []byte("\n")), 2*38483; got != want {
		t.Fatalf("stdout: %d lines, want %d", got, want)
	}

	dir1, dir2 := t.TempDir(), t.TempDir()
	gen(t, "--scale", "2", "--seed", "9", "--changes", "500", "--out", dir1)
	gen(t, "--scale", "2", "--seed", "9", "--changes", "500", "--out", dir2)
	res := read(t, filepath.Join(dir1, "resources.ndjson"))
	if !bytes.Equal(res, stdout) {
		t.Error("--out resources.ndjson differs from stdout")
	}
	for _, name := range []string{"resources.ndjson", "updates.ndjson", "deletes.txt"} {
		if !bytes.Equal(read(t, filepath.Join(dir1, name)), read(t, filepath.Join(dir2, name))) {
			t.Errorf("%s differs between two runs", name)
		}
	}
	ids := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(string(res), "\n"), "\n") {
		_, rest, _ := strings.Cut(l, `"resourceType":"`)
		typ, rest, _ := strings.Cut(rest, `"`)
		_, rest, _ = strings.Cut(rest, `"id":"`)
		id, _, _ := strings.Cut(rest, `"`)
		ids[typ+"/"+id] = true
	}
	updates := bytes.Count(read(t, filepath.Join(dir1, "updates.ndjson")), []byte("\n"))
	deletes := strings.Fields(string(read(t, filepath.Join(dir1, "deletes.txt"))))
	if updates+len(deletes) != 500 || len(deletes) < 50 || len(deletes) > 150 {
		t.Errorf("%d updates and %d deletes, want 500 changes, about 20%% deletes", updates, len(deletes))
	}
	for _, d := range deletes {
		if !ids[d] {
			t.Fatalf("delete of %s: not a generated resource", d)
		}
	}
	entries, _ := os.ReadDir(dir1)
	if len(entries) != 3 {
		t.Errorf("%d files in --out, want 3 (no temporary files left)", len(entries))
	}

	dir3 := t.TempDir()
	gen(t, "--scale", "2", "--seed", "9", "--gzip", "--changes", "10", "--out", dir3)
	f, err := os.Open(filepath.Join(dir3, "resources.ndjson.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unzipped, stdout) {
		t.Error("--gzip output differs once gunzipped")
	}
}

func TestGenErrors(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"changes without out": {"--changes", "10"},
		"scale 0":             {"--scale", "0"},
		"negative changes":    {"--changes", "-1", "--out", "x"},
		"too many changes":    {"--changes", "38484", "--out", "x"},
		"missing sample":      {"--sample", "does-not-exist.ndjson"},
		"argument":            {"extra"},
		"bad flag":            {"--scale", "two"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if name != "missing sample" {
				args = append([]string{"--sample", genSample}, args...)
			}
			if err := runGen(t.Context(), args, &out, &errOut); err == nil {
				t.Fatalf("gen %v: no error", args)
			}
			if out.Len() > 0 {
				t.Errorf("gen %v wrote %d bytes to stdout", args, out.Len())
			}
		})
	}
}

// TestGenAnyDirectory: the real binary, run from a directory that holds no
// testdata/, generates from the sample built into it, byte for byte what
// the sample file in the repository gives.
func TestGenAnyDirectory(t *testing.T) {
	cmd := exec.Command(binPath, "gen", "--scale", "1", "--seed", "3")
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gen in %s: %v\n%s", cmd.Dir, err, stderr.String())
	}
	var want, errOut bytes.Buffer
	if err := runGen(t.Context(), []string{"--sample", genSample, "--scale", "1", "--seed", "3"}, &want, &errOut); err != nil {
		t.Fatalf("gen --sample %s: %v\n%s", genSample, err, errOut.String())
	}
	if got := bytes.Count(stdout.Bytes(), []byte("\n")); got != bulkstream.SampleResources {
		t.Errorf("gen from %s: %d resources, want %d", cmd.Dir, got, bulkstream.SampleResources)
	}
	if !bytes.Equal(stdout.Bytes(), want.Bytes()) {
		t.Error("gen with the built-in sample differs from gen --sample " + genSample)
	}
}
