package index_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// genChanges returns n changes with stream sequences 1..n over a few types
// (two of them prefixes of a third) and a small id space, so that updates,
// deletes, deletes of unknown resources and re-creates all happen. Message
// times are irregular: they repeat, step back and jump forward.
func genChanges(seed uint64, n int) []index.Change {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	types := []string{"Pat", "Patient", "PatientX", "Observation"}
	msg := t0
	out := make([]index.Change, 0, n)
	for i := range n {
		switch r.IntN(5) {
		case 0: // same time
		case 1:
			msg = msg.Add(-time.Duration(r.IntN(3_000_000)) * time.Microsecond)
		case 2:
			msg = msg.Add(time.Duration(r.IntN(5)) * time.Second)
		default:
			msg = msg.Add(time.Duration(r.IntN(2000)) * time.Microsecond)
		}
		typ := types[r.IntN(len(types))]
		id := fmt.Sprintf("id-%d", r.IntN(12))
		c := index.Change{Seq: uint64(i + 1), Time: msg, Type: typ, ID: id}
		switch r.IntN(8) {
		case 0, 1:
			c.Delete = true
		case 2: // the same body every time: a no-op after itself
			c.Body = fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"n":-1,"v":1.50}`, typ, id)
		default:
			c.Body = fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"n":%d,"v":1.50}`, typ, id, i)
		}
		out = append(out, c)
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// model is what the index must hold after a prefix of changes.
type model struct {
	clock    uint64
	res      map[[2]string]modelRes
	counts   map[string]index.TypeCount
	lastSeen uint64
}

type modelRes struct {
	commit, version uint64
	deleted         bool
	seq             uint64
	body            []byte
}

func newModel(origin uint64) *model {
	return &model{clock: origin, res: map[[2]string]modelRes{}, counts: map[string]index.TypeCount{}}
}

// apply applies c and reports whether it is a no-op: an upsert of the
// body the resource has (the generated bodies carry no meta), or a delete
// of a resource that does not exist or is deleted already.
func (m *model) apply(c index.Change) (noop bool) {
	if c.Seq <= m.lastSeen {
		return false
	}
	m.lastSeen = c.Seq
	m.clock = max(index.Micros(c.Time), m.clock+1)
	k := [2]string{c.Type, c.ID}
	old, found := m.res[k]
	if found && !old.deleted && !c.Delete && bytes.Equal(old.body, c.Body) {
		return true
	}
	if c.Delete && (!found || old.deleted) {
		return true
	}
	tc := m.counts[c.Type]
	tc.Type = c.Type
	if found {
		if old.deleted {
			tc.Tombstones--
		} else {
			tc.Resources--
		}
	}
	if c.Delete {
		tc.Tombstones++
	} else {
		tc.Resources++
	}
	m.counts[c.Type] = tc
	m.res[k] = modelRes{commit: m.clock, version: c.Seq, deleted: c.Delete, seq: c.Seq, body: c.Body}
	return false
}

func (m *model) sortedCounts() []index.TypeCount {
	var out []index.TypeCount
	for _, c := range m.counts {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b index.TypeCount) int { return strings.Compare(a.Type, b.Type) })
	return out
}

