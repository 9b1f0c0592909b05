package export

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhir"
)

// TestRequestLimits: _type, _elements and lenient ignored items past their
// limits are refused with a 400 OperationOutcome (too-costly) naming the
// parameter and the limit; at the limit they are accepted.
func TestRequestLimits(t *testing.T) {
	list := func(n int, f func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = f(i)
		}
		return strings.Join(parts, ",")
	}
	types := fhir.ResourceTypes()
	typeAt := func(i int) string { return types[i%len(types)] }
	elemAt := func(i int) string { return fmt.Sprintf("e%d", i) }
	for _, tc := range []struct {
		name    string
		params  []Param
		lenient bool
		param   string // "" = accepted
		limit   int
	}{
		{name: "_type at the limit", params: ps("_type", list(MaxTypeEntries, typeAt))},
		{name: "_type past the limit", params: ps("_type", list(MaxTypeEntries+1, typeAt)), param: "_type", limit: MaxTypeEntries},
		{name: "_type past the limit over repeats", params: ps("_type", list(MaxTypeEntries, typeAt), "_type", "Patient"),
			param: "_type", limit: MaxTypeEntries},
		{name: "_elements at the limit", params: ps("_elements", list(MaxElementsEntries, elemAt))},
		{name: "_elements past the limit", params: ps("_elements", list(MaxElementsEntries+1, elemAt)),
			param: "_elements", limit: MaxElementsEntries},
		{name: "_elements past the limit, lenient, bad entries", lenient: true,
			params: ps("_elements", list(MaxElementsEntries+1, func(i int) string { return fmt.Sprintf("a.b%d", i) })),
			param:  "_elements", limit: MaxIgnored},
		{name: "ignored at the limit", lenient: true, params: manyUnknown(MaxIgnored)},
		{name: "ignored past the limit", lenient: true, params: manyUnknown(MaxIgnored + 1), param: "x100", limit: MaxIgnored},
		{name: "repeats of one ignored item count once", lenient: true,
			params: append(manyUnknown(MaxIgnored), manyUnknown(MaxIgnored)...)},
		{name: "element name too long", params: ps("_elements", "a"+strings.Repeat("b", maxElementName)), param: "_elements"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ParseRequest(tc.params, ParseOptions{Now: testNow, Lenient: tc.lenient})
			if tc.param == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("got %d types, %d elements, %d ignored, err %v; want a *RequestError", len(req.Types), len(req.Elements), len(req.Ignored), err)
			}
			if re.Param != tc.param {
				t.Errorf("Param = %q, want %q (%s)", re.Param, tc.param, re.Diagnostics)
			}
			if tc.limit > 0 && (re.Code != codeTooCostly || !strings.Contains(re.Diagnostics, fmt.Sprint(tc.limit))) {
				t.Errorf("got {%s %q}, want code too-costly naming the limit %d", re.Code, re.Diagnostics, tc.limit)
			}
		})
	}
}

// manyUnknown returns n distinct unknown parameters x0 … x(n-1).
func manyUnknown(n int) []Param {
	out := make([]Param, n)
	for i := range out {
		out[i] = Param{Name: fmt.Sprint("x", i), Value: "1"}
	}
	return out
}

// TestParseRequestLinear: deduplicating _type, _elements and the lenient
// ignored list costs one set lookup per entry (it was a scan of the list
// so far: quadratic, 30 s of CPU for one 849 KB POST). probes counts the
// membership checks, so the test is exact, not timed.
func TestParseRequestLinear(t *testing.T) {
	var elems, bad []string
	for i := range MaxElementsEntries - MaxIgnored {
		elems = append(elems, fmt.Sprint("e", i))
	}
	for i := range MaxIgnored {
		bad = append(bad, fmt.Sprint("a.b", i))
	}
	types := fhir.ResourceTypes()
	params := ps("_type", strings.Join(types, ","), "_elements", strings.Join(elems, ","))
	p := requestParser{opts: ParseOptions{Now: testNow, Lenient: true}}
	for _, prm := range append(params, ps("_elements", strings.Join(bad, ","))...) {
		if err := p.param(prm); err != nil {
			t.Fatal(err)
		}
	}
	entries := len(types) + len(elems) + len(bad)
	if len(p.req.Elements) != len(elems) || len(p.req.Ignored) != len(bad) || len(p.req.Types) != len(types) {
		t.Fatalf("parsed %d types, %d elements, %d ignored", len(p.req.Types), len(p.req.Elements), len(p.req.Ignored))
	}
	if p.probes > 2*entries {
		t.Errorf("deduplicating %d entries took %d probes: more than linear", entries, p.probes)
	}
}

// TestSinceAtEpochListsDeletions: a _since at or before the Unix epoch is
// still a _since export, so deletions are listed (Since 0 used to mean "no
// _since" and dropped them).
func TestSinceAtEpochListsDeletions(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)},
		resource{"Patient", "p2", []byte(`{"resourceType":"Patient","id":"p2"}`)})
	e.f.apply(t, resource{typ: "Patient", id: "p2"})
	m := e.manager(t, Config{}, nil)
	for _, since := range []string{"1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1900-01-01T00:00:00Z"} {
		id, err := m.Kickoff(t.Context(), Kickoff{Params: ps("_since", since), RequestURL: "http://x/$export"})
		if err != nil {
			t.Fatal(err)
		}
		mf := waitManifest(t, m, id)
		c := readExport(t, m, id, mf)
		if _, ok := c.deleted["Patient/p2"]; !ok || len(mf.Deleted) != 1 {
			t.Errorf("_since=%s: deleted %v (manifest %+v), want Patient/p2", since, keys(c.deleted), mf.Deleted)
		}
		if _, ok := c.resources["Patient/p1"]; !ok {
			t.Errorf("_since=%s: resources %v, want Patient/p1", since, keys(c.resources))
		}
	}
}

// TestOldRecordSince: job records written before HasSince still decode
// with the meaning they had (Since > 0: a _since export; 0: full).
func TestOldRecordSince(t *testing.T) {
	for _, tc := range []struct {
		rec  string
		want bool
	}{
		{`{"version":1,"state":"queued","request":{"since":5,"until":9,"outputFormat":"x","request":"u"},"headSeq":1,"created":"2026-01-01T00:00:00Z"}`, true},
		{`{"version":1,"state":"queued","request":{"until":9,"outputFormat":"x","request":"u"},"headSeq":1,"created":"2026-01-01T00:00:00Z"}`, false},
		{`{"version":1,"state":"queued","request":{"hasSince":true,"until":9,"outputFormat":"x","request":"u"},"headSeq":1,"created":"2026-01-01T00:00:00Z"}`, true},
	} {
		r, err := decodeRecord([]byte(tc.rec))
		if err != nil {
			t.Fatal(err)
		}
		if r.Request.HasSince != tc.want {
			t.Errorf("%s: HasSince %v, want %v", tc.rec, r.Request.HasSince, tc.want)
		}
	}
}
