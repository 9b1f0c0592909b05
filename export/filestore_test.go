package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// partStore is a FileStore in memory that keeps each file as parts of at
// most partSize bytes, as a store with a cap on an object's size would:
// it shows the FileStore interface never needs a file in one piece.
type partStore struct {
	partSize int

	mu      sync.Mutex
	jobs    map[string]map[string]*partFile
	nextID  uint64
	maxPart int
}

type partFile struct {
	parts [][]byte
	size  int64
	stamp FileStamp
}

func newPartStore(partSize int) *partStore {
	return &partStore{partSize: partSize, jobs: map[string]map[string]*partFile{}}
}

func (s *partStore) NewJob(job string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[job] = map[string]*partFile{}
	return nil
}

func (s *partStore) Create(job, name string) (FileWriter, error) {
	return &partWriter{s: s, job: job, name: name}, nil
}

func (s *partStore) SyncJob(string) error { return nil }

func (s *partStore) file(job, name string) (*partFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.jobs[job][name]
	if f == nil {
		return nil, fmt.Errorf("%s/%s: %w", job, name, fs.ErrNotExist)
	}
	return f, nil
}

func (s *partStore) Stat(job, name string) (FileStamp, error) {
	f, err := s.file(job, name)
	if err != nil {
		return FileStamp{}, err
	}
	st := f.stamp
	st.At = time.Now().UnixNano()
	return st, nil
}

func (s *partStore) Open(job, name string) (StoredFile, error) {
	f, err := s.file(job, name)
	if err != nil {
		return nil, err
	}
	return &partReader{f: f, partSize: int64(s.partSize)}, nil
}

func (s *partStore) RemoveJob(job string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.jobs, job)
	return nil
}

func (s *partStore) Jobs() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var jobs []string
	for j := range s.jobs {
		jobs = append(jobs, j)
	}
	return jobs, nil
}

type partWriter struct {
	s         *partStore
	job, name string
	parts     [][]byte
	cur       []byte
	size      int64
}

func (w *partWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(w.s.partSize-len(w.cur), len(p))
		w.cur = append(w.cur, p[:take]...)
		p = p[take:]
		if len(w.cur) == w.s.partSize {
			w.parts, w.cur = append(w.parts, w.cur), nil
		}
	}
	w.size += int64(n)
	return n, nil
}

func (w *partWriter) Commit() error {
	if len(w.cur) > 0 {
		w.parts = append(w.parts, w.cur)
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	files := w.s.jobs[w.job]
	if files == nil {
		return fmt.Errorf("commit %s of job %s: no such job", w.name, w.job)
	}
	for _, p := range w.parts {
		w.s.maxPart = max(w.s.maxPart, len(p))
	}
	w.s.nextID++
	now := time.Now().Add(-time.Hour).UnixNano() // old enough to be trusted
	files[w.name] = &partFile{parts: w.parts, size: w.size,
		stamp: FileStamp{ID: w.s.nextID, Size: w.size, Mod: now, Change: now}}
	return nil
}

func (w *partWriter) Abort() error { return nil }

// partReader reads a partFile; Seek maps an offset to its part.
type partReader struct {
	f        *partFile
	partSize int64
	off      int64
}

func (r *partReader) Read(p []byte) (int, error) {
	if r.off >= r.f.size {
		return 0, io.EOF
	}
	part := r.f.parts[r.off/r.partSize]
	n := copy(p, part[r.off%r.partSize:])
	r.off += int64(n)
	return n, nil
}

func (r *partReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.f.size
	}
	if offset < 0 {
		return 0, errors.New("negative offset")
	}
	r.off = offset
	return offset, nil
}

func (r *partReader) Close() error { return nil }

func (r *partReader) Stamp() (FileStamp, error) {
	st := r.f.stamp
	st.At = time.Now().UnixNano()
	return st, nil
}

