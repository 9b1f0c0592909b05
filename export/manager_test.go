package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkstream/bulkstream/index"
)

func TestFullExport(t *testing.T) {
	e := newEnv(t)
	rs := syntheaResources(t, 100)
	e.f.apply(t, rs...)
	// A deleted resource is not part of a full export.
	e.f.apply(t, resource{typ: rs[0].typ, id: rs[0].id})
	m := e.manager(t, Config{}, nil)

	id := submit(t, m, fullRequest())
	mf := waitManifest(t, m, id)

	if got, want := mf.TransactionTime, index.FormatInstant(e.x.Clock()); got != want {
		t.Errorf("transactionTime = %s, want %s (the snapshot's clock)", got, want)
	}
	if mf.Request != "http://x/$export" || mf.Error == nil || len(mf.Error) != 0 || mf.Deleted != nil {
		t.Errorf("manifest = %+v", mf)
	}
	c := readExport(t, m, id, mf)
	want := indexState(t, e.x)
	if len(c.resources) != len(want) || len(want) != len(rs)-1 {
		t.Errorf("exported %d resources, index has %d (applied %d, deleted 1)", len(c.resources), len(want), len(rs))
	}
	for k, v := range want {
		if !bytes.Equal(c.resources[k], v) {
			t.Errorf("%s: exported %q, stored %q", k, c.resources[k], v)
		}
	}
	// One file per type (under the default limits), named <Type>-1.ndjson,
	// counts matching the index.
	counts := map[string]int64{}
	for _, tc := range e.x.Counts() {
		if tc.Resources > 0 {
			counts[tc.Type] = tc.Resources
		}
	}
	if len(mf.Output) != len(counts) {
		t.Errorf("%d output files for %d types", len(mf.Output), len(counts))
	}
	for _, fi := range mf.Output {
		if fi.Name != fi.Type+"-1.ndjson" || fi.Count != counts[fi.Type] {
			t.Errorf("output %+v, index has %d", fi, counts[fi.Type])
		}
	}
	// Every line is within the bounds; the directory holds exactly the
	// manifest's files (no temporary files).
	for k, l := range c.resources {
		if lu := parseLine(t, l).Meta.LastUpdated; lu == "" || lu > mf.TransactionTime {
			t.Errorf("%s: lastUpdated %s after transactionTime %s", k, lu, mf.TransactionTime)
		}
	}
	var names []string
	for _, fi := range mf.files() {
		names = append(names, fi.Name)
	}
	slices.Sort(names)
	if got := dirFiles(t, m, id); !slices.Equal(got, names) {
		t.Errorf("job directory = %v, want %v", got, names)
	}
}

func TestSplitting(t *testing.T) {
	rs := syntheaResources(t, 50)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"count", Config{FileMaxResources: 7}},
		{"bytes", Config{FileMaxBytes: 20_000}},
		{"both", Config{FileMaxResources: 5, FileMaxBytes: 8_000}},
		{"tiny", Config{FileMaxBytes: 10}}, // every resource alone
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.f.apply(t, rs...)
			m := e.manager(t, tc.cfg, nil)
			id := submit(t, m, fullRequest())
			mf := waitManifest(t, m, id)
			c := readExport(t, m, id, mf)
			if want := indexState(t, e.x); len(c.resources) != len(want) {
				t.Errorf("exported %d resources, want %d", len(c.resources), len(want))
			}
			perType := map[string]int{}
			maxCount := cmpOr(tc.cfg.FileMaxResources, DefaultFileMaxResources)
			maxBytes := cmpOr(tc.cfg.FileMaxBytes, DefaultFileMaxBytes)
			for _, fi := range mf.Output {
				perType[fi.Type]++
				if want := fmt.Sprintf("%s-%d.ndjson", fi.Type, perType[fi.Type]); fi.Name != want {
					t.Errorf("file %s, want %s", fi.Name, want)
				}
				if fi.Count > maxCount || (fi.Bytes > maxBytes && fi.Count != 1) {
					t.Errorf("%s: %d resources, %d bytes over the limits", fi.Name, fi.Count, fi.Bytes)
				}
			}
			// Splitting happened, and files are full but for the last of
			// a type: a file ends only when the next line would not fit.
			if len(mf.Output) <= len(perType) {
				t.Errorf("%d files for %d types: nothing was split", len(mf.Output), len(perType))
			}
			for i, fi := range mf.Output {
				if i+1 == len(mf.Output) || mf.Output[i+1].Type != fi.Type {
					continue
				}
				next := readLines(t, m, id, mf.Output[i+1].Name)[0]
				if fi.Count < maxCount && fi.Bytes+int64(len(next))+1 <= maxBytes {
					t.Errorf("%s ended early (%d resources, %d bytes)", fi.Name, fi.Count, fi.Bytes)
				}
			}
		})
	}
}

