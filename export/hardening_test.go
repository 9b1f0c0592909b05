package export

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkstream/bulkstream/index/indextest"
)

// duBytes is the size of every file under dir.
func duBytes(t testing.TB, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	return n
}

// TestExportReserve: with an injected free-space function whose free space
// shrinks by what the exports wrote, a job whose writes would take the
// free space below ExportReserveBytes fails (OperationOutcome text saying
// the disk is low, counted by reason), leaves no files and never let the
// free space go below the reserve; a job that fits completes.
func TestExportReserve(t *testing.T) {
	const reserve = 8 << 20
	e := newEnv(t)
	var rs []resource
	pad := strings.Repeat("x", 1000)
	for i := range 6000 { // ~6 MB of Observations
		id := fmt.Sprint("o", i)
		rs = append(rs, resource{"Observation", id, fmt.Appendf(nil, `{"resourceType":"Observation","id":%q,"status":"final","note":[{"text":%q}]}`, id, pad)})
	}
	rs = append(rs, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)})
	e.f.apply(t, rs...)

	// The disk: reserve + 5 MiB free before the exports write anything.
	total := int64(reserve + 5<<20)
	var mu sync.Mutex
	minFree := total
	free := func(string) (int64, bool, error) {
		f := total - duBytes(t, e.dir)
		mu.Lock()
		minFree = min(minFree, f)
		mu.Unlock()
		return f, true, nil
	}
	reg := prometheus.NewRegistry()
	m := e.manager(t, Config{Workers: 1, ExportReserveBytes: reserve, MinFreeBytes: reserve, Registerer: reg},
		func(m *Manager) { m.freeBytes = free })

	big := submit(t, m, fullRequest())
	st := wait(t, m, big)
	if st.State != Failed || !strings.Contains(st.Error, "low on disk space") {
		t.Fatalf("big export: %s %q, want failed saying the disk is low", st.State, st.Error)
	}
	if _, err := os.Stat(m.jobDir(big)); !os.IsNotExist(err) {
		t.Errorf("failed job's directory still there: %v %v", dirFiles(t, m, big), err)
	}
	mu.Lock()
	if minFree < reserve {
		t.Errorf("free space went down to %d, below the reserve %d", minFree, reserve)
	}
	mu.Unlock()
	if got := testutil.ToFloat64(m.met.failed.WithLabelValues(failDiskReserve)); got != 1 {
		t.Errorf("jobs_failed_total{reason=disk_reserve} = %v, want 1", got)
	}

	small := fullRequest()
	small.Types = []string{"Patient"}
	mf := exported(t, m, small)
	if len(mf.Output) != 1 || mf.Output[0].Count != 1 {
		t.Errorf("small export manifest %+v", mf.Output)
	}
}

