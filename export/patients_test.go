package export

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// rawSample is every line of the Synthea sample as published (original
// ids: its Groups reference their patients as urn:uuid:<id>).
var rawSample = sync.OnceValues(func() ([]resource, error) {
	f, err := os.Open(samplePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	var out []resource
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var h struct{ ResourceType, ID string }
		if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
			return nil, err
		}
		out = append(out, resource{h.ResourceType, h.ID, slices.Clone(sc.Bytes())})
	}
	return out, sc.Err()
})

// compartmentOracle computes, from the raw JSON with encoding/json, the
// patients whose compartment each resource is in: the Patient references
// at the R4 CompartmentDefinition's paths, and a Patient itself. It
// shares nothing with the index but the generated table of paths.
func compartmentOracle(tb testing.TB, typ, id string, body []byte) []string {
	tb.Helper()
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		tb.Fatal(err)
	}
	set := map[string]bool{}
	if typ == "Patient" {
		set[id] = true
	}
	for _, path := range fhirdefs.PatientCompartment[typ] {
		nodes := []any{doc}
		for step := range strings.SplitSeq(path, ".") {
			var next []any
			for _, n := range nodes {
				obj, ok := n.(map[string]any)
				if !ok {
					continue
				}
				switch v := obj[step].(type) {
				case []any:
					next = append(next, v...)
				case nil:
				default:
					next = append(next, v)
				}
			}
			nodes = next
		}
		for _, n := range nodes {
			ref, _ := n.(map[string]any)["reference"].(string)
			if p, ok := strings.CutPrefix(ref, "Patient/"); ok && p != "" && !strings.Contains(p, "/") {
				set[p] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// sampleEnv is an index holding the raw sample, and each resource's
// compartments by the oracle.
type sampleEnv struct {
	*testEnv
	byPatient map[string]map[string]bool // patient → "Type/id" in its compartment
	patients  []string
}

func newSampleEnv(t *testing.T) *sampleEnv {
	t.Helper()
	rs, err := rawSample()
	if err != nil {
		t.Fatal(err)
	}
	e := &sampleEnv{testEnv: newEnv(t), byPatient: map[string]map[string]bool{}}
	e.f.apply(t, rs...)
	for _, r := range rs {
		e.note(t, r)
	}
	e.patients = slices.Sorted(maps.Keys(e.byPatient))
	return e
}

// note records r's compartments (after removing its previous ones).
func (e *sampleEnv) note(t *testing.T, r resource) {
	k := r.typ + "/" + r.id
	for _, in := range e.byPatient {
		delete(in, k)
	}
	if r.body == nil {
		return
	}
	for _, p := range compartmentOracle(t, r.typ, r.id, r.body) {
		if e.byPatient[p] == nil {
			e.byPatient[p] = map[string]bool{}
		}
		e.byPatient[p][k] = true
	}
}

// put applies r (body nil: a delete) and notes its compartments.
func (e *sampleEnv) put(t *testing.T, r resource) {
	t.Helper()
	e.f.apply(t, r)
	e.note(t, r)
}

// want is the union of the compartments of patients.
func (e *sampleEnv) want(patients ...string) map[string]bool {
	out := map[string]bool{}
	for _, p := range patients {
		maps.Copy(out, e.byPatient[p])
	}
	return out
}

func levelRequest(level Level, group string, patients ...string) Request {
	r := fullRequest()
	r.Level, r.Group, r.Patients = level, group, patients
	return r
}

// exportedKeys runs req and returns the "Type/id" of every exported
// resource (readExport fails on a duplicate) and the content.
func exportedKeys(t *testing.T, m *Manager, req Request) (map[string]bool, exportContent, *Manifest, string) {
	t.Helper()
	id := submit(t, m, req)
	mf := waitManifest(t, m, id)
	c := readExport(t, m, id, mf)
	got := map[string]bool{}
	for k := range c.resources {
		got[k] = true
	}
	return got, c, mf, id
}

func diffKeys(t *testing.T, what string, got, want map[string]bool) {
	t.Helper()
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra) > 0 {
		slices.Sort(missing)
		slices.Sort(extra)
		t.Errorf("%s: %d exported, want %d; missing %d %q, extra %d %q", what, len(got), len(want),
			len(missing), missing[:min(len(missing), 5)], len(extra), extra[:min(len(extra), 5)])
	}
}

// TestPatientExportMatchesCompartments: on the Synthea sample, a
// Patient-level export narrowed by patient holds exactly the resources
// that are in those patients' compartments by the R4 rules (computed from
// the raw JSON), and the unnarrowed one holds every patient's.
func TestPatientExportMatchesCompartments(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	r := rand.New(rand.NewPCG(16, 1))
	var five []string
	for _, i := range r.Perm(len(e.patients))[:5] {
		five = append(five, e.patients[i])
	}
	got, _, _, _ := exportedKeys(t, m, levelRequest(LevelPatient, "", five...))
	want := e.want(five...)
	if len(want) < 100 {
		t.Fatalf("5 patients have %d resources in their compartments: not much of a test", len(want))
	}
	diffKeys(t, "Patient/$export with 5 patients", got, want)

	got, _, _, _ = exportedKeys(t, m, levelRequest(LevelPatient, ""))
	diffKeys(t, "Patient/$export", got, e.want(e.patients...))
	if n := len(got); n < 30000 {
		t.Errorf("Patient/$export exported %d resources, want most of the sample", n)
	}
	for k := range got {
		if strings.HasPrefix(k, "Organization/") || strings.HasPrefix(k, "Practitioner/") {
			t.Fatalf("%s is in no patient's compartment but was exported", k)
		}
	}
}

// groupBody is a Group of the given members (references as written).
func groupBody(id string, members ...string) []byte {
	b := fmt.Appendf(nil, `{"resourceType":"Group","id":%q,"type":"person","actual":true,"member":[`, id)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"entity":{"reference":%q}}`, m)
	}
	return append(b, "]}"...)
}

// TestGroupExport: a Group of 10 patients exports exactly their
// compartments; a sample Group (urn:uuid members) its members'; inactive
// members and members whose period has ended are left out; the patient
// parameter narrows a Group, and a patient outside it is a warning in the
// error file; an unknown Group fails the job.
func TestGroupExport(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	ten := e.patients[20:30]
	refs := make([]string, len(ten))
	for i, p := range ten {
		refs[i] = "Patient/" + p
	}
	e.put(t, resource{"Group", "ten", groupBody("ten", refs...)})
	got, _, _, _ := exportedKeys(t, m, levelRequest(LevelGroup, "ten"))
	want := e.want(ten...)
	if !want["Group/ten"] {
		t.Fatal("a Group is in its members' compartments (R4), so it is exported with them")
	}
	diffKeys(t, "Group/ten/$export", got, want)

	// A sample Group: its members are urn:uuid:<patient id>.
	rs, _ := rawSample()
	var members []string
	for _, r := range rs {
		if r.typ == "Group" && r.id == "NeighborhoodHealthPlan" {
			var g struct {
				Member []struct{ Entity struct{ Reference string } }
			}
			if err := json.Unmarshal(r.body, &g); err != nil {
				t.Fatal(err)
			}
			for _, mb := range g.Member {
				members = append(members, strings.TrimPrefix(mb.Entity.Reference, "urn:uuid:"))
			}
		}
	}
	if len(members) != 7 {
		t.Fatalf("NeighborhoodHealthPlan has %d members, want 7", len(members))
	}
	got, _, _, _ = exportedKeys(t, m, levelRequest(LevelGroup, "NeighborhoodHealthPlan"))
	diffKeys(t, "Group/NeighborhoodHealthPlan/$export", got, e.want(members...))

	// Inactive and ended members are not exported.
	body := fmt.Appendf(nil, `{"resourceType":"Group","id":"some","type":"person","actual":true,"member":[`+
		`{"entity":{"reference":"Patient/%s"}},{"entity":{"reference":"Patient/%s"},"inactive":true},`+
		`{"entity":{"reference":"Patient/%s"},"period":{"end":"2020-01-01"}},{"entity":{"reference":"Patient/%s"},"period":{"start":"2020"}}]}`,
		ten[0], ten[1], ten[2], ten[3])
	e.put(t, resource{"Group", "some", body})
	got, _, _, _ = exportedKeys(t, m, levelRequest(LevelGroup, "some"))
	want = e.want(ten[0], ten[3])
	diffKeys(t, "Group/some/$export", got, want)

	// The patient parameter narrows the Group; a non-member is a warning.
	req := levelRequest(LevelGroup, "ten", ten[4], "not-a-member")
	got, _, mf, id := exportedKeys(t, m, req)
	diffKeys(t, "Group/ten/$export?patient", got, e.want(ten[4]))
	if len(mf.Error) != 1 {
		t.Fatalf("error files %+v, want one with the warning", mf.Error)
	}
	if lines := readLines(t, m, id, mf.Error[0].Name); len(lines) != 1 ||
		!strings.Contains(string(lines[0]), "Patient/not-a-member is not exported: it is not an active member of Group/ten") {
		t.Errorf("error file %q", lines)
	}

	// A Group that is not there fails the job with a message.
	st := wait(t, m, submit(t, m, levelRequest(LevelGroup, "nope")))
	if st.State != Failed || !strings.Contains(st.Error, "Group/nope is not on this server") {
		t.Errorf("export of an unknown Group: %s %q", st.State, st.Error)
	}
}

// TestCompartmentMove: an Observation moved to another patient leaves the
// first patient's export and joins the second's; a _since export of the
// first lists nothing for it, and its deletion is listed in the
// second's.
func TestCompartmentMove(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	rs, _ := rawSample()
	var obs resource
	for _, r := range rs {
		if r.typ == "Observation" {
			obs = r
			break
		}
	}
	from := compartmentOracle(t, obs.typ, obs.id, obs.body)
	if len(from) != 1 {
		t.Fatalf("Observation/%s is in %q", obs.id, from)
	}
	to := e.patients[0]
	if to == from[0] {
		to = e.patients[1]
	}
	k := "Observation/" + obs.id
	got, _, _, _ := exportedKeys(t, m, levelRequest(LevelPatient, "", from[0], to))
	if !got[k] {
		t.Fatalf("%s not exported before the move", k)
	}
	mf := exported(t, m, levelRequest(LevelPatient, "", from[0]))
	tt, err := time.Parse(time.RFC3339Nano, mf.TransactionTime)
	if err != nil {
		t.Fatal(err)
	}
	since := index.Micros(tt)
	moved := resource{obs.typ, obs.id, []byte(strings.Replace(string(obs.body), `"Patient/`+from[0]+`"`, `"Patient/`+to+`"`, 1))}
	e.put(t, moved)

	got, _, _, _ = exportedKeys(t, m, levelRequest(LevelPatient, "", from[0]))
	if got[k] {
		t.Errorf("%s still in Patient/%s's export after the move", k, from[0])
	}
	got, _, _, _ = exportedKeys(t, m, levelRequest(LevelPatient, "", to))
	if !got[k] {
		t.Errorf("%s not in Patient/%s's export after the move", k, to)
	}
	req := levelRequest(LevelPatient, "", to)
	req.Since, req.HasSince = since, true
	got, _, _, _ = exportedKeys(t, m, req)
	if want := map[string]bool{k: true}; len(got) != 1 || !got[k] {
		diffKeys(t, "_since export of the new patient", got, want)
	}
	e.put(t, resource{obs.typ, obs.id, nil})
	req.Since = index.Micros(e.f.at) - 1
	_, c, _, _ := exportedKeys(t, m, req)
	if _, ok := c.deleted[k]; !ok || len(c.resources) != 0 {
		t.Errorf("_since export after the delete: deleted %v, resources %d", c.deleted, len(c.resources))
	}
}

// TestGroupSinceChain: a chain of Group-level _since exports, each from
// the last one's transactionTime, while a writer keeps changing the
// members' resources, adds a member and drops one, rebuilds exactly the
// members' compartments as of the last transactionTime: a member added
// mid-chain gets its whole compartment (the IG's Group _since rule),
// deletions are listed, nothing is missed or repeated.
func TestGroupSinceChain(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	a, b, c := e.patients[3], e.patients[4], e.patients[5]
	rs, _ := rawSample()

	// The state the client should hold: every write and its commit time.
	type write struct {
		at   uint64
		r    resource
		vers uint64
	}
	var mu sync.Mutex
	var log []write
	apply := func(r resource) {
		ch := e.f.change(r.typ, r.id, r.body)
		res, err := e.x.Apply(t.Context(), []index.Change{ch}, 0)
		if err != nil {
			panic(err)
		}
		mu.Lock()
		log = append(log, write{res[0].CommitTime, r, res[0].Version})
		mu.Unlock()
	}
	group := func(members ...string) resource {
		refs := make([]string, len(members))
		for i, p := range members {
			refs[i] = "Patient/" + p
		}
		return resource{"Group", "chain", groupBody("chain", refs...)}
	}
	apply(group(a, b))

	// The writer: updates and deletes of Observations in the three
	// patients' compartments, and what the test sends (Group changes).
	var obs []resource
	for _, r := range rs {
		if r.typ == "Observation" {
			if p := compartmentOracle(t, r.typ, r.id, r.body); len(p) == 1 && (p[0] == a || p[0] == b || p[0] == c) {
				obs = append(obs, r)
			}
		}
	}
	send := make(chan resource)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case r := <-send:
				apply(r)
			default:
				r := obs[i%len(obs)]
				if i%7 == 3 {
					apply(resource{r.typ, r.id, nil})
				} else {
					apply(resource{r.typ, r.id, fmt.Appendf(slices.Clone(r.body[:len(r.body)-1]), `,"note":[{"text":"%d"}]}`, i)})
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()

	client := map[string]string{} // Type/id → versionId
	var since uint64
	var tt uint64
	for round := range 5 {
		switch round {
		case 2:
			send <- group(a, b, c) // c joins mid-chain
		case 4:
			send <- group(a, c) // b leaves
		}
		req := levelRequest(LevelGroup, "chain")
		if round > 0 {
			req.Since, req.HasSince = since, true
		}
		_, content, mf, _ := exportedKeys(t, m, req)
		ts, err := time.Parse(time.RFC3339Nano, mf.TransactionTime)
		if err != nil {
			t.Fatal(err)
		}
		tt = index.Micros(ts)
		for k, line := range content.resources {
			client[k] = parseLine(t, line).Meta.VersionID
		}
		for k := range content.deleted {
			delete(client, k)
		}
		since = tt
	}
	close(stop)
	<-done

	// The expected state as of the last transactionTime: the sample, then
	// every logged write at or before it; the members then; their
	// compartments.
	state := map[string]write{}
	for _, r := range rs {
		state[r.typ+"/"+r.id] = write{r: r}
	}
	mu.Lock()
	for _, w := range log {
		if w.at <= tt {
			state[w.r.typ+"/"+w.r.id] = w
		}
	}
	mu.Unlock()
	members := []string{a, c}
	want := map[string]string{}
	for k, w := range state {
		if w.r.body == nil {
			continue
		}
		for _, p := range compartmentOracle(t, w.r.typ, w.r.id, w.r.body) {
			if slices.Contains(members, p) {
				want[k] = ""
				if w.vers != 0 {
					want[k] = fmt.Sprint(w.vers)
				}
			}
		}
	}
	// Resources of b's compartment the client got before b left stay with
	// the client (the IG defines no removal); the rest must match.
	for k, v := range want {
		got, ok := client[k]
		if !ok {
			t.Errorf("%s missing from the chain", k)
		} else if v != "" && got != v {
			t.Errorf("%s at version %s, want %s", k, got, v)
		}
	}
	if t.Failed() {
		return
	}
	cOnly := 0
	for k := range e.want(c) {
		if !e.want(a)[k] {
			cOnly++
		}
	}
	if cOnly < 50 {
		t.Fatalf("the member added mid-chain has %d resources of its own: not much of a test", cOnly)
	}
}

// TestOrganizeByPatient: organizeOutputBy=Patient writes blocks — a
// Parameters header naming the patient, the Patient, then the patient's
// other resources — never splits a block across files (files still end
// at the size limits, between blocks), lists no type in the output items
// and echoes outputOrganizedBy; the blocks hold exactly the compartments.
func TestOrganizeByPatient(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{FileMaxResources: 500}, nil)
	req := levelRequest(LevelPatient, "", e.patients[:12]...)
	req.OrganizeBy = "Patient"
	id := submit(t, m, req)
	mf := waitManifest(t, m, id)
	if mf.OutputOrganizedBy != "Patient" {
		t.Errorf("outputOrganizedBy %q", mf.OutputOrganizedBy)
	}
	if len(mf.Output) < 3 {
		t.Fatalf("%d files: want several, to see blocks kept whole across files", len(mf.Output))
	}
	seenIn := map[string]string{} // patient → file of its block
	got := map[string]map[string]bool{}
	for _, fi := range mf.Output {
		if fi.Type != "" {
			t.Errorf("%s has type %q", fi.Name, fi.Type)
		}
		lines := readLines(t, m, id, fi.Name)
		checkFileInfo(t, m, id, fi, lines)
		var cur string
		for i, l := range lines {
			var hdr struct {
				ResourceType string
				Parameter    []struct {
					Name           string
					ValueReference struct{ Reference string }
				}
			}
			if err := json.Unmarshal(l, &hdr); err != nil {
				t.Fatal(err)
			}
			if hdr.ResourceType == "Parameters" {
				if len(hdr.Parameter) != 1 || hdr.Parameter[0].Name != "header" {
					t.Fatalf("header %s", l)
				}
				cur = strings.TrimPrefix(hdr.Parameter[0].ValueReference.Reference, "Patient/")
				if f, dup := seenIn[cur]; dup {
					t.Errorf("patient %s has blocks in %s and %s", cur, f, fi.Name)
				}
				seenIn[cur] = fi.Name
				got[cur] = map[string]bool{}
				// The Patient follows its header.
				if next := parseLine(t, lines[i+1]); next.ResourceType != "Patient" || next.ID != cur {
					t.Errorf("block of %s starts with %s/%s", cur, next.ResourceType, next.ID)
				}
				continue
			}
			if i == 0 {
				t.Fatalf("%s does not start with a block header", fi.Name)
			}
			mt := parseLine(t, l)
			got[cur][mt.ResourceType+"/"+mt.ID] = true
		}
		if fi.Count < 500 && fi.Name != mf.Output[len(mf.Output)-1].Name {
			t.Errorf("%s ended at %d lines, before the limit", fi.Name, fi.Count)
		}
	}
	for _, p := range e.patients[:12] {
		diffKeys(t, "block of "+p, got[p], e.want(p))
	}

	// A deletion in several patients' compartments (a Group of three of
	// them) is listed once, not once per block.
	e.put(t, resource{"Group", "three", groupBody("three", "Patient/"+e.patients[0], "Patient/"+e.patients[1], "Patient/"+e.patients[2])})
	since := index.Micros(e.f.at)
	e.put(t, resource{"Group", "three", nil})
	req.Since, req.HasSince = since, true
	id = submit(t, m, req)
	mf = waitManifest(t, m, id)
	var dels []string
	for _, fi := range mf.Deleted {
		for _, l := range readLines(t, m, id, fi.Name) {
			for _, en := range parseLine(t, l).Entry {
				dels = append(dels, en.Request.URL)
			}
		}
	}
	if !slices.Equal(dels, []string{"Group/three"}) || len(mf.Output) != 0 {
		t.Errorf("_since export after the delete: deleted %q, %d output files; want Group/three once, none", dels, len(mf.Output))
	}
}

// provenanceFor is a Provenance targeting the given references.
func provenanceFor(id, recorded string, targets ...string) resource {
	b := fmt.Appendf(nil, `{"resourceType":"Provenance","id":%q,"target":[`, id)
	for i, t := range targets {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"reference":%q}`, t)
	}
	b = fmt.Appendf(b, `],"recorded":%q,"agent":[{"who":{"reference":"Practitioner/x"}}]}`, recorded)
	return resource{"Provenance", id, b}
}

