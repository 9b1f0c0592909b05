package search

import (
	"errors"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// path builds a SearchPath from "a.b.c" where a step may carry a filter,
// "telecom[system=email]", and targets after a '>': "subject>Patient,Group".
func path(s string) *fhirdefs.SearchPath {
	var p fhirdefs.SearchPath
	if steps, targets, ok := strings.Cut(s, ">"); ok {
		s = steps
		p.Targets = strings.Split(targets, ",")
	}
	for st := range strings.SplitSeq(s, ".") {
		var step fhirdefs.PathStep
		if name, f, ok := strings.Cut(st, "["); ok {
			field, value, _ := strings.Cut(strings.TrimSuffix(f, "]"), "=")
			step = fhirdefs.PathStep{Name: name, Where: &fhirdefs.WhereEq{Field: field, Value: value}}
		} else {
			step.Name = st
		}
		p.Steps = append(p.Steps, step)
	}
	return &p
}

func values(t *testing.T, body, p string) []string {
	t.Helper()
	var got []string
	if err := eachValue([]byte(body), path(p), func(v []byte) bool {
		got = append(got, string(v))
		return true
	}); err != nil {
		t.Fatalf("%s in %s: %v", p, body, err)
	}
	return got
}

func TestEachValue(t *testing.T) {
	obs := `{"resourceType":"Observation","id":"o1","status":"final",` +
		`"category":[{"coding":[{"system":"s","code":"laboratory"},{"code":"x"}]},{"text":"t"},null,{"coding":{"code":"single"}}],` +
		`"effectiveDateTime":"2024-01-02","valueQuantity":{"value":1.50,"unit":"mg"},"deceasedBoolean":false,` +
		`"component":[{"code":{"coding":[{"code":"c1"}]}},{"code":{"coding":[{"code":"c2"},{"code":"c3"}]}}],` +
		`"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner/d1"},{"reference":"Organization/x"},{"reference":"#c"},{"display":"no ref"},` +
		`{"reference":"https://example.org/fhir/Practitioner/d2/_history/3"}],` +
		`"telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@b"},{"system":"email","value":"c@d"},{"value":"e"}],` +
		`"nested":[[{"a":1}],{"a":2}],"nul":null,` +
		`"dup":"first","dup":"second","esc\u0061ped":"yes","str":"a\"b"}`
	for _, c := range []struct {
		path string
		want []string
	}{
		{"status", []string{`"final"`}},
		{"id", []string{`"o1"`}},
		{"missing", nil},
		{"missing.deeper", nil},
		{"status.deeper", nil},
		{"category", []string{`{"coding":[{"system":"s","code":"laboratory"},{"code":"x"}]}`, `{"text":"t"}`, `{"coding":{"code":"single"}}`}},
		{"category.coding.code", []string{`"laboratory"`, `"x"`, `"single"`}},
		{"category.text", []string{`"t"`}},
		{"effectiveDateTime", []string{`"2024-01-02"`}},
		{"effectivePeriod", nil},
		{"valueQuantity.value", []string{`1.50`}},
		{"deceasedBoolean", []string{`false`}},
		{"component.code.coding.code", []string{`"c1"`, `"c2"`, `"c3"`}},
		{"subject>Patient", []string{`{"reference":"Patient/p1"}`}},
		{"subject>Group", nil},
		{"subject", []string{`{"reference":"Patient/p1"}`}},
		{"performer>Practitioner", []string{`{"reference":"Practitioner/d1"}`, `{"reference":"https://example.org/fhir/Practitioner/d2/_history/3"}`}},
		{"performer>Organization,Practitioner", []string{`{"reference":"Practitioner/d1"}`, `{"reference":"Organization/x"}`, `{"reference":"https://example.org/fhir/Practitioner/d2/_history/3"}`}},
		{"telecom[system=email]", []string{`{"system":"email","value":"a@b"}`, `{"system":"email","value":"c@d"}`}},
		{"telecom[system=email].value", []string{`"a@b"`, `"c@d"`}},
		{"telecom[system=fax].value", nil},
		{"status[system=x]", nil}, // a filter keeps only objects
		{"nested.a", []string{`2`}},
		{"nested", []string{`{"a":2}`}}, // an array inside an array is not followed
		{"nul", nil},
		{"dup", []string{`"second"`}},
		{"escaped", []string{`"yes"`}},
		{"str", []string{`"a\"b"`}},
	} {
		got := values(t, obs, c.path)
		if strings.Join(got, " ") != strings.Join(c.want, " ") || len(got) != len(c.want) {
			t.Errorf("%s: %q, want %q", c.path, got, c.want)
		}
	}
}

// TestEachValueEscapes: names and filter values with escapes are compared
// decoded; a later duplicate of a filter field or a reference wins.
func TestEachValueEscapes(t *testing.T) {
	body := `{"tele\u0063om":[{"sys\u0074em":"em\u0061il","value":"x"},{"system":"email","system":"phone","value":"y"}],` +
		`"subject":{"reference":"Group/g1","reference":"Pati\u0065nt/p1"},"a":{"b":1,"b":{"c":2}}}`
	for _, c := range []struct {
		path string
		want string
	}{
		{"telecom[system=email].value", `"x"`},
		{"telecom[system=phone].value", `"y"`},
		{"subject>Patient", `{"reference":"Group/g1","reference":"Pati\u0065nt/p1"}`},
		{"subject>Group", ``},
		{"a.b.c", `2`},
	} {
		if got := strings.Join(values(t, body, c.path), " "); got != c.want {
			t.Errorf("%s: %s, want %s", c.path, got, c.want)
		}
	}
}

// TestEachValueStops: fn returning false ends the walk.
func TestEachValueStops(t *testing.T) {
	n := 0
	err := eachValue([]byte(`{"a":[{"b":[1,2]},{"b":3}]}`), path("a.b"), func(v []byte) bool {
		n++
		return n < 2
	})
	if err != nil || n != 2 {
		t.Errorf("calls %d, err %v; want 2, nil", n, err)
	}
}

// TestEachValueBadJSON: text that is not a JSON object is an error, never
// a panic.
func TestEachValueBadJSON(t *testing.T) {
	for _, body := range []string{``, `[]`, `{`, `{"a":`, `{"a":[{"b":1},]}`, `{"a":{"b":tru}}`, `{"a":{"b":1}`, `"x"`} {
		err := eachValue([]byte(body), path("a.b"), func([]byte) bool { return true })
		if !errors.Is(err, jsonobj.ErrSyntax) {
			t.Errorf("%q: %v, want ErrSyntax", body, err)
		}
	}
}

// TestEachValueAllocs: a walk over a body without escapes allocates
// nothing.
func TestEachValueAllocs(t *testing.T) {
	body := []byte(`{"resourceType":"Observation","category":[{"coding":[{"system":"s","code":"laboratory"}]}],` +
		`"subject":{"reference":"Patient/p1"},"telecom":[{"system":"email","value":"a"}]}`)
	paths := []*fhirdefs.SearchPath{path("category.coding.code"), path("subject>Patient"), path("telecom[system=email].value")}
	n := 0
	fn := func([]byte) bool { n++; return true }
	allocs := testing.AllocsPerRun(100, func() {
		for _, p := range paths {
			eachValue(body, p, fn)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per walk, want 0", allocs)
	}
}

// BenchmarkEachValue reads Observation category codes and dates from the
// sample's Observations, per resource, beside a plain validating walk of
// the same bodies (jsonobj.SkipValue) for scale.
func BenchmarkEachValue(b *testing.B) {
	obs := sampleByType(b)["Observation"]
	var size int64
	for _, o := range obs {
		size += int64(len(o))
	}
	for _, c := range []struct{ name, code string }{{"category", "category"}, {"date", "date"}, {"patient", "patient"}, {"code", "code"}} {
		p, ok := fhirdefs.LookupSearchParam("Observation", c.code)
		if !ok || p.Unsupported != "" {
			b.Fatalf("Observation %s: %+v", c.code, p)
		}
		b.Run(c.name, func(b *testing.B) {
			n := 0
			fn := func([]byte) bool { n++; return true }
			b.SetBytes(size / int64(len(obs)))
			for i := 0; b.Loop(); i++ {
				body := obs[i%len(obs)]
				for j := range p.Paths {
					eachValue(body, &p.Paths[j], fn)
				}
			}
		})
	}
	b.Run("skipvalue", func(b *testing.B) {
		b.SetBytes(size / int64(len(obs)))
		for i := 0; b.Loop(); i++ {
			jsonobj.SkipValue(obs[i%len(obs)], 0)
		}
	})
}