// TestConfigExportReserve: the reserve may not exceed MinFreeBytes when
// both are checked.
func TestConfigExportReserve(t *testing.T) {
	for _, tc := range []struct {
		min, reserve int64
		ok           bool
	}{
		{0, 0, true}, // defaults: 256 MiB and 128 MiB
		{100, 100, true},
		{100, 101, false},
		{-1, 1 << 40, true},
		{100, -1, true},
		{0, 512 << 20, false},
	} {
		cfg := Config{Dir: t.TempDir(), MinFreeBytes: tc.min, ExportReserveBytes: tc.reserve}
		_, err := NewManager(cfg, IndexSource(indextest.Open(t)), nil, indextest.Open(t))
		if (err == nil) != tc.ok {
			t.Errorf("MinFreeBytes %d, ExportReserveBytes %d: %v, want ok=%v", tc.min, tc.reserve, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "ExportReserveBytes") {
			t.Errorf("error %q does not name the field", err)
		}
	}
}

// TestElementsSkipsMalformedResource: a stored resource _elements cannot
// be applied to (meta.tag not an array, put straight into the index as
// ingest no longer accepts it) is left out and named in the error file;
// the rest of its type is exported and the counts are exact.
func TestElementsSkipsMalformedResource(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t,
		resource{"Patient", "good1", []byte(`{"resourceType":"Patient","id":"good1","gender":"male"}`)},
		resource{"Patient", "bad", []byte(`{"resourceType":"Patient","id":"bad","meta":{"tag":"not-an-array"},"gender":"x"}`)},
		resource{"Patient", "good2", []byte(`{"resourceType":"Patient","id":"good2","gender":"female"}`)})
	m := e.manager(t, Config{}, nil)
	req := fullRequest()
	req.Elements = []Element{{Name: "gender"}}
	id := submit(t, m, req)
	mf := waitManifest(t, m, id)
	c := readExport(t, m, id, mf)
	if got := keys(c.resources); strings.Join(got, " ") != "Patient/good1 Patient/good2" {
		t.Errorf("exported %v, want the two good Patients", got)
	}
	if len(mf.Output) != 1 || mf.Output[0].Count != 2 {
		t.Errorf("output %+v, want one file of 2", mf.Output)
	}
	if len(mf.Error) != 1 || mf.Error[0].Count != 1 {
		t.Fatalf("error files %+v, want one line", mf.Error)
	}
	lines := readLines(t, m, id, mf.Error[0].Name)
	checkFileInfo(t, m, id, mf.Error[0], lines)
	var oo struct {
		ResourceType string
		Issue        []struct{ Severity, Code, Diagnostics string }
	}
	if err := jsonUnmarshal(lines[0], &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 ||
		oo.Issue[0].Severity != "error" || !strings.Contains(oo.Issue[0].Diagnostics, "Patient/bad") {
		t.Errorf("error line %s (%v), want an OperationOutcome naming Patient/bad", lines[0], err)
	}
}

// TestFinishedCapPerClient: client A making many jobs never evicts client
// B's finished jobs through the global cap (it evicts from the client
// holding the most), and A's own cap (Kickoff.MaxFinished, or the Config
// default) removes A's own oldest.
func TestFinishedCapPerClient(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        Config
		maxFin     int // A's Kickoff.MaxFinished
		aKeeps     int
		aJobs      int
		bJobs      int
		globalOnly bool
	}{
		{name: "global cap evicts from the biggest holder", cfg: Config{MaxFinishedJobs: 4, MaxFinishedJobsPerClient: -1},
			aJobs: 10, bJobs: 2, aKeeps: 2},
		{name: "per-client cap from Kickoff", cfg: Config{MaxFinishedJobs: 100}, maxFin: 3, aJobs: 8, bJobs: 1, aKeeps: 3},
		{name: "per-client cap from Config", cfg: Config{MaxFinishedJobs: 100, MaxFinishedJobsPerClient: 2}, aJobs: 6, bJobs: 1, aKeeps: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.f.apply(t, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)})
			tc.cfg.Workers = 1
			m := e.manager(t, tc.cfg, nil)
			run := func(client string, maxFin int) string {
				id, err := m.Kickoff(t.Context(), Kickoff{Client: client, MaxFinished: maxFin, RequestURL: "http://x/$export"})
				if err != nil {
					t.Fatal(err)
				}
				waitManifest(t, m, id)
				return id
			}
			var bIDs, aIDs []string
			for range tc.bJobs {
				bIDs = append(bIDs, run("B", 0))
			}
			for range tc.aJobs {
				aIDs = append(aIDs, run("A", tc.maxFin))
			}
			gone := func(client, id string) bool {
				_, err := m.Status(client, id)
				return errors.Is(err, ErrNotFound)
			}
			checkFor(t, 10*time.Second, func() error {
				for _, id := range aIDs[:tc.aJobs-tc.aKeeps] {
					if !gone("A", id) {
						return fmt.Errorf("A's old job %s still kept", id)
					}
				}
				return nil
			})
			for _, id := range aIDs[tc.aJobs-tc.aKeeps:] {
				if gone("A", id) {
					t.Errorf("A's job %s, one of its %d newest, was evicted", id, tc.aKeeps)
				}
			}
			for _, id := range bIDs {
				if gone("B", id) {
					t.Errorf("B's job %s was evicted by A's jobs", id)
				}
			}
		})
	}
}

