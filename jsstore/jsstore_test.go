package jsstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// newFileStore starts a JetStream server and opens a FileStore on it with
// parts of partSize bytes and one quick retry on "not found".
func newFileStore(t testing.TB, partSize int64) (*FileStore, jetstream.JetStream) {
	t.Helper()
	_, _, js := ingesttest.RunJetStream(t)
	s, err := NewFileStore(t.Context(), js, FileOptions{Bucket: "files", PartSize: partSize, ReadRetries: 1, ReadRetryWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// content is n bytes that differ at every offset a part could start at.
func content(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.Bytes()[:n]
}

// write writes data to file name of job in chunks of chunk bytes and
// commits it.
func write(t testing.TB, s *FileStore, job, name string, data []byte, chunk int) {
	t.Helper()
	w, err := s.Create(job, name)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestFileStore: a file spanning several parts reads back whole and from
// offsets around part boundaries, its stamp stays the same, and a rewrite
// changes the stamp's ID.
func TestFileStore(t *testing.T) {
	s, _ := newFileStore(t, 1000)
	if err := s.NewJob("j1"); err != nil {
		t.Fatal(err)
	}
	data := content(4321)
	write(t, s, "j1", "Patient-1.ndjson", data, 333)

	st, err := s.Stat("j1", "Patient-1.ndjson")
	if err != nil || st.Size != int64(len(data)) || st.ID == 0 || st.Mod == 0 {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	f, err := s.Open("j1", "Patient-1.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("read %d bytes (%v), want %d equal", len(all), err, len(data))
	}
	for _, off := range []int64{0, 1, 999, 1000, 1001, 2500, 3999, 4000, 4320, 4321, 5000} {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(f)
		want := data[min(off, int64(len(data))):]
		if err != nil || !bytes.Equal(rest, want) {
			t.Errorf("after Seek(%d): %d bytes (%v), want %d", off, len(rest), err, len(want))
		}
	}
	// A short read across a boundary, then a seek back within the part.
	f.Seek(990, io.SeekStart)
	buf := make([]byte, 20)
	if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, data[990:1010]) {
		t.Errorf("read 990..1010 = %q (%v)", buf, err)
	}
	if pos, _ := f.Seek(-15, io.SeekCurrent); pos != 995 {
		t.Errorf("Seek(-15, current) = %d, want 995", pos)
	}
	if _, err := io.ReadFull(f, buf[:10]); err != nil || !bytes.Equal(buf[:10], data[995:1005]) {
		t.Errorf("read 995..1005 = %q (%v)", buf[:10], err)
	}
	if end, _ := f.Seek(0, io.SeekEnd); end != int64(len(data)) {
		t.Errorf("Seek(0, end) = %d", end)
	}
	fst, err := f.Stamp()
	if err != nil || fst.ID != st.ID || fst.Size != st.Size || fst.Mod != st.Mod || fst.Change != st.Change {
		t.Errorf("open file's stamp %+v (%v), Stat's %+v", fst, err, st)
	}

	// Exactly two parts, and a rewrite under the same name.
	write(t, s, "j1", "Patient-2.ndjson", data[:2000], 2000)
	write(t, s, "j1", "Patient-1.ndjson", data[:10], 10)
	st2, err := s.Stat("j1", "Patient-1.ndjson")
	if err != nil || st2.Size != 10 || st2.ID == st.ID {
		t.Errorf("after a rewrite Stat = %+v (%v), before %+v", st2, err, st)
	}
	for name, want := range map[string][]byte{"Patient-1.ndjson": data[:10], "Patient-2.ndjson": data[:2000]} {
		f, err := s.Open("j1", name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes (%v), want %d", name, len(got), err, len(want))
		}
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if _, err := f.Read(buf); err == nil {
		t.Error("Read after Close succeeded")
	}
}

// TestFileStoreVisibility: a file is invisible until committed, Abort
// leaves no object, RemoveJob removes every object of its job alone, and
// Jobs lists jobs with committed files or parts only.
func TestFileStoreVisibility(t *testing.T) {
	s, _ := newFileStore(t, 1000)
	data := content(2500)

	w, err := s.Create("j1", "a.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat("j1", "a.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat before Commit: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Open("j1", "a.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open before Commit: %v, want fs.ErrNotExist", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat("j1", "a.ndjson"); err != nil {
		t.Errorf("Stat after Commit: %v", err)
	}

	w, err = s.Create("j2", "b.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if objs, err := s.objects("j2"); err != nil || len(objs) != 0 {
		t.Errorf("after Abort job j2 has objects %q (%v)", objs, err)
	}
	if _, err := s.Stat("j2", "b.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of an aborted file: %v, want fs.ErrNotExist", err)
	}

	write(t, s, "j3", "c.ndjson", data, 700)
	w, err = s.Create("j4", "d.ndjson") // parts only, never committed
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Jobs()
	slices.Sort(jobs)
	if err != nil || !slices.Equal(jobs, []string{"j1", "j3", "j4"}) {
		t.Errorf("Jobs = %q (%v), want j1 j3 j4", jobs, err)
	}
	for _, j := range []string{"j1", "j4", "missing"} {
		if err := s.RemoveJob(j); err != nil {
			t.Errorf("RemoveJob(%s): %v", j, err)
		}
	}
	if err := w.Abort(); err != nil { // its parts are gone already
		t.Error(err)
	}
	if jobs, err := s.Jobs(); err != nil || !slices.Equal(jobs, []string{"j3"}) {
		t.Errorf("after RemoveJob Jobs = %q (%v), want j3", jobs, err)
	}
	if _, err := s.Stat("j1", "a.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a removed job's file: %v, want fs.ErrNotExist", err)
	}
	if err := s.NewJob("j3"); err != nil {
		t.Fatal(err)
	}
	if jobs, err := s.Jobs(); err != nil || len(jobs) != 0 {
		t.Errorf("after NewJob Jobs = %q (%v), want none", jobs, err)
	}

	for _, bad := range [][2]string{{"", "x"}, {"a/b", "x"}, {"j", ""}, {"j", "x/y"}} {
		if _, err := s.Create(bad[0], bad[1]); err == nil {
			t.Errorf("Create(%q, %q) succeeded", bad[0], bad[1])
		}
	}
}

func TestFileOptions(t *testing.T) {
	for _, o := range []FileOptions{{}, {Bucket: "b", PartSize: -1}, {Bucket: "b", Replicas: -1}, {Bucket: "b", Timeout: -1}} {
		err := o.validate()
		if err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	o := FileOptions{Bucket: "b"}
	if err := o.validate(); err != nil || o.PartSize != DefaultPartSize || o.Replicas != 1 || o.ReadRetries != 4 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	if err := (&FileOptions{}).validate(); err == nil || !strings.Contains(err.Error(), "Bucket") {
		t.Errorf("missing bucket: %v, want an error naming Bucket", err)
	}
}

// TestJobStore: records round-trip, Jobs lists them all, a missing one
// is index.ErrNotFound, and deleting a missing one is no error.
func TestJobStore(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	s, err := NewJobStore(t.Context(), js, JobOptions{Bucket: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Jobs(func(string, []byte) error { return errors.New("called") }); err != nil {
		t.Errorf("Jobs of an empty bucket: %v", err)
	}
	if _, err := s.GetJob("nope"); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("GetJob of a missing id: %v, want index.ErrNotFound", err)
	}
	if err := s.DeleteJob("nope"); err != nil {
		t.Errorf("DeleteJob of a missing id: %v", err)
	}
	want := map[string]string{"a1": `{"state":"queued"}`, "b2": `{"state":"running"}`, "c3": `{}`}
	for id, rec := range want {
		if err := s.PutJob(id, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutJob("a1", []byte(`{"state":"completed"}`)); err != nil {
		t.Fatal(err)
	}
	want["a1"] = `{"state":"completed"}`
	if rec, err := s.GetJob("a1"); err != nil || string(rec) != want["a1"] {
		t.Errorf("GetJob(a1) = %s, %v", rec, err)
	}
	if err := s.DeleteJob("c3"); err != nil {
		t.Fatal(err)
	}
	delete(want, "c3")
	if _, err := s.GetJob("c3"); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("GetJob of a deleted id: %v, want index.ErrNotFound", err)
	}
	got := map[string]string{}
	if err := s.Jobs(func(id string, rec []byte) error { got[id] = string(rec); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Jobs = %v, want %v", got, want)
	}
	stop := errors.New("stop")
	if err := s.Jobs(func(string, []byte) error { return stop }); err != stop {
		t.Errorf("Jobs did not return fn's error: %v", err)
	}
	if _, err := NewJobStore(t.Context(), js, JobOptions{}); err == nil || !strings.Contains(err.Error(), "Bucket") {
		t.Errorf("no bucket: %v, want an error naming Bucket", err)
	}
}

// zeroHead is a stream head at 0: jobs wait for nothing.
type zeroHead struct{}

func (zeroHead) Head(context.Context) (uint64, error) { return 0, nil }

// TestManager: an export.Manager keeping its files and jobs in JetStream
// runs a full export whose files span several parts, every file
// downloads through OpenFile (twice: hashed, then trusted on its stamp)
// with the bytes of the index and reads the same after a seek, nothing
// reaches the export directory, and a cancel removes files and record.
func TestManager(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	files, err := NewFileStore(t.Context(), js, FileOptions{Bucket: "files", PartSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := NewJobStore(t.Context(), js, JobOptions{Bucket: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	x, want := clusterIndex(t, 300)
	dir := t.TempDir()
	m, err := export.NewManager(export.Config{
		Dir: dir, Files: files, FileMaxBytes: 5000,
		MinFreeBytes: -1, ExportReserveBytes: -1,
	}, export.IndexSource(x), zeroHead{}, jobs)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })

	id, err := m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"})
	if err != nil {
		t.Fatal(err)
	}
	var mf *export.Manifest
	for deadline := time.Now().Add(30 * time.Second); mf == nil; {
		st, err := m.Status("", id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case st.State == export.Completed:
			mf = st.Manifest
		case st.State == export.Failed || time.Now().After(deadline):
			t.Fatalf("job %s: %+v", id, st)
		default:
			time.Sleep(10 * time.Millisecond)
		}
	}
	if rec, err := jobs.GetJob(id); err != nil || !bytes.Contains(rec, []byte(`"completed"`)) {
		t.Errorf("job record in KV: %s (%v)", rec, err)
	}
	seen := map[string]bool{}
	multi := false
	for _, fi := range mf.Output {
		multi = multi || fi.Bytes > 1000
		for round := range 2 {
			f, err := m.OpenFile("", id, fi.Name)
			if err != nil {
				t.Fatalf("%s: %v", fi.Name, err)
			}
			all, err := io.ReadAll(f)
			if err != nil || int64(len(all)) != fi.Bytes {
				t.Fatalf("%s: read %d bytes (%v), manifest %d", fi.Name, len(all), err, fi.Bytes)
			}
			for line := range strings.SplitSeq(strings.TrimSuffix(string(all), "\n"), "\n") {
				var res struct{ ResourceType, ID string }
				_ = json.Unmarshal([]byte(line), &res)
				key := res.ResourceType + "/" + res.ID
				if key == "" || !want[key] {
					t.Fatalf("%s: unexpected line %q", fi.Name, line)
				}
				if round == 0 {
					seen[key] = true
				}
			}
			mid := fi.Bytes/2 + 1
			if _, err := f.Seek(mid, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if rest, err := io.ReadAll(f); err != nil || !bytes.Equal(rest, all[mid:]) {
				t.Errorf("%s: bytes after a seek to %d differ (%v)", fi.Name, mid, err)
			}
			f.Close()
		}
	}
	if len(seen) != len(want) {
		t.Errorf("exported %d resources, want %d", len(seen), len(want))
	}
	if !multi {
		t.Error("no file spans several parts: the test proves nothing")
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("export directory holds %d entries (%v), want none", len(ents), err)
	}
	if fjobs, err := files.Jobs(); err != nil || !slices.Equal(fjobs, []string{id}) {
		t.Errorf("FileStore jobs %q (%v), want [%s]", fjobs, err, id)
	}
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
	if fjobs, err := files.Jobs(); err != nil || len(fjobs) != 0 {
		t.Errorf("after Cancel FileStore jobs %q (%v)", fjobs, err)
	}
	if _, err := jobs.GetJob(id); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("after Cancel GetJob: %v, want index.ErrNotFound", err)
	}
}