func mustApply(t testing.TB, x *index.Index, changes []index.Change, lastSeq uint64) []index.Result {
	t.Helper()
	res, err := x.Apply(context.Background(), changes, lastSeq)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func dump(t testing.TB, x *index.Index) string {
	t.Helper()
	var sb strings.Builder
	err := x.Dump(func(k, v []byte) error {
		fmt.Fprintf(&sb, "%q=%q\n", k, v)
		return nil
	})
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return sb.String()
}

type scanned struct {
	index.Entry
	resource string
}

func scanAll(t testing.TB, s *index.Snapshot, typ string, since, until uint64) []scanned {
	t.Helper()
	var out []scanned
	err := s.Scan(context.Background(), typ, since, until, func(e index.Entry) error {
		out = append(out, scanned{e, string(e.Resource)})
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%s, %d, %d): %v", typ, since, until, err)
	}
	return out
}

// checkAgainstModel verifies the whole index against the model: exactly one
// c/ entry per resource, at its commit time, with its version stamped in;
// r/ records; counts; clock and applied sequence.
func checkAgainstModel(t testing.TB, x *index.Index, m *model) {
	t.Helper()
	if got := x.Clock(); got != m.clock {
		t.Fatalf("Clock = %d, want %d", got, m.clock)
	}
	if got, want := x.Counts(), m.sortedCounts(); !slices.Equal(got, want) {
		t.Fatalf("Counts = %+v, want %+v", got, want)
	}
	s, err := x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen := map[[2]string]bool{}
	for _, typ := range []string{"Pat", "Patient", "PatientX", "Observation"} {
		var prev uint64
		for _, e := range scanAll(t, s, typ, 0, index.Unbounded) {
			k := [2]string{e.Type, e.ID}
			if e.Type != typ {
				t.Fatalf("scan of %s returned %s/%s", typ, e.Type, e.ID)
			}
			if seen[k] {
				t.Fatalf("%s/%s has more than one c/ entry", e.Type, e.ID)
			}
			seen[k] = true
			if e.CommitTime <= prev {
				t.Fatalf("scan of %s not in commit order: %d after %d", typ, e.CommitTime, prev)
			}
			prev = e.CommitTime
			if e.CommitTime > s.TransactionTime {
				t.Fatalf("%s/%s CommitTime %d > TransactionTime %d", e.Type, e.ID, e.CommitTime, s.TransactionTime)
			}
			want, ok := m.res[k]
			if !ok {
				t.Fatalf("unexpected entry %s/%s", e.Type, e.ID)
			}
			if e.CommitTime != want.commit || e.Deleted != want.deleted {
				t.Fatalf("%s/%s: commit %d deleted %v, want %d %v", e.Type, e.ID, e.CommitTime, e.Deleted, want.commit, want.deleted)
			}
			if e.Deleted {
				if e.Resource != nil {
					t.Fatalf("tombstone %s/%s has a resource %q", e.Type, e.ID, e.resource)
				}
				continue
			}
			meta := fmt.Sprintf(`"meta":{"versionId":"%d","lastUpdated":"%s"}`, want.version, index.FormatInstant(want.commit))
			if !strings.Contains(e.resource, meta) || !strings.Contains(e.resource, string(want.body[bytes.Index(want.body, []byte(`"n":`)):])) {
				t.Fatalf("%s/%s = %s, want %s from seq %d", e.Type, e.ID, e.resource, meta, want.seq)
			}
		}
	}
	if len(seen) != len(m.res) {
		t.Fatalf("scans found %d resources, want %d", len(seen), len(m.res))
	}
	// Dump: one c/ and one r/ key per resource.
	nc, nr := 0, 0
	if err := x.Dump(func(k, v []byte) error {
		switch {
		case bytes.HasPrefix(k, []byte("c/")):
			nc++
		case bytes.HasPrefix(k, []byte("r/")):
			nr++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if nc != len(m.res) || nr != len(m.res) {
		t.Fatalf("Dump has %d c/ and %d r/ keys, want %d of each", nc, nr, len(m.res))
	}
}

// TestApplyModel applies random changes in random batch sizes and checks
// the index against a model after every batch.
func TestApplyModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			x := indextest.Open(t)
			changes := genChanges(seed, 400)
			m := newModel(0)
			r := rand.New(rand.NewPCG(seed, 1))
			noops := 0
			for i := 0; i < len(changes); {
				n := min(1+r.IntN(20), len(changes)-i)
				batch := changes[i : i+n]
				res := mustApply(t, x, batch, 0)
				for j, c := range batch {
					noop := m.apply(c)
					noops += b2i(noop)
					want := m.res[[2]string{c.Type, c.ID}]
					if res[j].Skipped || res[j].Noop != noop || res[j].CommitTime != want.commit || res[j].Version != want.version || res[j].Change != &batch[j] {
						t.Fatalf("seq %d: result %+v, want commit %d version %d noop %v", c.Seq, res[j], want.commit, want.version, noop)
					}
				}
				i += n
				if got := x.AppliedSeq(); got != uint64(i) {
					t.Fatalf("AppliedSeq = %d, want %d", got, i)
				}
				checkAgainstModel(t, x, m)
			}
			if noops == 0 {
				t.Fatal("the generated changes hold no no-op")
			}
			t.Logf("%d no-ops", noops)
		})
	}
}

