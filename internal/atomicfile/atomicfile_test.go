package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for i, content := range []string{"first\n", "second, longer\n", ""} {
		if err := WriteFile(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, path); got != content {
			t.Errorf("write %d: content %q, want %q", i, got, content)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("write %d: mode %v, want 0640 (exactly perm)", i, fi.Mode().Perm())
		}
		if got := names(t, dir); !slices.Equal(got, []string{"state.json"}) {
			t.Errorf("write %d: directory holds %q, want only state.json", i, got)
		}
	}
}

// TestStreamingWriteIsAllOrNothing: while a large file is streamed in,
// the path holds the old content at every step, then the whole new one
// after Commit: a crash at any point leaves one or the other.
func TestStreamingWriteIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Patient.ndjson")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if filepath.Dir(f.Name()) != dir || !strings.HasPrefix(filepath.Base(f.Name()), ".Patient.ndjson.") {
		t.Errorf("temporary file %s, want .Patient.ndjson.*.tmp beside the path", f.Name())
	}
	line := bytes.Repeat([]byte("x"), 1023)
	line = append(line, '\n')
	var want bytes.Buffer
	for i := range 4096 { // 4 MiB
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		want.Write(line)
		if i%1024 == 0 {
			if got := readFile(t, path); got != "old\n" {
				t.Fatalf("after %d lines the path holds %d bytes, want the old content", i+1, len(got))
			}
		}
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != want.String() {
		t.Errorf("after Commit the path holds %d bytes, want %d", len(got), want.Len())
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close after Commit: %v, want nil", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"Patient.ndjson"}) {
		t.Errorf("directory holds %q, want only Patient.ndjson", got)
	}
	if err := f.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}
}

// TestAbandonRemovesTemp: Close without Commit, and a Commit that fails
// before the rename, remove the temporary file and keep the old content.
func TestAbandonRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(path, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "half")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "old" {
		t.Errorf("after Close the path holds %q, want the old content", got)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
		t.Errorf("after Close the directory holds %q, want only f", got)
	}

	// The rename fails: a non-empty directory is in the way.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err = Create(blocked, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "new")
	if err := f.Commit(); err == nil {
		t.Fatal("Commit over a non-empty directory succeeded")
	}
	if got := names(t, dir); !slices.Equal(got, []string{"blocked", "f"}) {
		t.Errorf("after a failed Commit the directory holds %q, want no temporary file", got)
	}
	if err := WriteFile(blocked, []byte("new"), 0o644); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	if got := names(t, dir); !slices.Equal(got, []string{"blocked", "f"}) {
		t.Errorf("after a failed WriteFile the directory holds %q, want no temporary file", got)
	}
}

// TestDirSyncedAfterRename: Commit syncs the path's directory, after the
// rename; a failed directory sync is reported, with the file in place
// (CommitOpen hands it back open, positioned at its end).
func TestDirSyncedAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "replay")
	f, err := Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "a\n")
	var synced []string
	failSync := errors.New("sync failed")
	f.syncDir = func(d string) error {
		synced = append(synced, d)
		if got := readFile(t, path); got != "a\n" {
			t.Errorf("directory synced before the rename: path holds %q", got)
		}
		return failSync
	}
	g, err := f.CommitOpen()
	if !errors.Is(err, failSync) {
		t.Errorf("CommitOpen: %v, want the directory sync's error", err)
	}
	if !slices.Equal(synced, []string{dir}) {
		t.Errorf("directories synced: %q, want [%s]", synced, dir)
	}
	if g == nil {
		t.Fatal("CommitOpen returned no file though the rename happened")
	}
	if _, err := io.WriteString(g, "b\n"); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "a\nb\n" {
		t.Errorf("path holds %q, want the appends after the committed content", got)
	}
	if err := SyncDir(dir); err != nil {
		t.Errorf("SyncDir: %v", err)
	}
}

// TestCreateTemp: a caller-chosen temporary name is truncated, renamed on
// Commit and removed on Close; one outside the path's directory is refused.
func TestCreateTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Patient.1.ndjson")
	part := path + ".part"
	if err := os.WriteFile(part, []byte("stale bytes of an earlier run"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := CreateTemp(path, part, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != part {
		t.Errorf("Name() = %s, want %s", f.Name(), part)
	}
	io.WriteString(f, "new\n")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "new\n" {
		t.Errorf("path holds %q, want %q", got, "new\n")
	}
	if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".part left after Commit: %v", err)
	}

	f, err = CreateTemp(path, part, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "cut")
	f.Close()
	if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".part left after Close: %v", err)
	}
	if got := readFile(t, path); got != "new\n" {
		t.Errorf("path holds %q after an abandoned write, want %q", got, "new\n")
	}

	if _, err := CreateTemp(path, filepath.Join(t.TempDir(), "x.part"), 0o644); err == nil {
		t.Error("a temporary file in another directory was accepted")
	}
}
