package export

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/bulkstream/bulkstream/index"
)

// fakeSource is a Source in memory: a fixed list of entries, in commit
// order, at transactionTime tt. It shows another store can stand in for
// the index.
type fakeSource struct {
	tt      uint64
	seq     uint64
	entries []Entry
	// compartments maps "Type/id" to the patients whose compartment the
	// entry is in; groups maps a Group id to its members.
	compartments map[string][]string
	groups       map[string][]GroupMember
}

func (s *fakeSource) Exists(typ, id string) (bool, error) {
	for _, e := range slices.Backward(s.entries) {
		if e.Type == typ && e.ID == id {
			return !e.Deleted, nil
		}
	}
	return false, nil
}

func (s *fakeSource) Snapshot() (Snapshot, error)                     { return &fakeSnapshot{s}, nil }
func (s *fakeSource) WaitApplied(ctx context.Context, _ uint64) error { return ctx.Err() }
func (s *fakeSource) AppliedSeq() uint64                              { return s.seq }
func (s *fakeSource) Clock() uint64                                   { return s.tt }

type fakeSnapshot struct{ s *fakeSource }

func (f *fakeSnapshot) TransactionTime() uint64 { return f.s.tt }
func (f *fakeSnapshot) AppliedSeq() uint64      { return f.s.seq }
func (f *fakeSnapshot) Close() error            { return nil }

func (f *fakeSnapshot) Counts() []TypeCount {
	var counts []TypeCount
	for _, e := range f.s.entries {
		i := slices.IndexFunc(counts, func(c TypeCount) bool { return c.Type == e.Type })
		if i < 0 {
			counts = append(counts, TypeCount{Type: e.Type})
			i = len(counts) - 1
		}
		if e.Deleted {
			counts[i].Tombstones++
		} else {
			counts[i].Resources++
		}
	}
	return counts
}

func (f *fakeSnapshot) Scan(ctx context.Context, typ string, since, until uint64, fn func(Entry) error) error {
	for _, e := range f.s.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Type == typ && e.CommitTime > since && e.CommitTime <= until {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *fakeSnapshot) ScanPatient(ctx context.Context, patient, typ string, since, until uint64, fn func(Entry) error) error {
	return f.Scan(ctx, typ, since, until, func(e Entry) error {
		in := f.s.compartments[e.Type+"/"+e.ID]
		if !slices.Contains(in, patient) {
			return nil
		}
		e.Shared = len(in) > 1
		return fn(e)
	})
}

func (f *fakeSnapshot) GroupMembers(id string) ([]GroupMember, bool, error) {
	ok, _ := f.s.Exists("Group", id)
	return f.s.groups[id], ok, nil
}

func (f *fakeSnapshot) Provenance(ctx context.Context, typ, id string, fn func(Entry) error) error {
	return nil // the fake holds no Provenance index
}

func (f *fakeSnapshot) Get(typ, id string) (Entry, bool, error) {
	for _, e := range slices.Backward(f.s.entries) {
		if e.Type == typ && e.ID == id {
			return e, !e.Deleted, nil
		}
	}
	return Entry{}, false, nil
}

// TestFakeSource: the manager exports from any Source, not only the index:
// a full export writes the fake's resources, a _since export its
// deletions too, and transactionTime is the fake snapshot's.
func TestFakeSource(t *testing.T) {
	const tt = 1_800_000_000_000_000
	src := &fakeSource{tt: tt, seq: 7}
	for i := range 5 {
		id := fmt.Sprintf("p%d", i)
		src.entries = append(src.entries, Entry{Type: "Patient", ID: id, CommitTime: tt - 10 + uint64(i),
			Resource: fmt.Appendf(nil, `{"resourceType":"Patient","id":%q}`, id)})
	}
	src.entries = append(src.entries, Entry{Type: "Patient", ID: "gone", CommitTime: tt, Deleted: true})
	m := startManager(t, Config{Dir: t.TempDir()}, src, nil, newMemJobStore(), nil)
	t.Cleanup(func() { m.Close(context.Background()) })

	id := submit(t, m, fullRequest())
	mf := waitManifest(t, m, id)
	if got, want := mf.TransactionTime, index.FormatInstant(tt); got != want {
		t.Errorf("transactionTime %s, want %s", got, want)
	}
	if len(mf.Output) != 1 || mf.Output[0].Count != 5 || len(mf.Deleted) != 0 {
		t.Fatalf("full export manifest: output %+v deleted %+v, want 5 Patients and no deletions", mf.Output, mf.Deleted)
	}
	if lines := readLines(t, m, id, mf.Output[0].Name); len(lines) != 5 {
		t.Errorf("%d lines, want 5", len(lines))
	}

	id = submit(t, m, sinceRequest(tt-8))
	mf = waitManifest(t, m, id)
	if len(mf.Output) != 1 || mf.Output[0].Count != 2 || len(mf.Deleted) != 1 || mf.Deleted[0].Count != 1 {
		t.Fatalf("_since export manifest: output %+v deleted %+v, want 2 Patients (p3, p4) and 1 deletion", mf.Output, mf.Deleted)
	}
}

// TestIndexSourceScanAllocs: the index adapter adds no allocation per
// scanned entry (one closure per Scan call at most).
func TestIndexSourceScanAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	e := newEnv(t)
	var rs []resource
	for i := range 2000 {
		id := fmt.Sprintf("p%d", i)
		rs = append(rs, resource{"Patient", id, fmt.Appendf(nil, `{"resourceType":"Patient","id":%q}`, id)})
	}
	e.f.apply(t, rs...)
	snap, err := IndexSource(e.x).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	raw, err := e.x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ctx := context.Background()
	n := 0
	count := func(Entry) error { n++; return nil }
	rawCount := func(index.Entry) error { n++; return nil }
	viaAdapter := testing.AllocsPerRun(5, func() {
		if err := snap.Scan(ctx, "Patient", 0, index.Unbounded, count); err != nil {
			t.Fatal(err)
		}
	})
	direct := testing.AllocsPerRun(5, func() {
		if err := raw.Scan(ctx, "Patient", 0, index.Unbounded, rawCount); err != nil {
			t.Fatal(err)
		}
	})
	if n != 2*6*2000 {
		t.Fatalf("scanned %d entries, want %d", n, 2*6*2000)
	}
	if viaAdapter > direct+1 {
		t.Errorf("a scan of 2,000 entries allocates %v times through IndexSource, %v directly: want at most one more", viaAdapter, direct)
	}
}