func cmpOr(v, d int64) int64 {
	if v == 0 {
		return d
	}
	return v
}

// changeSet applies updates, deletes and creates after a first export.
func TestSinceExport(t *testing.T) {
	e := newEnv(t)
	rs := syntheaResources(t, 100)
	e.f.apply(t, rs...)
	m := e.manager(t, Config{}, nil)
	mf1 := exported(t, m, fullRequest())

	since, err := time.Parse(time.RFC3339Nano, mf1.TransactionTime)
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the first export: update 0..9, delete 10..14, create
	// two, and delete one resource the index never had.
	var changed []resource
	for _, r := range rs[:10] {
		// A changed body (an identical one is a no-op for the index).
		body := append(slices.Clone(r.body[:len(r.body)-1]), `,"implicitRules":"urn:test:changed"}`...)
		changed = append(changed, resource{r.typ, r.id, body})
	}
	for _, r := range rs[10:15] {
		changed = append(changed, resource{typ: r.typ, id: r.id})
	}
	changed = append(changed,
		resource{"Patient", "new-1", []byte(`{"resourceType":"Patient","id":"new-1"}`)},
		resource{"Basic", "new-2", []byte(`{"resourceType":"Basic","id":"new-2","code":{"text":"x"}}`)},
		resource{typ: "Patient", id: "never-seen"}) // a no-op: not in deleted
	e.f.apply(t, changed...)

	id2 := submit(t, m, sinceRequest(index.Micros(since)))
	mf2 := waitManifest(t, m, id2)
	c := readExport(t, m, id2, mf2)
	wantRes := map[string]bool{"Patient/new-1": true, "Basic/new-2": true}
	for _, r := range rs[:10] {
		wantRes[r.typ+"/"+r.id] = true
	}
	if got := keys(c.resources); !slices.Equal(got, keys(wantRes)) {
		t.Errorf("since export resources = %v, want %v", got, keys(wantRes))
	}
	wantDel := map[string]bool{}
	for _, r := range rs[10:15] {
		wantDel[r.typ+"/"+r.id] = true
	}
	if got := keys(c.deleted); !slices.Equal(got, keys(wantDel)) {
		t.Errorf("deleted = %v, want %v", got, keys(wantDel))
	}
	for k, lu := range c.deleted {
		if lu <= mf1.TransactionTime || lu > mf2.TransactionTime {
			t.Errorf("%s deleted at %s, not in (%s, %s]", k, lu, mf1.TransactionTime, mf2.TransactionTime)
		}
	}
	for k, l := range c.resources {
		if lu := parseLine(t, l).Meta.LastUpdated; lu <= mf1.TransactionTime || lu > mf2.TransactionTime {
			t.Errorf("%s lastUpdated %s, not in (%s, %s]", k, lu, mf1.TransactionTime, mf2.TransactionTime)
		}
	}
	// Deleted Bundles carry exactly one entry and the deleted-file name.
	for _, fi := range mf2.Deleted {
		for _, l := range readLines(t, m, id2, fi.Name) {
			if mt := parseLine(t, l); len(mt.Entry) != 1 || mt.Meta.LastUpdated == "" {
				t.Errorf("deleted line %s", l)
			}
		}
	}

	// Nothing changed since: an empty export (no files at all).
	mf3 := exported(t, m, sinceRequest(index.Micros(mustTime(t, mf2.TransactionTime))))
	if len(mf3.Output) != 0 || len(mf3.Deleted) != 0 || mf3.TransactionTime != mf2.TransactionTime {
		t.Errorf("export with nothing new: %+v", mf3)
	}
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestUntilAndTypes(t *testing.T) {
	e := newEnv(t)
	rs := syntheaResources(t, 100)
	e.f.apply(t, rs[:100]...)
	mid := e.x.Clock()
	e.f.apply(t, rs[100:]...)
	m := e.manager(t, Config{}, nil)

	t.Run("until", func(t *testing.T) {
		req := fullRequest()
		req.Until = mid
		id := submit(t, m, req)
		mf := waitManifest(t, m, id)
		c := readExport(t, m, id, mf)
		if len(c.resources) != 100 {
			t.Errorf("exported %d resources, want the 100 before _until", len(c.resources))
		}
		for k, l := range c.resources {
			if lu := parseLine(t, l).Meta.LastUpdated; lu > index.FormatInstant(mid) {
				t.Errorf("%s lastUpdated %s after until", k, lu)
			}
		}
		// transactionTime stays the snapshot's: not capped at _until (the IG
		// leaves that open).
		if mf.TransactionTime != index.FormatInstant(e.x.Clock()) {
			t.Errorf("transactionTime %s", mf.TransactionTime)
		}
	})
	t.Run("types", func(t *testing.T) {
		req := fullRequest()
		req.Types = []string{"Patient", "Observation", "Medication"} // no Medication in the index
		id := submit(t, m, req)
		mf := waitManifest(t, m, id)
		c := readExport(t, m, id, mf)
		want := 0
		for _, r := range rs {
			if r.typ == "Patient" || r.typ == "Observation" {
				want++
			}
		}
		if len(c.resources) != want {
			t.Errorf("exported %d resources, want %d", len(c.resources), want)
		}
		for _, fi := range mf.Output {
			if fi.Type != "Patient" && fi.Type != "Observation" {
				t.Errorf("unrequested file %+v", fi)
			}
		}
	})
}

func TestElements(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 100)...)
	elems := []Element{{Name: "status"}, {Type: "Patient", Name: "birthDate"}}
	probe := []byte(`{"resourceType":"Patient","id":"p","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00.000000Z"},"birthDate":"1970-01-01","gender":"female"}`)
	// A regression that returns the input unchanged must fail here, not
	// skip: the export below would then only test whole resources.
	got, err := applyElements(nil, probe, "Patient", elems)
	if err != nil {
		t.Fatalf("applyElements(probe): %v", err)
	}
	if bytes.Equal(got, probe) {
		t.Fatalf("applyElements returned its input unchanged: %s", got)
	}
	if want := `"birthDate":"1970-01-01"`; !bytes.Contains(got, []byte(want)) || bytes.Contains(got, []byte(`"gender"`)) {
		t.Fatalf("applyElements(probe) = %s, want birthDate kept and gender dropped", got)
	}
	m := e.manager(t, Config{}, nil)
	req := fullRequest()
	req.Elements = elems
	id := submit(t, m, req)
	mf := waitManifest(t, m, id)
	c := readExport(t, m, id, mf)
	if len(c.resources) == 0 {
		t.Fatal("nothing exported")
	}
	for k, l := range c.resources {
		mt := parseLine(t, l)
		if !slices.ContainsFunc(mt.Meta.Tag, func(tag struct {
			Code string `json:"code"`
		}) bool {
			return tag.Code == "SUBSETTED"
		}) {
			t.Errorf("%s not tagged SUBSETTED: %s", k, l)
		}
		if strings.HasPrefix(k, "Patient/") && (!bytes.Contains(l, []byte(`"birthDate"`)) || bytes.Contains(l, []byte(`"name"`))) {
			t.Errorf("%s not reduced to birthDate: %s", k, l)
		}
	}
}