// TestRebuildDeterminism: the same stream applied in different batch
// splits, with redeliveries, gives byte-identical indexes. `bulkstream
// rebuild` relies on this.
func TestRebuildDeterminism(t *testing.T) {
	changes := genChanges(42, 300)
	origin := index.Micros(t0.Add(-time.Hour))
	build := func(t *testing.T, split func(i int) int, redeliver bool) string {
		x := indextest.Open(t)
		if err := x.SetOrigin(index.TimeOf(origin)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(changes); {
			n := min(split(i), len(changes)-i)
			from := i
			if redeliver && i > 5 {
				from = i - 5 // the previous batch's tail again
			}
			batch := slices.Clone(changes[from : i+n])
			mustApply(t, x, batch, 0)
			i += n
		}
		return dump(t, x)
	}
	r := rand.New(rand.NewPCG(7, 7))
	one := build(t, func(int) int { return len(changes) }, false)
	for name, got := range map[string]string{
		"batches of 3":               build(t, func(int) int { return 3 }, false),
		"batches of 1":               build(t, func(int) int { return 1 }, false),
		"random batches":             build(t, func(int) int { return 1 + r.IntN(50) }, false),
		"batches of 7 + redelivered": build(t, func(int) int { return 7 }, true),
	} {
		if got != one {
			t.Errorf("%s: Dump differs from one big batch\n got %.2000s\nwant %.2000s", name, got, one)
		}
	}
	if !strings.Contains(one, `m/clock`) || strings.Count(one, `"c/`) < 10 {
		t.Fatalf("dump looks empty: %.500s", one)
	}
}

func TestReopen(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) func() *index.Index{
		"mem": func(t *testing.T) func() *index.Index {
			fs := vfs.NewMem()
			return func() *index.Index { return indextest.OpenOptions(t, &index.Options{FS: fs}) }
		},
		"disk": func(t *testing.T) func() *index.Index {
			dir := t.TempDir()
			return func() *index.Index {
				x, err := index.Open(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { x.Close() })
				return x
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			open := open(t)
			x := open()
			if err := x.SetOrigin(t0); err != nil {
				t.Fatal(err)
			}
			if err := x.Close(); err != nil {
				t.Fatal(err)
			}
			x = open()
			if got, want := x.Clock(), index.Micros(t0); got != want {
				t.Fatalf("Clock after reopen = %d, want origin %d", got, want)
			}
			changes := genChanges(9, 50)
			mustApply(t, x, changes, 60)
			if err := x.PutJob("j1", []byte("rec")); err != nil {
				t.Fatal(err)
			}
			seq, clock, counts, d := x.AppliedSeq(), x.Clock(), x.Counts(), dump(t, x)
			if err := x.Close(); err != nil {
				t.Fatal(err)
			}
			x = open()
			if got := x.AppliedSeq(); got != seq || seq != 60 {
				t.Errorf("AppliedSeq after reopen = %d, want %d (60)", got, seq)
			}
			if got := x.Clock(); got != clock {
				t.Errorf("Clock after reopen = %d, want %d", got, clock)
			}
			if got := x.Counts(); !slices.Equal(got, counts) || len(counts) == 0 {
				t.Errorf("Counts after reopen = %+v, want %+v", got, counts)
			}
			if got := dump(t, x); got != d {
				t.Errorf("Dump after reopen differs")
			}
			if rec, err := x.GetJob("j1"); err != nil || string(rec) != "rec" {
				t.Errorf("GetJob after reopen = %q, %v", rec, err)
			}
			// Redelivery after the restart is skipped; new changes continue
			// the clock and the versions.
			res := mustApply(t, x, changes[40:], 0)
			for _, r := range res {
				if !r.Skipped {
					t.Fatalf("seq %d re-applied after reopen", r.Change.Seq)
				}
			}
			c := changes[0]
			c.Seq, c.Time = 61, t0 // time far behind the clock
			res = mustApply(t, x, []index.Change{c}, 0)
			if res[0].CommitTime != clock+1 || res[0].Version < 2 {
				t.Errorf("after reopen: commit %d version %d, want %d and >= 2", res[0].CommitTime, res[0].Version, clock+1)
			}
		})
	}
}