// TestPartStore: with a FileStore that keeps files as small parts, a job
// writes, commits, serves (digest checked, then trusted on its stamp) and
// seeks into its files as with the local directory, and nothing reaches
// the export directory.
func TestPartStore(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 20)...)
	store := newPartStore(1000)
	m := startManager(t, Config{Dir: e.dir, Files: store, FileMaxBytes: 50_000}, IndexSource(e.x), e.head, e.x, nil)
	t.Cleanup(func() { m.Close(context.Background()) })

	id := submit(t, m, fullRequest())
	mf := waitManifest(t, m, id)
	lines := 0
	for _, fi := range mf.Output {
		if n := len(readLines(t, m, id, fi.Name)); int64(n) != fi.Count {
			t.Errorf("%s: %d lines, manifest %d", fi.Name, n, fi.Count)
		}
		lines += int(fi.Count)
	}
	if lines == 0 {
		t.Fatal("nothing exported")
	}
	if store.maxPart > store.partSize {
		t.Errorf("a part of %d bytes, cap %d", store.maxPart, store.partSize)
	}
	multi := false
	for _, fi := range mf.Output {
		multi = multi || fi.Bytes > int64(store.partSize)
		for range 2 { // hashed, then served on the stamp
			f, err := m.OpenFile("", id, fi.Name)
			if err != nil {
				t.Fatal(err)
			}
			all, err := io.ReadAll(f)
			if err != nil || int64(len(all)) != fi.Bytes || f.Size() != fi.Bytes {
				t.Fatalf("%s: read %d bytes (%v), Size %d, manifest %d", fi.Name, len(all), err, f.Size(), fi.Bytes)
			}
			mid := fi.Bytes / 2
			if _, err := f.Seek(mid, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(f)
			if err != nil || !bytes.Equal(rest, all[mid:]) {
				t.Errorf("%s: bytes after a seek to %d differ (%v)", fi.Name, mid, err)
			}
			f.Close()
		}
	}
	if !multi {
		t.Error("no file spans several parts: the test proves nothing")
	}
	if ents, err := os.ReadDir(e.dir); err != nil || len(ents) != 0 {
		t.Errorf("export directory holds %d entries (%v), want none", len(ents), err)
	}
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := store.Jobs(); slices.Contains(jobs, id) {
		t.Error("the cancelled job's files are still in the store")
	}
}

// TestDirStore: a file is invisible until committed, Abort leaves
// nothing, Jobs lists the job directories, and a job or file name that
// is not a single path element is refused.
func TestDirStore(t *testing.T) {
	dir := t.TempDir()
	s := NewDirStore(filepath.Join(dir, "exports"))
	if jobs, err := s.Jobs(); err != nil || len(jobs) != 0 {
		t.Fatalf("Jobs of a missing directory = %v, %v; want none", jobs, err)
	}
	if err := s.NewJob("j1"); err != nil {
		t.Fatal(err)
	}
	w, err := s.Create("j1", "a.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat("j1", "a.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat before Commit = %v, want not exist", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncJob("j1"); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stat("j1", "a.ndjson")
	if err != nil || st.Size != 3 {
		t.Fatalf("Stat = %+v, %v; want 3 bytes", st, err)
	}
	f, err := s.Open("j1", "a.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	if fst, err := f.Stamp(); err != nil || !fst.sameState(st) || string(b) != "{}\n" {
		t.Errorf("Open: %q, stamp %+v (%v), want the committed bytes and the Stat stamp %+v", b, fst, err, st)
	}
	f.Close()

	w, err = s.Create("j1", "b.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "exports", "j1")); len(ents) != 1 {
		t.Errorf("after Abort the job holds %d files, want only a.ndjson", len(ents))
	}
	if jobs, err := s.Jobs(); err != nil || !slices.Equal(jobs, []string{"j1"}) {
		t.Errorf("Jobs = %v, %v; want [j1]", jobs, err)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x"} {
		if err := s.RemoveJob(bad); err == nil {
			t.Errorf("RemoveJob(%q) accepted", bad)
		}
		if _, err := s.Create("j1", bad); err == nil {
			t.Errorf("Create(j1, %q) accepted", bad)
		}
	}
	if err := s.RemoveJob("j1"); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.Jobs(); len(jobs) != 0 {
		t.Errorf("Jobs after RemoveJob = %v", jobs)
	}
}