// TestEvictions: the global cap takes the oldest job of the client
// holding the most, one at a time.
func TestEvictions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	jobs := map[*job]string{}
	mk := func(client string, n int, from time.Duration) []finishedJob {
		var out []finishedJob
		for i := range n {
			j := &job{id: fmt.Sprint(client, i)}
			jobs[j] = client
			out = append(out, finishedJob{j: j, at: t0.Add(from + time.Duration(i)*time.Second)})
		}
		return out
	}
	by := map[string][]finishedJob{"a": mk("a", 5, 0), "b": mk("b", 3, time.Hour), "c": mk("c", 1, -time.Hour)}
	got := map[string]int{}
	for _, v := range evictions(by, -1, 6) {
		got[jobs[v.j]]++
	}
	// 9 jobs, cap 6: a 5→4→3 (a then ties with b: a's oldest is older), then
	// a 3 vs b 3 → a; left a 2, b 3, c 1.
	if got["a"] != 3 || got["b"] != 0 || got["c"] != 0 {
		t.Errorf("evicted %v, want 3 of a's", got)
	}

	// Without authorization every job is the anonymous client's (""):
	// only the global cap applies, not the per-client default.
	clear(jobs)
	by = map[string][]finishedJob{"": mk("", 8, 0)}
	if got := evictions(by, 3, 10); len(got) != 0 {
		t.Errorf("anonymous client under the global cap: %d evicted by the per-client cap, want 0", len(got))
	}
	by = map[string][]finishedJob{"": mk("", 8, 0)}
	if got := evictions(by, 3, 6); len(got) != 2 {
		t.Errorf("anonymous client, global cap 6 of 8: %d evicted, want 2", len(got))
	}
}