func TestSetOrigin(t *testing.T) {
	x := indextest.Open(t)
	if got := x.Clock(); got != 0 {
		t.Fatalf("Clock of an empty index = %d, want 0", got)
	}
	origin := t0.Add(123 * time.Microsecond)
	if err := x.SetOrigin(origin); err != nil {
		t.Fatal(err)
	}
	if got, want := x.Clock(), index.Micros(origin); got != want {
		t.Fatalf("Clock after SetOrigin = %d, want %d", got, want)
	}
	s, err := x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.TransactionTime != index.Micros(origin) || s.AppliedSeq != 0 {
		t.Fatalf("empty snapshot: TransactionTime %d AppliedSeq %d, want %d 0", s.TransactionTime, s.AppliedSeq, index.Micros(origin))
	}
	s.Close()
	// A second SetOrigin (a restart before any message) keeps the first.
	if err := x.SetOrigin(origin.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := x.Clock(), index.Micros(origin); got != want {
		t.Fatalf("Clock after second SetOrigin = %d, want %d", got, want)
	}
	res := mustApply(t, x, []index.Change{{Seq: 1, Time: t0, Type: "Patient", ID: "p", Body: []byte(`{"id":"p"}`)}}, 0)
	if want := index.Micros(origin) + 1; res[0].CommitTime != want {
		t.Fatalf("first commit time = %d, want origin+1µs = %d", res[0].CommitTime, want)
	}
	clock := x.Clock()
	if err := x.SetOrigin(t0.Add(48 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := x.Clock(); got != clock {
		t.Fatalf("SetOrigin after apply changed Clock to %d, want %d", got, clock)
	}

	// SetOrigin after only dead-lettered messages (AppliedSeq > 0, clock 0)
	// is a no-op too.
	y := indextest.Open(t)
	mustApply(t, y, nil, 3)
	if err := y.SetOrigin(t0); err != nil {
		t.Fatal(err)
	}
	if got := y.Clock(); got != 0 {
		t.Fatalf("SetOrigin after applied sequences set Clock to %d", got)
	}
}

func TestApplyCanceledContext(t *testing.T) {
	x := indextest.Open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := x.Apply(ctx, genChanges(1, 3), 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply(canceled) = %v, want context.Canceled", err)
	}
	if x.AppliedSeq() != 0 || dump(t, x) != "" {
		t.Fatalf("Apply(canceled) changed the index")
	}
}

func TestScanStopsOnCancelAndError(t *testing.T) {
	x := indextest.Open(t)
	var changes []index.Change
	for i := range 3000 {
		id := fmt.Sprint("p", i)
		changes = append(changes, index.Change{Seq: uint64(i + 1), Time: t0, Type: "Patient", ID: id, Body: fmt.Appendf(nil, `{"id":%q}`, id)})
	}
	mustApply(t, x, changes, 0)
	s, err := x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	err = s.Scan(ctx, "Patient", 0, index.Unbounded, func(index.Entry) error {
		if n++; n == 10 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n >= 3000 {
		t.Fatalf("Scan canceled after 10 entries: %d entries, err %v; want context.Canceled well before 3000", n, err)
	}

	n = 0
	err = s.Scan(ctx, "Patient", 0, index.Unbounded, func(index.Entry) error { n++; return nil })
	if !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("Scan with a canceled context: %d entries, err %v; want 0, context.Canceled", n, err)
	}

	stop := errors.New("stop")
	n = 0
	err = s.Scan(t.Context(), "Patient", 0, index.Unbounded, func(index.Entry) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Fatalf("Scan with fn error at 5: %d entries, err %v", n, err)
	}
	if got := len(scanAll(t, s, "Patient", 0, index.Unbounded)); got != 3000 {
		t.Fatalf("full scan: %d entries, want 3000", got)
	}
}

// TestSnapshotIsolation takes snapshots while a writer applies batches and
// checks that each snapshot holds exactly the state at its AppliedSeq, that
// its entries are at or before TransactionTime and every later change after
// it, and that exports chained with since = previous TransactionTime see
// every resource's final version exactly once.
func TestSnapshotIsolation(t *testing.T) {
	x := indextest.Open(t)
	if err := x.SetOrigin(t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	changes := genChanges(5, 600)
	results := make([]index.Result, len(changes))
	step := make(chan struct{}) // the reader lets the writer go on after each snapshot
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < len(changes); i += 10 {
			res, err := x.Apply(context.Background(), changes[i:i+10], 0)
			if err != nil {
				t.Error(err)
				return
			}
			copy(results[i:], res)
			if i+10 < len(changes) {
				<-step
			}
		}
	})
	type export struct {
		since, tt, seq uint64
		entries        []scanned
		counts         []index.TypeCount
	}
	var exports []export
	since := index.Micros(t0.Add(-time.Minute))
	for {
		s, err := x.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		e := export{since: since, tt: s.TransactionTime, seq: s.AppliedSeq, counts: s.Counts()}
		for _, typ := range []string{"Observation", "Pat", "Patient", "PatientX"} {
			e.entries = append(e.entries, scanAll(t, s, typ, since, index.Unbounded)...)
		}
		s.Close()
		exports = append(exports, e)
		since = e.tt
		if e.seq == uint64(len(changes)) || t.Failed() {
			break
		}
		select {
		case step <- struct{}{}:
		default:
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	final := newModel(0)
	for _, c := range changes {
		final.apply(c)
	}
	seen := map[[2]string]int{}
	for _, e := range exports {
		// The snapshot holds exactly the model state at e.seq.
		m := newModel(index.Micros(t0.Add(-time.Minute)))
		for _, c := range changes[:e.seq] {
			m.apply(c)
		}
		if e.tt != m.clock {
			t.Fatalf("snapshot at seq %d: TransactionTime %d, want clock %d", e.seq, e.tt, m.clock)
		}
		if !slices.Equal(e.counts, m.sortedCounts()) {
			t.Fatalf("snapshot at seq %d: counts %+v, want %+v", e.seq, e.counts, m.sortedCounts())
		}
		for _, en := range e.entries {
			k := [2]string{en.Type, en.ID}
			want := m.res[k]
			if en.CommitTime <= e.since || en.CommitTime > e.tt || en.CommitTime != want.commit || en.Deleted != want.deleted {
				t.Fatalf("export (%d, %d]: entry %s/%s at %d deleted=%v, model %+v", e.since, e.tt, en.Type, en.ID, en.CommitTime, en.Deleted, want)
			}
			if en.CommitTime == final.res[k].commit {
				seen[k]++
			}
		}
		// Every change after the snapshot commits after TransactionTime
		// (a no-op commits nothing: it reports the stored version).
		for _, r := range results[e.seq:] {
			if !r.Noop && r.CommitTime <= e.tt {
				t.Fatalf("seq %d committed at %d, not after snapshot TransactionTime %d", r.Change.Seq, r.CommitTime, e.tt)
			}
		}
	}
	for k := range final.res {
		if seen[k] != 1 {
			t.Errorf("%s/%s final version seen %d times in chained exports, want 1", k[0], k[1], seen[k])
		}
	}
	t.Logf("%d chained exports", len(exports))
}

func TestJobs(t *testing.T) {
	x := indextest.Open(t)
	if _, err := x.GetJob("nope"); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("GetJob(missing) err = %v, want ErrNotFound", err)
	}
	if err := x.PutJob("", []byte("x")); err == nil {
		t.Fatal("PutJob with an empty id succeeded")
	}
	for _, id := range []string{"b", "a", "c/d", "a0"} {
		if err := x.PutJob(id, []byte("rec-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.PutJob("b", []byte("rec-b2")); err != nil {
		t.Fatal(err)
	}
	rec, err := x.GetJob("b")
	if err != nil || string(rec) != "rec-b2" {
		t.Fatalf("GetJob(b) = %q, %v; want rec-b2", rec, err)
	}
	rec[0] = 'X' // a copy: must not change the store
	if rec, _ := x.GetJob("b"); string(rec) != "rec-b2" {
		t.Fatalf("GetJob result aliases the store: %q", rec)
	}
	if err := x.DeleteJob("a"); err != nil {
		t.Fatal(err)
	}
	if err := x.DeleteJob("never-there"); err != nil {
		t.Fatalf("DeleteJob(missing) = %v, want nil", err)
	}
	if _, err := x.GetJob("a"); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("GetJob(deleted) err = %v, want ErrNotFound", err)
	}
	// Jobs never see resource keys, and Dump never sees jobs.
	mustApply(t, x, genChanges(3, 20), 0)
	var got []string
	if err := x.Jobs(func(id string, rec []byte) error {
		got = append(got, id+"="+string(rec))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a0=rec-a0", "b=rec-b2", "c/d=rec-c/d"}; !slices.Equal(got, want) {
		t.Fatalf("Jobs = %q, want %q", got, want)
	}
	if d := dump(t, x); strings.Contains(d, `"j/`) {
		t.Fatalf("Dump includes job records")
	}
	stop := errors.New("stop")
	n := 0
	if err := x.Jobs(func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Jobs with fn error: %d calls, err %v", n, err)
	}
}

func TestClosed(t *testing.T) {
	x := indextest.Open(t)
	mustApply(t, x, genChanges(1, 5), 0)
	if err := x.Ready(); err != nil {
		t.Fatalf("Ready on an open index = %v", err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	ctx := t.Context()
	for name, err := range map[string]error{
		"Ready":     x.Ready(),
		"Apply":     func() error { _, err := x.Apply(ctx, genChanges(2, 1), 0); return err }(),
		"Snapshot":  func() error { _, err := x.Snapshot(); return err }(),
		"SetOrigin": x.SetOrigin(t0),
		"PutJob":    x.PutJob("j", nil),
		"GetJob":    func() error { _, err := x.GetJob("j"); return err }(),
		"DeleteJob": x.DeleteJob("j"),
		"Jobs":      x.Jobs(func(string, []byte) error { return nil }),
		"Dump":      x.Dump(func(_, _ []byte) error { return nil }),
	} {
		if !errors.Is(err, index.ErrClosed) {
			t.Errorf("%s on a closed index = %v, want ErrClosed", name, err)
		}
	}
	if x.AppliedSeq() != 5 {
		t.Errorf("AppliedSeq on a closed index = %d, want 5", x.AppliedSeq())
	}
}

func TestCloseReportsLeakedSnapshot(t *testing.T) {
	x, err := index.Open("leak", &index.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err == nil {
		t.Fatal("Close with an open snapshot succeeded; want a leaked-snapshot error")
	}
	_ = s
}

func TestOpenOptions(t *testing.T) {
	if _, err := index.Open("x", &index.Options{FS: vfs.NewMem(), CacheSize: -1}); err == nil {
		t.Fatal("Open with a negative CacheSize succeeded")
	}
}

// TestWaitApplied runs in a synctest bubble so that synctest.Wait can tell
// when a waiter is parked, before the Apply that must wake it.
func TestWaitApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		x := indextest.Open(t)
		changes := genChanges(8, 10)
		ctx := t.Context()
		waiting := func(seq uint64, ctx context.Context) <-chan error {
			done := make(chan error, 1)
			go func() { done <- x.WaitApplied(ctx, seq) }()
			synctest.Wait()
			return done
		}
		returned := func(done <-chan error) (error, bool) {
			synctest.Wait()
			select {
			case err := <-done:
				return err, true
			default:
				return nil, false
			}
		}

		if err := x.WaitApplied(ctx, 0); err != nil {
			t.Fatalf("WaitApplied(0) on an empty index = %v", err)
		}
		done := waiting(5, ctx)
		mustApply(t, x, changes[:3], 0)
		mustApply(t, x, changes[3:4], 0)
		if err, ok := returned(done); ok {
			t.Fatalf("WaitApplied(5) returned %v at applied sequence 4", err)
		}
		mustApply(t, x, changes[4:7], 0)
		if err, ok := returned(done); !ok || err != nil {
			t.Fatalf("WaitApplied(5) after applying 5-7: returned %v, %v; want nil, true", ok, err)
		}
		if err := x.WaitApplied(ctx, 7); err != nil {
			t.Fatalf("WaitApplied(already applied) = %v", err)
		}
		// A fully redelivered batch wakes nobody early; a dead-lettered
		// tail (lastSeq) counts as applied.
		done = waiting(20, ctx)
		mustApply(t, x, changes[:7], 0)
		if err, ok := returned(done); ok {
			t.Fatalf("WaitApplied(20) returned %v after a redelivery", err)
		}
		mustApply(t, x, nil, 20)
		if err, ok := returned(done); !ok || err != nil {
			t.Fatalf("WaitApplied(20) after lastSeq 20: returned %v, %v; want nil, true", ok, err)
		}

		cctx, cancel := context.WithCancel(ctx)
		done = waiting(100, cctx)
		cancel()
		if err, ok := returned(done); !ok || !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitApplied after cancel: returned %v, %v; want context.Canceled", ok, err)
		}
		dctx, dcancel := context.WithTimeout(ctx, time.Minute) // fake time in the bubble
		defer dcancel()
		if err := x.WaitApplied(dctx, 100); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitApplied past deadline = %v, want context.DeadlineExceeded", err)
		}

		// Close wakes waiters.
		done = waiting(100, ctx)
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
		if err, ok := returned(done); !ok || !errors.Is(err, index.ErrClosed) {
			t.Fatalf("WaitApplied after Close: returned %v, %v; want index.ErrClosed", ok, err)
		}
		if err := x.WaitApplied(ctx, 100); !errors.Is(err, index.ErrClosed) {
			t.Fatalf("WaitApplied on a closed index = %v, want index.ErrClosed", err)
		}
		if err := x.WaitApplied(ctx, 20); err != nil {
			t.Fatalf("WaitApplied(applied seq) on a closed index = %v, want nil", err)
		}
	})
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	fs := vfs.NewMem()
	x := indextest.OpenOptions(t, &index.Options{FS: fs, Registerer: reg})
	mustApply(t, x, []index.Change{
		{Seq: 1, Time: t0, Type: "Patient", ID: "a", Body: []byte(`{"id":"a"}`)},
		{Seq: 2, Time: t0, Type: "Patient", ID: "b", Body: []byte(`{"id":"b"}`)},
		{Seq: 3, Time: t0, Type: "Patient", ID: "c", Body: []byte(`{"id":"c"}`)},
		{Seq: 4, Time: t0, Type: "Patient", ID: "b", Delete: true},
		{Seq: 5, Time: t0, Type: "Observation", ID: "o", Body: []byte(`{"id":"o"}`)},
	}, 7)
	want := `
# HELP bulkstream_index_applied_sequence Last JetStream stream sequence committed to the index.
# TYPE bulkstream_index_applied_sequence gauge
bulkstream_index_applied_sequence 7
# HELP bulkstream_index_resources Current (not deleted) resources in the index.
# TYPE bulkstream_index_resources gauge
bulkstream_index_resources{type="Observation"} 1
bulkstream_index_resources{type="Patient"} 2
# HELP bulkstream_index_tombstones Tombstones of deleted resources in the index.
# TYPE bulkstream_index_tombstones gauge
bulkstream_index_tombstones{type="Observation"} 0
bulkstream_index_tombstones{type="Patient"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"bulkstream_index_resources", "bulkstream_index_tombstones", "bulkstream_index_applied_sequence"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"bulkstream_index_commit_clock_seconds", "bulkstream_index_pebble_disk_usage_bytes", "bulkstream_index_pebble_compactions_total"} {
		if !names[n] {
			t.Errorf("metric %s not gathered", n)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// Close unregisters, so the same registry serves a reopened index.
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("after Close: %d metrics gathered, %v; want 0", n, err)
	}
	indextest.OpenOptions(t, &index.Options{FS: fs, Registerer: reg})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"bulkstream_index_resources", "bulkstream_index_tombstones", "bulkstream_index_applied_sequence"); err != nil {
		t.Fatalf("after reopen with the same registry: %v", err)
	}
}

// TestApplyDurable simulates a crash with vfs.NewCrashableMem and
// CrashClone: whatever was not synced is lost. Everything Apply, SetOrigin and PutJob returned must
// survive (they sync); with Options.NoSync the applied batches are lost,
// which shows the check can fail.
func TestApplyDurable(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprint("NoSync=", noSync), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			x := indextest.OpenOptions(t, &index.Options{FS: fs, NoSync: noSync})
			if err := x.SetOrigin(t0.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			if !noSync { // before the applies: its sync must not cover for them
				if err := x.PutJob("j", []byte("r")); err != nil {
					t.Fatal(err)
				}
			}
			mustApply(t, x, genChanges(11, 30), 0)
			mustApply(t, x, genChanges(11, 40)[30:], 45)
			seq, clock, d := x.AppliedSeq(), x.Clock(), dump(t, x)
			crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // exactly what was synced

			y := indextest.OpenOptions(t, &index.Options{FS: crashed})
			if noSync {
				if y.AppliedSeq() == seq {
					t.Fatalf("NoSync batches survived the crash; the crash simulation checks nothing")
				}
				return
			}
			if y.AppliedSeq() != seq || y.Clock() != clock || dump(t, y) != d {
				t.Fatalf("after crash: AppliedSeq %d Clock %d, want %d %d (dump equal: %v)", y.AppliedSeq(), y.Clock(), seq, clock, dump(t, y) == d)
			}
			if _, err := y.GetJob("j"); err != nil {
				t.Fatalf("job record lost in the crash: %v", err)
			}
		})
	}
}

// TestFailedApplyLeavesNothing: Apply keeps its Pebble batch between
// calls, so a batch abandoned half filled (here by an invalid change) must
// not reach the store with the next commit.
func TestFailedApplyLeavesNothing(t *testing.T) {
	x := indextest.Open(t)
	before := dump(t, x)
	bad := []index.Change{
		{Seq: 1, Time: t0, Type: "Patient", ID: "a", Body: []byte(`{"resourceType":"Patient","id":"a"}`)},
		{Seq: 2, Time: t0, Type: "Patient", ID: ""},
	}
	if _, err := x.Apply(context.Background(), bad, 0); err == nil {
		t.Fatal("Apply of a change without id succeeded")
	}
	if got := dump(t, x); got != before {
		t.Fatalf("failed Apply changed the store:\n%s", got)
	}
	mustApply(t, x, []index.Change{
		{Seq: 3, Time: t0, Type: "Patient", ID: "b", Body: []byte(`{"resourceType":"Patient","id":"b"}`)},
	}, 0)
	got := dump(t, x)
	if strings.Contains(got, `\x00a`) || !strings.Contains(got, `\x00b`) {
		t.Fatalf("after a failed and a good Apply the store holds:\n%s\nwant b and not a", got)
	}
	if c := x.Counts(); len(c) != 1 || c[0].Resources != 1 {
		t.Fatalf("Counts = %+v, want one Patient", c)
	}
}

// TestCompactedReplay: a stream that keeps only the last message per
// resource (--max-msgs-per-subject 1) replays into the same index, byte
// for byte: versionId is the stream sequence of the change that wrote the
// version, not a count of the changes the replay happens to see. And a
// resource's versionId only ever goes up.
func TestCompactedReplay(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	var changes []index.Change
	msg := t0
	for i := range 400 {
		msg = msg.Add(time.Duration(1+r.IntN(5000)) * time.Microsecond) // the stream's clock goes up
		typ := []string{"Patient", "Observation"}[r.IntN(2)]
		id := fmt.Sprintf("id-%d", r.IntN(20))
		c := index.Change{Seq: uint64(i + 1), Time: msg, Type: typ, ID: id}
		if r.IntN(6) == 0 {
			c.Delete = true
		} else {
			c.Body = fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"n":%d}`, typ, id, i)
		}
		changes = append(changes, c)
	}
	origin := t0.Add(-time.Hour)
	live := indextest.OpenOptions(t, &index.Options{CompactedStream: true})
	if err := live.SetOrigin(origin); err != nil {
		t.Fatal(err)
	}
	last := map[[2]string]uint64{} // versionId by resource
	for i := 0; i < len(changes); i += 10 {
		for _, res := range mustApply(t, live, changes[i:i+10], 0) {
			k := [2]string{res.Change.Type, res.Change.ID}
			if res.Version <= last[k] {
				t.Fatalf("seq %d: %s/%s versionId %d after %d", res.Change.Seq, k[0], k[1], res.Version, last[k])
			}
			last[k] = res.Version
		}
	}

	// What a compacted stream holds: the last message of each subject.
	lastOf := map[[2]string]int{}
	for i, c := range changes {
		lastOf[[2]string{c.Type, c.ID}] = i
	}
	var compacted []index.Change
	for i, c := range changes {
		if lastOf[[2]string{c.Type, c.ID}] == i {
			compacted = append(compacted, c)
		}
	}
	if len(compacted) >= len(changes)/4 {
		t.Fatalf("compaction kept %d of %d messages: not much of a test", len(compacted), len(changes))
	}
	rebuilt := indextest.OpenOptions(t, &index.Options{CompactedStream: true})
	if err := rebuilt.SetOrigin(origin); err != nil {
		t.Fatal(err)
	}
	mustApply(t, rebuilt, compacted, changes[len(changes)-1].Seq)
	if got, want := dump(t, rebuilt), dump(t, live); got != want {
		t.Errorf("replay of the compacted stream differs from the live index\n got %.3000s\nwant %.3000s", got, want)
	}
}
