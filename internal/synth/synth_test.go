package synth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
)

const samplePath = "../../testdata/synthea-r4-100-patients.ndjson.gz"

var loadSynthea = sync.OnceValues(func() (*Sample, error) { return OpenSample(samplePath) })

// synthea returns the Synthea sample, loaded once per test binary.
func synthea(tb testing.TB) *Sample {
	tb.Helper()
	s, err := loadSynthea()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// generate returns the generator's NDJSON output.
func generate(t *testing.T, g *Generator) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := g.WriteNDJSON(t.Context(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n != g.Size() {
		t.Fatalf("WriteNDJSON returned %d and wrote %d bytes, Size() = %d", n, buf.Len(), g.Size())
	}
	return buf.Bytes()
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	// a generated id, or a reference to one: "Patient/<uuid>", "urn:uuid:<uuid>"
	refRE = regexp.MustCompile(`"reference":"(?:([A-Za-z]+)/|urn:uuid:)([^"/]+)"`)
)

func TestSyntheaSample(t *testing.T) {
	s := synthea(t)
	if got, want := s.Len(), 38483; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	counts := s.TypeCounts()
	if got, want := len(counts), 19; got != want {
		t.Errorf("%d types, want %d: %v", got, want, counts)
	}
	for typ, want := range map[string]int{"Patient": 100, "Observation": 16315, "Claim": 6083, "Group": 8} {
		if got := counts[typ]; got != want {
			t.Errorf("%d %s, want %d", got, typ, want)
		}
	}
}

func TestDeterminism(t *testing.T) {
	s := synthea(t)
	a := generate(t, &Generator{Sample: s, Seed: 1, Scale: 2})
	b := generate(t, &Generator{Sample: s, Seed: 1, Scale: 2})
	if !bytes.Equal(a, b) {
		t.Fatal("same seed and scale, different output")
	}
	c := generate(t, &Generator{Sample: s, Seed: 2, Scale: 2})
	if bytes.Equal(a, c) {
		t.Fatal("seeds 1 and 2 give the same output")
	}
	if len(a) != len(c) {
		t.Errorf("seed 1: %d bytes, seed 2: %d bytes; want equal sizes", len(a), len(c))
	}
	ids := map[string]bool{}
	(&Generator{Sample: s, Seed: 1, Scale: 2}).Each(func(typ, id string, line []byte) error {
		ids[id] = true
		return nil
	})
	err := (&Generator{Sample: s, Seed: 2, Scale: 2}).Each(func(typ, id string, line []byte) error {
		if ids[id] {
			return fmt.Errorf("id %s generated under seeds 1 and 2", id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each yields exactly what WriteNDJSON writes.
	var e bytes.Buffer
	err = (&Generator{Sample: s, Seed: 1, Scale: 2}).Each(func(typ, id string, line []byte) error {
		e.Write(line)
		e.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, e.Bytes()) {
		t.Fatal("Each and WriteNDJSON differ")
	}
	// The first copy does not depend on Scale.
	one := generate(t, &Generator{Sample: s, Seed: 1, Scale: 1})
	if !bytes.HasPrefix(a, one) {
		t.Fatal("copy 0 of scale 2 differs from scale 1")
	}
}

type resourceHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
}

func header(t *testing.T, line []byte) resourceHead {
	t.Helper()
	var h resourceHead
	if err := json.Unmarshal(line, &h); err != nil {
		t.Fatalf("%v: %.200s", err, line)
	}
	return h
}

// TestScale checks, over two copies of the Synthea sample, counts, unique
// ids, valid JSON, referential integrity within each copy, and that each
// generated resource is its original byte for byte once ids are mapped back.
func TestScale(t *testing.T) {
	const scale = 2
	s := synthea(t)
	g := &Generator{Sample: s, Seed: 42, Scale: scale}

	// The originals, by id, and the new ids of every copy.
	orig := map[string][]byte{}
	back := make([]map[string]string, scale) // copy → new id → original id
	for k := range back {
		back[k] = map[string]string{}
	}
	err := s.Each(func(typ, id string, line []byte) error {
		orig[id] = bytes.Clone(line)
		for k := range scale {
			nid, ok := g.ID(k, id)
			if !ok {
				return fmt.Errorf("ID(%d, %s) unknown", k, id)
			}
			back[k][nid] = id
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	type resource struct {
		typ, id string
		line    []byte
	}
	lines := make([][]resource, scale)
	types := make([]map[string]string, scale) // copy → id → type
	counts := map[string]int{}
	seen := map[string]bool{}
	for k := range scale {
		types[k] = map[string]string{}
		err := g.EachCopy(k, func(typ, id string, line []byte) error {
			counts[typ]++
			if seen[id] {
				return fmt.Errorf("id %s generated twice", id)
			}
			if _, ok := orig[id]; ok {
				return fmt.Errorf("generated id %s is a sample id", id)
			}
			seen[id] = true
			types[k][id] = typ
			// header checks the whole line is valid JSON.
			if h := header(t, line); h.ResourceType != typ || h.ID != id {
				return fmt.Errorf("Each said %s/%s, line has %s/%s", typ, id, h.ResourceType, h.ID)
			}
			lines[k] = append(lines[k], resource{typ, id, bytes.Clone(line)})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, want := int64(len(seen)), g.Len(); got != want {
		t.Errorf("%d resources, want %d", got, want)
	}
	for typ, n := range s.TypeCounts() {
		if got, want := counts[typ], scale*n; got != want {
			t.Errorf("%d %s, want %d", got, typ, want)
		}
	}

	for k := range scale {
		refs := 0
		for _, r := range lines[k] {
			line := r.line
			// Every reference to a resource points into the same copy.
			for _, m := range refRE.FindAllSubmatch(line, -1) {
				typ := string(m[1])
				if typ == "" && !uuidRE.Match(m[2]) {
					continue
				}
				got, ok := types[k][string(m[2])]
				if !ok {
					t.Fatalf("copy %d: dangling reference %s in %.120s", k, m[0], line)
				}
				if typ != "" && got != typ {
					t.Fatalf("copy %d: reference %s to a %s", k, m[0], got)
				}
				refs++
			}
			// Mapping the ids back gives the original bytes.
			o, ok := orig[back[k][r.id]]
			if !ok {
				t.Fatalf("copy %d: no original for %s", k, r.id)
			}
			mapped := mapUUIDs(line, back[k])
			if r.typ == "Group" { // non-UUID id
				mapped = bytes.Replace(mapped, []byte(r.id), []byte(back[k][r.id]), -1)
			}
			if !bytes.Equal(mapped, o) {
				t.Fatalf("copy %d: %s with ids mapped back differs from the original:\n%.300s\n%.300s", k, r.id, mapped, o)
			}
		}
		if refs < 100000 {
			t.Errorf("copy %d: only %d references checked", k, refs)
		}
	}
}

// mapUUIDs returns line with every UUID u that is a key of m replaced by
// m[u].
func mapUUIDs(line []byte, m map[string]string) []byte {
	var out []byte
	last := 0
	for i := 0; i+36 <= len(line); i++ {
		if line[i+8] != '-' || line[i+13] != '-' || line[i+18] != '-' || line[i+23] != '-' {
			continue
		}
		if o, ok := m[string(line[i:i+36])]; ok {
			out = append(out, line[last:i]...)
			out = append(out, o...)
			last = i + 36
			i += 35
		}
	}
	return append(out, line[last:]...)
}

func TestSmallSample(t *testing.T) {
	const (
		p  = "3b1a9cb0-e3d3-4bce-8b20-864c3dc7e8c0"
		e  = "0b7eaf4c-0b6d-4f3b-9e6e-3c2f6c0d1a01"
		x  = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee" // not a resource id
		lg = "a-very-long-group-identifier-of-fifty-characters-xx"
	)
	in := `{"resourceType":"Patient","id":"` + p + `","identifier":[{"value":"` + p + `"},{"value":"` + x + `"},{"value":"x` + p + `"}],"extension":[{"url":"u","valueDecimal":1.50e0}]}` + "\r\n" +
		"\n" +
		`{"id":"` + e + `","resourceType":"Encounter","subject":{"reference":"urn:uuid:` + p + `"},"contained":[{"resourceType":"Coverage","id":"coverage"}],"insurance":[{"coverage":{"reference":"#coverage"}}],"status":"finished"}` + "\n" +
		`{"resourceType":"Group","id":"Plan","active":true,"member":[{"entity":{"reference":"Patient/` + p + `"}}]}` + "\n" +
		`{"resourceType":"Group","id":"` + lg + `","member":[{"entity":{"reference":"Group/Plan"}}]}` + "\n" +
		`{"resourceType":"Basic","id":"b1","subject":{"reference":"http://x/fhir/Group/Plan"},"author":{"reference":"Group/` + lg + `"}}`
	s, err := LoadSample(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Len(), 5; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	g := &Generator{Sample: s, Seed: 7, Scale: 2}
	out := generate(t, g)
	id := func(k int, orig string) string {
		t.Helper()
		id, ok := g.ID(k, orig)
		if !ok {
			t.Fatalf("ID(%d, %q) unknown", k, orig)
		}
		return id
	}
	var want strings.Builder
	for k := range 2 {
		r := strings.NewReplacer(p, id(k, p), e, id(k, e), `"Plan"`, `"`+id(k, "Plan")+`"`, "/Plan", "/"+id(k, "Plan"), lg, id(k, lg), `"b1"`, `"`+id(k, "b1")+`"`)
		for _, l := range strings.Split(strings.ReplaceAll(in, "\r\n\n", "\n"), "\n") {
			l = r.Replace(l)
			// A UUID inside a longer token stays.
			l = strings.Replace(l, "x"+id(k, p), "x"+p, 1)
			want.WriteString(l + "\n")
		}
	}
	if got := string(out); got != want.String() {
		t.Fatalf("got\n%s\nwant\n%s", got, want.String())
	}
	if got := id(0, "Plan"); !regexp.MustCompile(`^Plan-[0-9a-f]{16}$`).MatchString(got) {
		t.Errorf("Group id Plan became %q, want Plan-<16 hex>", got)
	}
	if got := id(1, lg); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(got) {
		t.Errorf("long id became %q, want a version 8 UUID", got)
	}
	if _, ok := g.ID(0, x); ok {
		t.Errorf("ID of a UUID that is no resource id: ok")
	}
}

func TestLoadSampleErrors(t *testing.T) {
	for name, in := range map[string]string{
		"not an object": `["resourceType"]`,
		"no id":         `{"resourceType":"Patient"}`,
		"no type":       `{"id":"p"}`,
		"number id":     `{"resourceType":"Patient","id":1}`,
		"duplicate":     `{"resourceType":"Patient","id":"p"}` + "\n" + `{"resourceType":"Patient","id":"p"}`,
		"unterminated":  `{"resourceType":"Patient","text":{"div":"x}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadSample(strings.NewReader(in)); err == nil {
				t.Fatalf("LoadSample(%s): no error", in)
			}
		})
	}
	// The same id under two types is fine.
	if _, err := LoadSample(strings.NewReader(`{"resourceType":"Patient","id":"p"}` + "\n" + `{"resourceType":"Group","id":"p"}`)); err != nil {
		t.Fatal(err)
	}
}

func TestChanges(t *testing.T) {
	s := synthea(t)
	g := &Generator{Sample: s, Seed: 3, Scale: 2}
	generated := map[string][]byte{}
	if err := g.Each(func(typ, id string, line []byte) error {
		generated[typ+"/"+id] = bytes.Clone(line)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	changes := func(g *Generator, n int) []Event {
		t.Helper()
		var evs []Event
		if err := g.Changes(n, func(e Event) error { evs = append(evs, e); return nil }); err != nil {
			t.Fatal(err)
		}
		return evs
	}
	const n = 5000
	evs := changes(g, n)
	if len(evs) != n {
		t.Fatalf("%d events, want %d", len(evs), n)
	}
	deletes, touched := 0, map[string]bool{}
	for _, e := range evs {
		key := e.Type + "/" + e.ID
		if touched[key] {
			t.Fatalf("%s changed twice", key)
		}
		touched[key] = true
		gen, ok := generated[key]
		if !ok {
			t.Fatalf("%s %s: not a generated resource", e.Op, key)
		}
		switch e.Op {
		case Delete:
			deletes++
			if e.Body != nil {
				t.Errorf("delete %s with a body", key)
			}
			if got, want := string(e.AppendNDJSON(nil)), key+"\n"; got != want {
				t.Errorf("AppendNDJSON = %q, want %q", got, want)
			}
		case Upsert:
			checkUpdate(t, e, gen)
		default:
			t.Fatalf("op %v", e.Op)
		}
	}
	if lo, hi := n*15/100, n*25/100; deletes < lo || deletes > hi {
		t.Errorf("%d deletes out of %d, want about %.0f%%", deletes, n, 100*DeleteRatio)
	}

	// Deterministic, and a prefix of any longer run.
	again := changes(&Generator{Sample: s, Seed: 3, Scale: 2}, 100)
	for i, e := range again {
		if e.Op != evs[i].Op || e.Type != evs[i].Type || e.ID != evs[i].ID || !bytes.Equal(e.Body, evs[i].Body) {
			t.Fatalf("event %d: %v %s/%s, then %v %s/%s", i, evs[i].Op, evs[i].Type, evs[i].ID, e.Op, e.Type, e.ID)
		}
	}
	other := changes(&Generator{Sample: s, Seed: 4, Scale: 2}, 100)
	same := 0
	for i := range other {
		if other[i].ID == evs[i].ID {
			same++
		}
	}
	if same > 2 {
		t.Errorf("seeds 3 and 4 change the same resource in %d of 100 events", same)
	}
	if err := g.Changes(int(g.Len())+1, func(Event) error { return nil }); err == nil {
		t.Error("more changes than resources: no error")
	}
}

// TestChangesAll updates or deletes every resource of one copy: every type
// and every shape of update.
func TestChangesAll(t *testing.T) {
	s := synthea(t)
	g := &Generator{Sample: s, Seed: 5, Scale: 1}
	generated := map[string][]byte{}
	g.Each(func(typ, id string, line []byte) error {
		generated[typ+"/"+id] = bytes.Clone(line)
		return nil
	})
	kinds := map[string]int{}
	err := g.Changes(int(g.Len()), func(e Event) error {
		key := e.Type + "/" + e.ID
		gen := generated[key]
		if gen == nil {
			return fmt.Errorf("%s changed twice or not generated", key)
		}
		delete(generated, key)
		if e.Op == Upsert {
			kinds[checkUpdate(t, e, gen)]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(generated) != 0 {
		t.Errorf("%d resources not changed", len(generated))
	}
	for _, k := range []string{"status", "active", "extension"} {
		if kinds[k] == 0 {
			t.Errorf("no %s update: %v", k, kinds)
		}
	}
	t.Logf("updates by kind: %v", kinds)
}

// checkUpdate checks an update against the generated resource and returns
// what it changed.
func checkUpdate(t *testing.T, e Event, gen []byte) string {
	t.Helper()
	if !json.Valid(e.Body) {
		t.Fatalf("update %s/%s: invalid JSON: %s", e.Type, e.ID, e.Body)
	}
	if h := header(t, e.Body); h.ResourceType != e.Type || h.ID != e.ID {
		t.Fatalf("update %s/%s has %s/%s", e.Type, e.ID, h.ResourceType, h.ID)
	}
	if bytes.Equal(e.Body, gen) {
		t.Fatalf("update %s/%s does not change it", e.Type, e.ID)
	}
	var before, after map[string]json.RawMessage
	json.Unmarshal(gen, &before)
	json.Unmarshal(e.Body, &after)
	var diff []string
	for k, v := range after {
		if !bytes.Equal(before[k], v) {
			diff = append(diff, k)
		}
	}
	if len(diff) != 1 || len(before) != len(after) && diff[0] != "extension" {
		t.Fatalf("update %s/%s changes %v, want one member", e.Type, e.ID, diff)
	}
	if _, ok := after["meta"]; ok && !bytes.Equal(before["meta"], after["meta"]) {
		t.Fatalf("update %s/%s changes meta", e.Type, e.ID)
	}
	return diff[0]
}

func TestPermutation(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 4, 5, 17, 64, 1000, 38483} {
		for seed := range uint64(3) {
			p := newPermutation(n, seed)
			seen := make([]bool, n)
			for i := range n {
				x := p.at(i)
				if x >= n || seen[x] {
					t.Fatalf("n=%d seed=%d: at(%d) = %d repeats or is out of range", n, seed, i, x)
				}
				seen[x] = true
			}
		}
	}
}

func TestGeneratorErrors(t *testing.T) {
	if err := (&Generator{Scale: 1}).Each(func(string, string, []byte) error { return nil }); err == nil {
		t.Error("no Sample: no error")
	}
	s := synthea(t)
	if err := (&Generator{Sample: s, Scale: -1}).Each(func(string, string, []byte) error { return nil }); err == nil {
		t.Error("negative Scale: no error")
	}
	if err := (&Generator{Sample: s, Scale: 1}).EachCopy(1, func(string, string, []byte) error { return nil }); err == nil {
		t.Error("EachCopy out of range: no error")
	}
	stop := fmt.Errorf("stop")
	n := 0
	err := (&Generator{Sample: s, Scale: 2}).Each(func(string, string, []byte) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if err != stop || n != 10 {
		t.Errorf("Each returned %v after %d calls, want %v after 10", err, n, stop)
	}
}

func BenchmarkGenerate(b *testing.B) {
	s := synthea(b)
	g := &Generator{Sample: s, Seed: 1, Scale: 1}
	b.Run("WriteNDJSON", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(g.Size())
		for b.Loop() {
			if _, err := g.WriteNDJSON(b.Context(), io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(g.Len())*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
	})
	b.Run("Each", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(g.Size())
		var sum int
		for b.Loop() {
			g.Each(func(typ, id string, line []byte) error {
				sum += len(line)
				return nil
			})
		}
		b.ReportMetric(float64(g.Len())*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
	})
	b.Run("Changes", func(b *testing.B) {
		b.ReportAllocs()
		const n = 10000
		for b.Loop() {
			g.Changes(n, func(Event) error { return nil })
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// TestSampleMustBeCompact: the generator splices ids into the sample's
// bytes, so it takes compact NDJSON (what bulk exports produce) and says so
// otherwise.
func TestSampleMustBeCompact(t *testing.T) {
	_, err := LoadSample(strings.NewReader(`{"resourceType":"Patient", "id":"p1"}` + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "compact") {
		t.Fatalf("LoadSample(non-compact) error = %v, want one naming line 1 and compactness", err)
	}
}