// TestChainedExports: while a writer keeps changing the index, a full
// export followed by _since exports chained on transactionTime rebuilds
// the index's final state exactly.
func TestChainedExports(t *testing.T) {
	e := newEnv(t)
	types := []string{"Patient", "Observation", "Encounter"}
	body := func(typ, id string, v int) []byte {
		return fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"extension":[{"url":"http://example.org/v","valueInteger":%d}]}`, typ, id, v)
	}
	var initial []resource
	for i := range 150 {
		typ := types[i%3]
		id := fmt.Sprintf("r%d", i)
		initial = append(initial, resource{typ, id, body(typ, id, 0)})
	}
	e.f.apply(t, initial...)
	m := e.manager(t, Config{Workers: 2, FileMaxResources: 40}, nil)

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var writes int
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for v := 1; ctx.Err() == nil; v++ {
			batch := make([]resource, 1+rng.IntN(20))
			for i := range batch {
				typ := types[rng.IntN(3)]
				id := fmt.Sprintf("r%d", rng.IntN(250)) // beyond 150: creates
				if rng.IntN(4) == 0 {
					batch[i] = resource{typ: typ, id: id}
				} else {
					batch[i] = resource{typ, id, body(typ, id, v)}
				}
			}
			// Not e.f.apply: Fatal must not be called off the test
			// goroutine.
			if err := e.f.tryApply(batch...); err != nil {
				t.Errorf("writer: %v", err)
				return
			}
			writes += len(batch)
			time.Sleep(200 * time.Microsecond)
		}
	})

	state := map[string][]byte{}
	merge := func(c exportContent) {
		for k := range c.deleted {
			delete(state, k)
		}
		for k, v := range c.resources {
			state[k] = v
		}
	}
	run := func(req Request) *Manifest {
		id := submit(t, m, req)
		mf := waitManifest(t, m, id)
		merge(readExport(t, m, id, mf))
		return mf
	}
	mf := run(fullRequest())
	exports := 1
	for range 15 {
		next := run(sinceRequest(index.Micros(mustTime(t, mf.TransactionTime))))
		if next.TransactionTime < mf.TransactionTime {
			t.Fatalf("transactionTime went back: %s then %s", mf.TransactionTime, next.TransactionTime)
		}
		mf = next
		exports++
	}
	stop()
	wg.Wait()
	run(sinceRequest(index.Micros(mustTime(t, mf.TransactionTime))))
	exports++

	want := indexState(t, e.x)
	if len(state) != len(want) {
		t.Errorf("rebuilt %d resources, index has %d", len(state), len(want))
	}
	for k, v := range want {
		if !bytes.Equal(state[k], v) {
			t.Errorf("%s: rebuilt %q, index %q", k, state[k], v)
		}
	}
	for k := range state {
		if _, ok := want[k]; !ok {
			t.Errorf("%s rebuilt but not in the index (resurrected)", k)
		}
	}
	t.Logf("%d exports during %d writes; %d resources at the end", exports, writes, len(want))
}

func TestWaitForIngest(t *testing.T) {
	e := newEnv(t)
	rs := syntheaResources(t, 200)
	e.f.apply(t, rs[:50]...)
	e.head.seq.Store(e.f.seq + 20) // published but not applied yet
	m := e.manager(t, Config{}, nil)

	id := submit(t, m, fullRequest())
	want := fmt.Sprintf("waiting for ingest to reach sequence %d (at %d)", e.f.seq+20, e.f.seq)
	checkFor(t, 5*time.Second, func() error {
		st, err := m.Status("", id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != Running || st.Progress != want {
			return fmt.Errorf("status %s %q, want running %q", st.State, st.Progress, want)
		}
		return nil
	})
	e.f.apply(t, rs[50:60]...) // still 10 short
	time.Sleep(20 * time.Millisecond)
	if st, _ := m.Status("", id); st.State != Running || !strings.HasPrefix(st.Progress, "waiting") {
		t.Fatalf("status %+v before the head is applied", st)
	}
	e.f.apply(t, rs[60:70]...)
	mf := waitManifest(t, m, id)
	if c := readExport(t, m, id, mf); len(c.resources) != 70 {
		t.Errorf("exported %d resources, want the 70 up to the head", len(c.resources))
	}
}

func TestHeadUnavailable(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	natsDown := errors.New("nats: no responders")
	e.head.err.Store(&natsDown)
	m := e.manager(t, Config{}, nil)
	mf := exported(t, m, fullRequest())
	if mf.TransactionTime != index.FormatInstant(e.x.Clock()) || len(mf.Output) == 0 {
		t.Errorf("manifest %+v", mf)
	}
}

// TestHeadUnavailableSinceAhead: without the stream head, a _since later
// than what this server has applied (a transactionTime another replica
// gave the client) is refused with 503 and Retry-After, rather than
// exported as of an older snapshot whose transactionTime would take the
// client back in time; a _since it has reached is served.
func TestHeadUnavailableSinceAhead(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 40)...)
	natsDown := errors.New("nats: no responders")
	e.head.err.Store(&natsDown)
	m := e.manager(t, Config{}, nil)
	clock := e.x.Clock()
	var ue *UnavailableError
	if _, err := m.submit(t.Context(), sinceRequest(clock+1000), 0, m.cfg.Now()); !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Fatalf("_since ahead of the applied clock without a head: %v, want UnavailableError with Retry-After", err)
	}
	mf := exported(t, m, sinceRequest(clock-1))
	if mf.TransactionTime != index.FormatInstant(clock) {
		t.Errorf("transactionTime %s, want %s", mf.TransactionTime, index.FormatInstant(clock))
	}
	e.head.err.Store(nil)
	e.head.seq.Store(e.f.seq)
	if _, err := m.submit(t.Context(), sinceRequest(clock+1000), 0, m.cfg.Now()); err != nil {
		t.Errorf("with the head readable: %v", err)
	}
}

func TestCatchUpTimeout(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	e.head.seq.Store(e.f.seq + 1)
	m := e.manager(t, Config{MaxCatchUpWait: 50 * time.Millisecond}, nil)
	id := submit(t, m, fullRequest())
	st := wait(t, m, id)
	if st.State != Failed || !strings.Contains(st.Error, "ingest did not reach stream sequence") {
		t.Errorf("status %+v, want failed for catch-up", st)
	}
}

// blockAfter returns a scan hook that lets n entries through, then
// signals and blocks until the job's context ends.
func blockAfter(n int) (func(context.Context) error, <-chan struct{}) {
	var mu sync.Mutex
	seen := 0
	blocked := make(chan struct{})
	return func(ctx context.Context) error {
		mu.Lock()
		seen++
		s := seen
		mu.Unlock()
		if s <= n {
			return nil
		}
		if s == n+1 {
			close(blocked)
		}
		<-ctx.Done()
		return context.Cause(ctx)
	}, blocked
}

func TestRestartDuringJob(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 20)...) // ~1900 resources
	hook, blocked := blockAfter(700)
	m1, err := NewManager(Config{Dir: e.dir, MinFreeBytes: -1, FileMaxResources: 100}, IndexSource(e.x), e.head, e.x)
	if err != nil {
		t.Fatal(err)
	}
	m1.hookScan = hook
	if err := m1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := submit(t, m1, fullRequest())
	<-blocked
	// Some files are complete, one is half written.
	if len(dirFiles(t, m1, id)) < 2 {
		t.Fatalf("job directory %v: expected finished and partial files", dirFiles(t, m1, id))
	}
	if err := m1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m1.submit(t.Context(), fullRequest(), 0, time.Now()); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after Close = %v, want ErrClosed", err)
	}
	rec, err := e.x.GetJob(id)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := decodeRecord(rec); r.State != Queued {
		t.Errorf("persisted state after Close = %s, want queued", r.State)
	}
	if got := dirFiles(t, m1, id); len(got) != 0 {
		t.Errorf("partial files left after Close: %v", got)
	}
	// A partial file left by a crash is removed by Start, and an orphaned
	// job directory too.
	if err := os.MkdirAll(m1.jobDir(id), 0o750); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(m1.jobDir(id), "Claim-1.ndjson.tmp"), []byte("{"), 0o640)
	orphan := filepath.Join(e.dir, newJobID())
	os.MkdirAll(orphan, 0o750)
	other := filepath.Join(e.dir, "not-a-job")
	os.MkdirAll(other, 0o750)

	m2 := e.manager(t, Config{FileMaxResources: 100}, nil)
	mf := waitManifest(t, m2, id)
	c := readExport(t, m2, id, mf)
	if want := indexState(t, e.x); len(c.resources) != len(want) {
		t.Errorf("exported %d resources after restart, want %d", len(c.resources), len(want))
	}
	var names []string
	for _, fi := range mf.files() {
		names = append(names, fi.Name)
	}
	slices.Sort(names)
	if got := dirFiles(t, m2, id); !slices.Equal(got, names) {
		t.Errorf("job directory = %v, want %v", got, names)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphaned job directory not removed: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a directory not named like a job was removed: %v", err)
	}
}

func TestRestartKeepsCompletedJobs(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	m1, err := NewManager(Config{Dir: e.dir, MinFreeBytes: -1}, IndexSource(e.x), e.head, e.x)
	if err != nil {
		t.Fatal(err)
	}
	if err := m1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := submit(t, m1, fullRequest())
	mf := waitManifest(t, m1, done)
	lost := submit(t, m1, fullRequest())
	waitManifest(t, m1, lost)
	if err := m1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(m1.jobDir(lost), mf.Output[0].Name))

	m2 := e.manager(t, Config{}, nil)
	st, err := m2.Status("", done)
	if err != nil || st.State != Completed || st.Manifest.TransactionTime != mf.TransactionTime {
		t.Fatalf("Status after restart = %+v, %v", st, err)
	}
	readExport(t, m2, done, st.Manifest)
	if st, err := m2.Status("", lost); err != nil || st.State != Failed {
		t.Errorf("job with lost files: %+v, %v; want failed", st, err)
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 40)...)
	hook, blocked := blockAfter(300)
	m := e.manager(t, Config{Workers: 1, FileMaxResources: 50}, func(m *Manager) { m.hookScan = hook })

	running := submit(t, m, fullRequest())
	queued := submit(t, m, fullRequest())
	<-blocked
	if len(dirFiles(t, m, running)) == 0 {
		t.Fatal("no files written before the cancel")
	}
	if st, _ := m.Status("", queued); st.State != Queued {
		t.Errorf("second job %s, want queued", st.State)
	}
	for _, id := range []string{running, queued} {
		if err := m.Cancel("", id); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Status("", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Status after Cancel = %v, want ErrNotFound", err)
		}
		if err := m.Cancel("", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("second Cancel = %v, want ErrNotFound", err)
		}
		if got := dirFiles(t, m, id); len(got) != 0 {
			t.Errorf("files left after Cancel: %v", got)
		}
		if _, err := e.x.GetJob(id); !errors.Is(err, index.ErrNotFound) {
			t.Errorf("record after Cancel: %v", err)
		}
	}
	if err := m.Cancel("", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Cancel(unknown) = %v", err)
	}
}

func TestCancelCompleted(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	m := e.manager(t, Config{}, nil)
	id := submit(t, m, fullRequest())
	mf := waitManifest(t, m, id)
	f, err := m.OpenFile("", id, mf.Output[0].Name) // a download in progress
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
	if _, err := m.OpenFile("", id, mf.Output[0].Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenFile after Cancel = %v, want ErrNotFound", err)
	}
	if got := dirFiles(t, m, id); len(got) != 0 {
		t.Errorf("files left after Cancel: %v", got)
	}
	buf := make([]byte, 10)
	if _, err := f.Read(buf); err != nil {
		t.Errorf("open download broken by Cancel: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m := e.manager(t, Config{TTL: time.Hour, Now: clock.Now}, nil)
	a := submit(t, m, fullRequest())
	mf := waitManifest(t, m, a)
	st, _ := m.Status("", a)
	if want := clock.Now().Add(time.Hour); !st.Expires.Equal(want) {
		t.Errorf("Expires = %v, want %v", st.Expires, want)
	}
	clock.Add(30 * time.Minute)
	b := submit(t, m, fullRequest())
	waitManifest(t, m, b)

	clock.Add(31 * time.Minute) // a expired, b not
	if _, err := m.OpenFile("", a, mf.Output[0].Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenFile of expired job = %v", err)
	}
	m.expire()
	if _, err := m.Status("", a); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status of expired job = %v", err)
	}
	if got := dirFiles(t, m, a); len(got) != 0 {
		t.Errorf("expired files left: %v", got)
	}
	if _, err := e.x.GetJob(a); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("expired record left: %v", err)
	}
	if st, err := m.Status("", b); err != nil || st.State != Completed {
		t.Errorf("unexpired job: %+v, %v", st, err)
	}
	clock.Add(time.Hour)
	if _, err := m.Status("", b); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status past Expires = %v (lazy expiry)", err)
	}
}

func TestTooManyJobs(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	hook, blocked := blockAfter(10)
	m := e.manager(t, Config{Workers: 1, MaxActiveJobs: 3}, func(m *Manager) { m.hookScan = hook })
	var ids []string
	for range 3 {
		ids = append(ids, submit(t, m, fullRequest()))
	}
	<-blocked
	_, err := m.submit(t.Context(), fullRequest(), 0, time.Now())
	var tm *TooManyJobsError
	if !errors.As(err, &tm) || tm.RetryAfter < time.Second || tm.RetryAfter > time.Minute {
		t.Fatalf("fourth kick-off = %v, want *TooManyJobsError with a sane RetryAfter", err)
	}
	// A finished (here: cancelled) job frees a slot; completed jobs never
	// count.
	if err := m.Cancel("", ids[2]); err != nil {
		t.Fatal(err)
	}
	submit(t, m, fullRequest())
}

func TestMinFreeBytes(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, Config{MinFreeBytes: 1 << 62}, nil)
	_, err := m.Kickoff(t.Context(), Kickoff{RequestURL: "http://x/$export"})
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Errorf("Kickoff with a full disk = %v, want *UnavailableError", err)
	}
}

func TestOpenFileRejects(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	m := e.manager(t, Config{}, nil)
	a := submit(t, m, fullRequest())
	mfA := waitManifest(t, m, a)
	req := fullRequest()
	req.Types = []string{"Claim"}
	b := submit(t, m, req)
	waitManifest(t, m, b)
	// A file that exists in the job directory but is not in the manifest.
	os.WriteFile(filepath.Join(m.jobDir(a), "extra.ndjson"), []byte("{}\n"), 0o640)
	os.WriteFile(filepath.Join(e.dir, "x"), []byte("{}\n"), 0o640)

	for _, tc := range []struct{ id, name string }{
		{a, "../x"},
		{a, "extra.ndjson"},
		{a, mfA.Output[0].Name + ".tmp"},
		{a, ""},
		{a, "."},
		{a, "/etc/passwd"},
		{b, "Observation-1.ndjson"}, // a's file, not b's
		{"../" + a, mfA.Output[0].Name},
		{"nope", mfA.Output[0].Name},
	} {
		if f, err := m.OpenFile("", tc.id, tc.name); !errors.Is(err, ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Errorf("OpenFile(%q, %q) = %v, want ErrNotFound", tc.id, tc.name, err)
		}
	}
	f, err := m.OpenFile("", b, "Claim-1.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() == 0 || f.ModTime().IsZero() {
		t.Errorf("Size %d, ModTime %v", f.Size(), f.ModTime())
	}
}

func TestFirstPollIsAccepted(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	m := e.manager(t, Config{}, nil)
	id := submit(t, m, fullRequest())
	// Let the job finish before anyone polls.
	checkFor(t, 10*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.all[id].rec.State != Completed {
			return errors.New("not completed yet")
		}
		return nil
	})
	st, err := m.Status("", id)
	if err != nil || st.State != Running || st.Manifest != nil || st.RetryAfter < time.Second {
		t.Errorf("first poll = %+v, %v; want running", st, err)
	}
	if st, err := m.Status("", id); err != nil || st.State != Completed || st.Manifest == nil {
		t.Errorf("second poll = %+v, %v; want completed", st, err)
	}
}

func TestLenientErrorFile(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	m := e.manager(t, Config{}, nil)
	req := fullRequest()
	req.Lenient = true
	req.Ignored = []string{`_typeFilter is not supported and was ignored`, `unknown type "Foo" "ignored"`}
	id := submit(t, m, req)
	mf := waitManifest(t, m, id)
	if len(mf.Error) != 1 || mf.Error[0].Name != "error-1.ndjson" || mf.Error[0].Type != "OperationOutcome" || mf.Error[0].Count != 2 {
		t.Fatalf("error files %+v", mf.Error)
	}
	lines := readLines(t, m, id, mf.Error[0].Name)
	checkFileInfo(t, m, id, mf.Error[0], lines)
	for i, l := range lines {
		var oo struct {
			ResourceType string
			Issue        []struct{ Severity, Code, Diagnostics string }
		}
		if err := jsonUnmarshal(l, &oo); err != nil || oo.ResourceType != "OperationOutcome" ||
			len(oo.Issue) != 1 || oo.Issue[0].Diagnostics != req.Ignored[i] || oo.Issue[0].Severity == "" {
			t.Errorf("error line %s: %v", l, err)
		}
	}
}

func TestFailedJob(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"internal", errors.New("boom /secret/path"), "internal error"},
		{"disk full", &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, "disk space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.f.apply(t, syntheaResources(t, 20)...)
			n := 0
			m := e.manager(t, Config{FileMaxResources: 50}, func(m *Manager) {
				m.hookScan = func(context.Context) error {
					if n++; n == 500 {
						return tc.err
					}
					return nil
				}
			})
			id := submit(t, m, fullRequest())
			st := wait(t, m, id)
			if st.State != Failed || !strings.Contains(st.Error, tc.want) || strings.Contains(st.Error, "secret") {
				t.Errorf("status %+v, want failed with %q", st, tc.want)
			}
			if got := dirFiles(t, m, id); len(got) != 0 {
				t.Errorf("partial files left: %v", got)
			}
			if _, err := m.OpenFile("", id, "Claim-1.ndjson"); !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenFile of failed job = %v", err)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 20)...)
	hook, blocked := blockAfter(1000)
	m := e.manager(t, Config{}, func(m *Manager) { m.hookScan = hook })
	id := submit(t, m, fullRequest())
	<-blocked
	st, err := m.Status("", id)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, c := range e.x.Counts() {
		total += c.Resources
	}
	if st.State != Running || !strings.HasPrefix(st.Progress, "exporting ") ||
		!strings.Contains(st.Progress, "of "+group(total)+" resources") || len(st.Progress) >= 100 {
		t.Errorf("progress %q", st.Progress)
	}
	if st.RetryAfter < time.Second || st.RetryAfter > 10*time.Second {
		t.Errorf("RetryAfter %v", st.RetryAfter)
	}
	if err := m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	reg := prometheus.NewPedanticRegistry()
	m := e.manager(t, Config{Registerer: reg}, nil)
	mf := exported(t, m, fullRequest())
	var patients int64
	for _, fi := range mf.Output {
		if fi.Type == "Patient" {
			patients += fi.Count
		}
	}
	if got := testutil.ToFloat64(m.met.resources.WithLabelValues("Patient")); got != float64(patients) {
		t.Errorf("resources_written_total{Patient} = %v, want %d", got, patients)
	}
	if got := testutil.ToFloat64(m.met.finished.WithLabelValues(resultCompleted)); got != 1 {
		t.Errorf("jobs_finished_total{completed} = %v", got)
	}
	n, err := testutil.GatherAndCount(reg, "bulkstream_export_jobs", "bulkstream_export_time_to_manifest_seconds")
	if err != nil || n != 5 {
		t.Errorf("gathered %d series, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP bulkstream_export_jobs Export jobs known to the manager, by state.
# TYPE bulkstream_export_jobs gauge
bulkstream_export_jobs{state="completed"} 1
bulkstream_export_jobs{state="failed"} 0
bulkstream_export_jobs{state="queued"} 0
bulkstream_export_jobs{state="running"} 0
`), "bulkstream_export_jobs"); err != nil {
		t.Error(err)
	}
	// Close unregisters, so a new manager can register again.
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := NewManager(Config{Dir: e.dir, Registerer: reg}, IndexSource(e.x), nil, e.x); err != nil {
		t.Errorf("NewManager after Close on the same registry: %v", err)
	}
}

