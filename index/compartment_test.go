package index_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// refChanges is a random stream over a few patients: Observations whose
// subject and performer move between patients, Encounters, Patients that
// link to each other, Provenance targeting them, Groups whose members
// come and go, and deletes of all of them.
func refChanges(seed uint64, n int) []index.Change {
	r := rand.New(rand.NewPCG(seed, 7))
	pat := func() string { return fmt.Sprintf("p%d", r.IntN(6)) }
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]index.Change, 0, n)
	for i := range n {
		at = at.Add(time.Millisecond)
		c := index.Change{Seq: uint64(i + 1), Time: at}
		switch r.IntN(5) {
		case 0:
			c.Type, c.ID = "Patient", pat()
			c.Body = fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"link":[{"other":{"reference":"Patient/%s"},"type":"seealso"}]}`, c.ID, pat())
		case 1:
			c.Type, c.ID = "Encounter", fmt.Sprintf("e%d", r.IntN(5))
			c.Body = fmt.Appendf(nil, `{"resourceType":"Encounter","id":%q,"status":"finished","subject":{"reference":"Patient/%s"}}`, c.ID, pat())
		case 2:
			c.Type, c.ID = "Provenance", fmt.Sprintf("v%d", r.IntN(4))
			c.Body = fmt.Appendf(nil, `{"resourceType":"Provenance","id":%q,"target":[{"reference":"Encounter/e%d"},{"reference":"Observation/o%d"}],"recorded":"2026-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/d"}}]}`,
				c.ID, r.IntN(5), r.IntN(8))
		case 3:
			c.Type, c.ID = "Group", fmt.Sprintf("g%d", r.IntN(2))
			c.Body = fmt.Appendf(nil, `{"resourceType":"Group","id":%q,"type":"person","actual":true,"member":[{"entity":{"reference":"Patient/%s"}},{"entity":{"reference":"Patient/%s"},"inactive":%v}]}`,
				c.ID, pat(), pat(), r.IntN(2) == 0)
		default:
			c.Type, c.ID = "Observation", fmt.Sprintf("o%d", r.IntN(8))
			c.Body = fmt.Appendf(nil, `{"resourceType":"Observation","id":%q,"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/%s"},"performer":[{"reference":"Patient/%s"}]}`,
				c.ID, pat(), pat())
		}
		if r.IntN(6) == 0 {
			c.Delete, c.Body = true, nil
		}
		out = append(out, c)
	}
	return out
}

// TestReferenceIndexModel: after a random stream of moves and deletes,
// every patient's compartment scan returns exactly the live resources
// whose current version references the patient (a tombstone for those
// deleted while in it), each Provenance lookup exactly the live
// Provenance targeting the resource, and a rebuild from the same stream
// in other batch sizes writes the same bytes.
func TestReferenceIndexModel(t *testing.T) {
	changes := refChanges(1, 3000)
	live := indextest.Open(t)
	for chunk := range slices.Chunk(changes, 7) {
		if _, err := live.Apply(t.Context(), chunk, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The model: the last version of each resource.
	last := map[string]index.Change{}
	for _, c := range changes {
		last[c.Type+"/"+c.ID] = c
	}
	inBody := func(c index.Change, p string) bool {
		if c.Type == "Patient" && c.ID == p {
			return true
		}
		switch c.Type {
		case "Patient", "Observation", "Encounter":
			return strings.Contains(string(c.Body), `"reference":"Patient/`+p+`"`)
		case "Group":
			return strings.Contains(string(c.Body), `"reference":"Patient/`+p+`"`) // Group.member is in the compartment
		}
		return false // Provenance targets no Patient here
	}
	s, err := live.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for p := range 6 {
		patient := fmt.Sprint("p", p)
		for _, typ := range []string{"Patient", "Observation", "Encounter", "Group", "Provenance"} {
			got := map[string]bool{}
			err := s.ScanPatient(t.Context(), patient, typ, 0, index.Unbounded, func(e index.Entry) error {
				if got[e.ID] {
					t.Errorf("%s/%s twice in %s's compartment", typ, e.ID, patient)
				}
				got[e.ID] = true
				if !e.Deleted && !strings.Contains(string(e.Resource), `"id":"`+e.ID+`"`) {
					t.Errorf("%s/%s: entry holds %s", typ, e.ID, e.Resource)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for k, c := range last {
				if c.Type != typ {
					continue
				}
				want := !c.Delete && inBody(c, patient)
				if want && !got[c.ID] {
					t.Errorf("%s is in %s's compartment but not in its scan", k, patient)
				}
				if !c.Delete && !want && got[c.ID] {
					t.Errorf("%s is not in %s's compartment but is in its scan", k, patient)
				}
			}
		}
	}
	for e := range 5 {
		target := fmt.Sprintf("e%d", e)
		var got []string
		if err := s.Provenance(t.Context(), "Encounter", target, func(e index.Entry) error {
			got = append(got, e.ID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, k := range slices.Sorted(maps.Keys(last)) {
			if c := last[k]; c.Type == "Provenance" && !c.Delete && strings.Contains(string(c.Body), `"Encounter/`+target+`"`) {
				want = append(want, c.ID)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Provenance of Encounter/%s: %q, want %q", target, got, want)
		}
	}

	rebuilt := indextest.Open(t)
	for chunk := range slices.Chunk(changes, 500) {
		if _, err := rebuilt.Apply(t.Context(), chunk, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := dump(t, rebuilt), dump(t, live); got != want {
		t.Errorf("rebuild in batches of 500 differs from the live index (batches of 7)\n got %.2000s\nwant %.2000s", got, want)
	}
}

// TestBackfillRefs: an index written without the reference index (as
// before it existed) gets it when opened: the same p/, g/ and t/ keys and
// records as an index that had it all along, for a stream without
// deletes (a tombstone's compartments are gone with the version it
// deleted) and where each Group is written once (its members count as
// added at its commit time).
func TestBackfillRefs(t *testing.T) {
	var changes []index.Change
	groups := map[string]bool{}
	for _, c := range refChanges(2, 2000) {
		if c.Delete || (c.Type == "Group" && groups[c.ID]) {
			continue
		}
		groups[c.ID] = c.Type == "Group" || groups[c.ID]
		c.Seq = uint64(len(changes) + 1)
		changes = append(changes, c)
	}
	with := indextest.Open(t)
	if _, err := with.Apply(t.Context(), changes, 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := &index.Options{NoReferenceIndex: true}
	old, err := index.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Apply(t.Context(), changes, 0); err != nil {
		t.Fatal(err)
	}
	before := dump(t, old)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(before, `"p/`) || strings.Contains(before, `"m/refs"`) {
		t.Fatal("NoReferenceIndex wrote reference keys")
	}
	x, err := index.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if got, want := dump(t, x), dump(t, with); got != want {
		t.Errorf("backfilled index differs from one built with the reference index\n got %.2000s\nwant %.2000s", got, want)
	}
}
