package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
	"github.com/bulkstream/bulkstream/internal/synth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const samplePath = "../testdata/synthea-r4-100-patients.ndjson.gz"

var loadSample = sync.OnceValues(func() (*synth.Sample, error) { return synth.OpenSample(samplePath) })

func sample(tb testing.TB) *synth.Sample {
	tb.Helper()
	s, err := loadSample()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// resource is one generated resource.
type resource struct {
	typ, id string
	body    []byte
}

// syntheaResources returns every stride-th resource of the Synthea sample
// (with fresh ids), so every type is represented in a few hundred lines.
func syntheaResources(tb testing.TB, stride int) []resource {
	tb.Helper()
	g := &synth.Generator{Sample: sample(tb), Seed: 1, Scale: 1}
	var out []resource
	i := 0
	err := g.Each(func(typ, id string, line []byte) error {
		if i%stride == 0 {
			out = append(out, resource{typ, id, slices.Clone(line)})
		}
		i++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// feeder applies changes to an index as ingest would: increasing stream
// sequences and timestamps. It is not safe for concurrent use.
type feeder struct {
	x   *index.Index
	seq uint64
	at  time.Time
}

func newFeeder(x *index.Index) *feeder {
	return &feeder{x: x, at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (f *feeder) change(typ, id string, body []byte) index.Change {
	f.seq++
	f.at = f.at.Add(time.Millisecond)
	return index.Change{Seq: f.seq, Time: f.at, Type: typ, ID: id, Body: body, Delete: body == nil}
}

// apply upserts (body != nil) or deletes resources, in batches of 500,
// failing tb on an error. Only the test goroutine may call it (it calls
// Fatal); a background goroutine calls tryApply.
func (f *feeder) apply(tb testing.TB, rs ...resource) {
	tb.Helper()
	if err := f.tryApply(rs...); err != nil {
		tb.Fatal(err)
	}
}

// tryApply is apply returning the error.
func (f *feeder) tryApply(rs ...resource) error {
	for chunk := range slices.Chunk(rs, 500) {
		changes := make([]index.Change, 0, len(chunk))
		for _, r := range chunk {
			changes = append(changes, f.change(r.typ, r.id, r.body))
		}
		if _, err := f.x.Apply(context.Background(), changes, 0); err != nil {
			return err
		}
	}
	return nil
}

// fakeHead is a stream head.
type fakeHead struct {
	seq atomic.Uint64
	err atomic.Pointer[error]
}

func (h *fakeHead) Head(context.Context) (uint64, error) {
	if e := h.err.Load(); e != nil {
		return 0, *e
	}
	return h.seq.Load(), nil
}

// fakeClock is a settable wall clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testEnv is an index, a head and a directory a manager runs over.
type testEnv struct {
	x    *index.Index
	f    *feeder
	head *fakeHead
	dir  string
}

func newEnv(t testing.TB) *testEnv {
	x := indextest.Open(t)
	return &testEnv{x: x, f: newFeeder(x), head: &fakeHead{}, dir: t.TempDir()}
}

// manager builds and starts a Manager over e, keeping its records in the
// index; setup may adjust it before Start. It is closed when t ends.
func (e *testEnv) manager(t testing.TB, cfg Config, setup func(*Manager)) *Manager {
	t.Helper()
	return e.managerWith(t, cfg, e.x, setup)
}

// managerWith is manager with the job records in store.
func (e *testEnv) managerWith(t testing.TB, cfg Config, store JobStore, setup func(*Manager)) *Manager {
	t.Helper()
	cfg.Dir = e.dir
	m := startManager(t, cfg, IndexSource(e.x), e.head, store, setup)
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return m
}

// startManager builds a Manager (disk checks off unless cfg sets them)
// and starts it; setup may adjust it before Start. The caller closes it.
func startManager(t testing.TB, cfg Config, src Source, head Head, store JobStore, setup func(*Manager)) *Manager {
	t.Helper()
	if cfg.MinFreeBytes == 0 {
		cfg.MinFreeBytes = -1
	}
	if cfg.ExportReserveBytes == 0 {
		cfg.ExportReserveBytes = -1
	}
	m, err := NewManager(cfg, src, head, store)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(m)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m
}

// startOver starts a Manager over x alone (no stream head, no disk
// check), exporting to a temporary directory, and closes it when tb ends:
// for benchmarks and harnesses that bring their own index.
func startOver(tb testing.TB, x *index.Index) *Manager {
	tb.Helper()
	// A head at 0: jobs wait for nothing beyond what is applied.
	return (&testEnv{x: x, head: &fakeHead{}, dir: tb.TempDir()}).manager(tb, Config{}, nil)
}

// exportAll queues a full export and polls its job's state every poll
// until it completes, failing tb if it fails. It reads the job directly,
// not through Status, so as to add nothing to what is measured.
func exportAll(tb testing.TB, m *Manager, poll time.Duration) (string, *job) {
	tb.Helper()
	id, err := m.submit(context.Background(), fullRequest(), 0, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	j := m.lookup(id)
	for {
		m.mu.Lock()
		s, msg := j.rec.State, j.rec.Error
		m.mu.Unlock()
		switch s {
		case Completed:
			return id, j
		case Failed:
			tb.Fatal(msg)
		}
		time.Sleep(poll)
	}
}

// fullRequest exports everything.
func fullRequest() Request {
	return Request{Until: index.Unbounded, OutputFormat: "application/fhir+ndjson", RequestURL: "http://x/$export"}
}

func sinceRequest(since uint64) Request {
	r := fullRequest()
	r.Since, r.HasSince = since, true
	return r
}

func submit(t testing.TB, m *Manager, req Request) string {
	t.Helper()
	id, err := m.submit(t.Context(), req, 0, m.cfg.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// checkFor polls fn until it returns nil or d passes.
func checkFor(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ownerOf returns the client that started job id ("" when unknown), so
// helpers can poll any job as its owner.
func ownerOf(m *Manager, id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	j := m.all[id]
	if j == nil {
		return ""
	}
	return j.rec.Request.Client
}

// wait polls Status, as the job's owner, until the job is completed or
// failed.
func wait(t testing.TB, m *Manager, id string) Status {
	t.Helper()
	client := ownerOf(m, id)
	var st Status
	checkFor(t, 30*time.Second, func() error {
		var err error
		st, err = m.Status(client, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == Completed || st.State == Failed {
			return nil
		}
		return fmt.Errorf("job %s is %s: %s", id, st.State, st.Progress)
	})
	return st
}

// waitManifest waits for a job to complete and returns its manifest.
func waitManifest(t testing.TB, m *Manager, id string) *Manifest {
	t.Helper()
	st := wait(t, m, id)
	if st.State != Completed {
		t.Fatalf("job failed: %s", st.Error)
	}
	return st.Manifest
}

// exported runs an export to completion.
func exported(t testing.TB, m *Manager, req Request) *Manifest {
	t.Helper()
	return waitManifest(t, m, submit(t, m, req))
}

// readLines reads a file through OpenFile.
func readLines(t testing.TB, m *Manager, id, name string) [][]byte {
	t.Helper()
	f, err := m.OpenFile(ownerOf(m, id), id, name)
	if err != nil {
		t.Fatalf("OpenFile(%s): %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != f.Size() {
		t.Errorf("%s: read %d bytes, Size() = %d", name, len(b), f.Size())
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		t.Fatalf("%s: empty or no final newline", name)
	}
	return slices.Collect(func(yield func([]byte) bool) {
		for l := range strings.SplitSeq(string(b[:len(b)-1]), "\n") {
			if !yield([]byte(l)) {
				return
			}
		}
	})
}

// meta is what the tests read from an exported line.
type meta struct {
	ResourceType string          `json:"resourceType"`
	ID           string          `json:"id"`
	Type         json.RawMessage `json:"type"`
	Meta         struct {
		LastUpdated string `json:"lastUpdated"`
		VersionID   string `json:"versionId"`
		Tag         []struct {
			Code string `json:"code"`
		} `json:"tag"`
	} `json:"meta"`
	Entry []struct {
		Request struct {
			Method string `json:"method"`
			URL    string `json:"url"`
		} `json:"request"`
	} `json:"entry"`
}

func parseLine(t testing.TB, line []byte) meta {
	t.Helper()
	var mt meta
	if err := json.Unmarshal(line, &mt); err != nil {
		t.Fatalf("bad line %.200q: %v", line, err)
	}
	return mt
}

// exportContent reads every file of a completed job: resources by
// "Type/id" and deleted "Type/id"s, checking the manifest against the
// files on the way.
type exportContent struct {
	resources map[string][]byte
	deleted   map[string]string // Type/id → deletion time
}

func readExport(t testing.TB, m *Manager, id string, mf *Manifest) exportContent {
	t.Helper()
	c := exportContent{resources: map[string][]byte{}, deleted: map[string]string{}}
	for _, fi := range mf.Output {
		lines := readLines(t, m, id, fi.Name)
		checkFileInfo(t, m, id, fi, lines)
		for _, l := range lines {
			mt := parseLine(t, l)
			if mt.ResourceType != fi.Type {
				t.Errorf("%s: line of type %s", fi.Name, mt.ResourceType)
			}
			k := mt.ResourceType + "/" + mt.ID
			if _, dup := c.resources[k]; dup {
				t.Errorf("%s exported twice", k)
			}
			c.resources[k] = l
		}
	}
	for _, fi := range mf.Deleted {
		if fi.Type != "Bundle" || !strings.Contains(fi.Name, "-deleted-") {
			t.Errorf("deleted item %+v", fi)
		}
		lines := readLines(t, m, id, fi.Name)
		checkFileInfo(t, m, id, fi, lines)
		for _, l := range lines {
			mt := parseLine(t, l)
			if mt.ResourceType != "Bundle" || string(mt.Type) != `"transaction"` || len(mt.Entry) == 0 {
				t.Fatalf("deleted line %s", l)
			}
			for _, e := range mt.Entry {
				if e.Request.Method != "DELETE" {
					t.Errorf("deleted entry %s", l)
				}
				if _, dup := c.deleted[e.Request.URL]; dup {
					t.Errorf("%s deleted twice", e.Request.URL)
				}
				if !strings.HasPrefix(fi.Name, strings.Split(e.Request.URL, "/")[0]+"-deleted-") {
					t.Errorf("%s in %s", e.Request.URL, fi.Name)
				}
				c.deleted[e.Request.URL] = mt.Meta.LastUpdated
			}
		}
	}
	for k := range c.deleted {
		if _, ok := c.resources[k]; ok {
			t.Errorf("%s both in output and deleted", k)
		}
	}
	return c
}

// checkFileInfo checks a manifest item against its file.
func checkFileInfo(t testing.TB, m *Manager, id string, fi FileInfo, lines [][]byte) {
	t.Helper()
	if int64(len(lines)) != fi.Count || fi.Count == 0 {
		t.Errorf("%s: %d lines, manifest count %d", fi.Name, len(lines), fi.Count)
	}
	st, err := os.Stat(filepath.Join(m.jobDir(id), fi.Name))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != fi.Bytes {
		t.Errorf("%s: %d bytes, manifest %d", fi.Name, st.Size(), fi.Bytes)
	}
}

// jobDir is where a job's files are with the default store (tests read
// and damage them there).
func (m *Manager) jobDir(id string) string { return filepath.Join(m.cfg.Dir, id) }

// dirFiles lists a job directory.
func dirFiles(t testing.TB, m *Manager, id string) []string {
	t.Helper()
	ents, err := os.ReadDir(m.jobDir(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// indexState is the current resources of the index by "Type/id".
func indexState(t testing.TB, x *index.Index) map[string][]byte {
	t.Helper()
	snap, err := x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	state := map[string][]byte{}
	for _, c := range snap.Counts() {
		err := snap.Scan(t.Context(), c.Type, 0, index.Unbounded, func(e index.Entry) error {
			if !e.Deleted {
				state[e.Type+"/"+e.ID] = slices.Clone(e.Resource)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return state
}

// keys returns the sorted keys of a map.
func keys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