// TestDamagedFile: a completed file truncated, or changed with its size
// and mtime put back, is never served (ErrFileDamaged; the job turns
// failed saying so, counted); an untouched file is served with the
// SHA-256 of its bytes as Digest.
func TestDamagedFile(t *testing.T) {
	e := newEnv(t)
	var rs []resource
	for i := range 50 {
		id := fmt.Sprint("p", i)
		rs = append(rs, resource{"Patient", id, fmt.Appendf(nil, `{"resourceType":"Patient","id":%q}`, id)})
	}
	e.f.apply(t, rs...)
	reg := prometheus.NewRegistry()
	m := e.manager(t, Config{Registerer: reg}, func(m *Manager) { m.racyWindow = 0 })

	t.Run("untouched", func(t *testing.T) {
		id := submit(t, m, fullRequest())
		mf := waitManifest(t, m, id)
		name := mf.Output[0].Name
		for range 2 { // hashed, then served on the stamp
			f, err := m.OpenFile("", id, name)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%x", sha256.Sum256(b)); f.Digest() != want || int64(len(b)) != mf.Output[0].Bytes {
				t.Errorf("Digest %q, want %q (the bytes served)", f.Digest(), want)
			}
		}
	})

	damage := func(t *testing.T, name string, fn func(path string)) {
		id := submit(t, m, fullRequest())
		mf := waitManifest(t, m, id)
		file := mf.Output[0].Name
		path := filepath.Join(m.jobDir(id), file)
		fn(path)
		before := testutil.ToFloat64(m.met.damaged)
		if f, err := m.OpenFile("", id, file); !errors.Is(err, ErrFileDamaged) {
			if f != nil {
				f.Close()
			}
			t.Fatalf("%s: OpenFile = %v, want ErrFileDamaged", name, err)
		}
		if got := testutil.ToFloat64(m.met.damaged); got != before+1 {
			t.Errorf("files_damaged_total went %v → %v", before, got)
		}
		st, err := m.Status("", id)
		if err != nil || st.State != Failed || !strings.Contains(st.Error, file) || !strings.Contains(st.Error, "start a new export") {
			t.Errorf("%s: status %+v %v, want failed naming %s", name, st, err, file)
		}
		if _, err := m.OpenFile("", id, file); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: second OpenFile = %v, want ErrNotFound", name, err)
		}
		if _, err := os.Stat(m.jobDir(id)); !os.IsNotExist(err) {
			t.Errorf("%s: files of the failed job still on disk", name)
		}
	}
	t.Run("truncated", func(t *testing.T) {
		damage(t, "truncated", func(path string) {
			if err := os.Truncate(path, 10); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("byte flipped, size and mtime kept", func(t *testing.T) {
		damage(t, "flipped", func(path string) {
			// Serve it once first, so its stamp is recorded as trusted:
			// the flip must be caught through ctime, not a first hash.
			id, file := filepath.Base(filepath.Dir(path)), filepath.Base(path)
			f, err := m.OpenFile("", id, file)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			waitCtimeTick(t, fi)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[5] ^= 0x01
			if err := os.WriteFile(path, b, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if fi2, err := os.Stat(path); err != nil || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
				t.Fatalf("size or mtime changed: %v", err)
			}
		})
	})
}

// waitCtimeTick waits until the filesystem's clock has moved past fi's
// ctime, so a write now gets a different ctime (timestamps are coarse).
func waitCtimeTick(t *testing.T, fi os.FileInfo) {
	t.Helper()
	_, ctime, ok := inodeCtime(fi)
	if !ok {
		t.Skip("no ctime on this platform")
	}
	probe := filepath.Join(t.TempDir(), "probe")
	checkFor(t, 10*time.Second, func() error {
		if err := os.WriteFile(probe, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		pi, err := os.Stat(probe)
		if err != nil {
			t.Fatal(err)
		}
		if _, c, _ := inodeCtime(pi); c <= ctime {
			return errors.New("filesystem clock still at the file's ctime")
		}
		return nil
	})
}

// TestFinishedJobSheds: a finished job keeps in memory only what serving
// it needs (the client, its cap, the manifest); the parsed request, the
// ignored list and a long request URL stay in the stored record, and
// Status still shows the full URL, also after a restart.
func TestFinishedJobSheds(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)})
	m := e.manager(t, Config{}, nil)
	long := "http://x/$export?_elements=" + strings.Repeat("a", 20<<10)
	id, err := m.Kickoff(t.Context(), Kickoff{Client: "c", Lenient: true, RequestURL: long,
		Params: ps("_elements", "gender,birthDate", "_type", "Patient", "foo", "bar")})
	if err != nil {
		t.Fatal(err)
	}
	mf := waitManifest(t, m, id)
	if mf.Request != long {
		t.Errorf("manifest request is %d bytes, want the %d-byte URL", len(mf.Request), len(long))
	}
	j := m.lookup(id)
	m.mu.Lock()
	req, inMem := j.rec.Request, j.rec.Manifest.Request
	m.mu.Unlock()
	if req.Types != nil || req.Elements != nil || req.Ignored != nil || req.RequestURL != "" || req.Client != "c" || inMem != "" {
		t.Errorf("finished job holds %d types, %d elements, %d ignored, a %d-byte request URL and a %d-byte manifest URL in memory",
			len(req.Types), len(req.Elements), len(req.Ignored), len(req.RequestURL), len(inMem))
	}
	b, err := e.x.GetJob(id)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRecord(b)
	if err != nil || len(rec.Request.Elements) != 2 || len(rec.Request.Ignored) != 1 || rec.Manifest.Request != long {
		t.Errorf("stored record lost the request: %+v %v", rec.Request, err)
	}

	// After a restart: the same, and the files still check out (hashed
	// again: stamps are not persisted).
	if err := m.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	m2 := e.manager(t, Config{}, nil)
	st, err := m2.Status("c", id)
	if err != nil || st.State != Completed || st.Manifest.Request != long {
		t.Fatalf("after restart: %+v %v", st, err)
	}
	j2 := m2.lookup(id)
	m2.mu.Lock()
	req2 := j2.rec.Request
	m2.mu.Unlock()
	if req2.Elements != nil || req2.Ignored != nil || req2.Client != "c" {
		t.Errorf("after restart the job holds %d elements, %d ignored, client %q", len(req2.Elements), len(req2.Ignored), req2.Client)
	}
	for _, fi := range append(st.Manifest.Output, st.Manifest.Error...) {
		f, err := m2.OpenFile("c", id, fi.Name)
		if err != nil {
			t.Fatalf("after restart, OpenFile(%s): %v", fi.Name, err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if want := fmt.Sprintf("%x", sha256.Sum256(b)); f.Digest() != want {
			t.Errorf("after restart, %s digest %s, want %s", fi.Name, f.Digest(), want)
		}
	}
}