func TestConfig(t *testing.T) {
	x := newEnv(t).x
	for _, cfg := range []Config{{}, {Dir: "d", Workers: -1}, {Dir: "d", FileMaxBytes: -1}, {Dir: "d", TTL: -time.Second}} {
		if _, err := NewManager(cfg, IndexSource(x), nil, x); err == nil {
			t.Errorf("NewManager(%+v) succeeded", cfg)
		}
	}
	m, err := NewManager(Config{Dir: "d"}, IndexSource(x), nil, x)
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.Workers != DefaultWorkers || m.cfg.FileMaxResources != DefaultFileMaxResources || m.cfg.TTL != DefaultTTL {
		t.Errorf("defaults not filled: %+v", m.cfg)
	}
	if _, err := m.submit(t.Context(), fullRequest(), 0, time.Now()); err == nil {
		t.Error("submit before Start succeeded")
	}
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("Close without Start: %v", err)
	}
}

func TestKickoff(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	e.head.seq.Store(e.f.seq)
	m := e.manager(t, Config{}, nil)
	start := time.Now()
	id, err := m.Kickoff(t.Context(), Kickoff{
		Params:     []Param{{Name: "_outputFormat", Value: "application/fhir+ndjson"}},
		RequestURL: "https://fhir.example.org/$export?_outputFormat=application%2Ffhir%2Bndjson",
		Client:     "client-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Kickoff took %v", d)
	}
	if !isJobID(id) {
		t.Errorf("id %q is not 128 bits of hex", id)
	}
	rec, err := e.x.GetJob(id)
	if err != nil {
		t.Fatalf("job not persisted by Kickoff: %v", err)
	}
	r, err := decodeRecord(rec)
	if err != nil || r.Request.Client != "client-1" || r.HeadSeq != e.f.seq || r.Request.RequestURL == "" {
		t.Errorf("record %+v, %v", r, err)
	}
	mf := waitManifest(t, m, id)
	if mf.Request != "https://fhir.example.org/$export?_outputFormat=application%2Ffhir%2Bndjson" {
		t.Errorf("manifest request %q", mf.Request)
	}
}

func TestGroup(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 38483: "38,483", 1234567: "1,234,567"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	got := string(appendJSONString(nil, "a\"b\\c\n\x01é\xff<"))
	if want := `"a\"b\\c\n\u0001é` + "\ufffd" + `<"`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