// TestIncludeAssociatedData: RelevantProvenanceResources adds every
// Provenance targeting an exported resource, LatestProvenanceResources
// the last changed one per resource, none without the parameter; each
// once, also when _type excludes Provenance, and not again when the
// Provenance type is exported anyway.
func TestIncludeAssociatedData(t *testing.T) {
	e := newSampleEnv(t)
	m := e.manager(t, Config{}, nil)
	rs, _ := rawSample()
	var enc []string
	for _, r := range rs {
		if r.typ == "Encounter" && len(enc) < 2 {
			enc = append(enc, "Encounter/"+r.id)
		}
	}
	// v1 and v2 target enc[0]; v2 (later) also enc[1]; v3 targets a
	// Practitioner only: never associated with an Encounter export.
	e.put(t, provenanceFor("v1", "2026-01-01T00:00:00Z", enc[0]))
	e.put(t, provenanceFor("v2", "2026-01-02T00:00:00Z", enc[0], enc[1]))
	e.put(t, provenanceFor("v3", "2026-01-02T00:00:00Z", "Practitioner/x"))

	provs := func(mode ProvenanceMode, types ...string) []string {
		req := fullRequest()
		req.Types, req.Provenance = types, mode
		_, c, _, _ := exportedKeys(t, m, req)
		var out []string
		for k := range c.resources {
			if strings.HasPrefix(k, "Provenance/") {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		mode  ProvenanceMode
		types []string
		want  []string
	}{
		{ProvenanceNone, []string{"Encounter"}, nil},
		{ProvenanceRelevant, []string{"Encounter"}, []string{"Provenance/v1", "Provenance/v2"}},
		{ProvenanceLatest, []string{"Encounter"}, []string{"Provenance/v2"}},
		{ProvenanceRelevant, []string{"Encounter", "Provenance"}, []string{"Provenance/v1", "Provenance/v2", "Provenance/v3"}},
		{ProvenanceRelevant, []string{"Patient"}, nil},
	} {
		if got := provs(tc.mode, tc.types...); !slices.Equal(got, tc.want) {
			t.Errorf("includeAssociatedData %q with _type %v: %q, want %q", tc.mode, tc.types, got, tc.want)
		}
	}
}
