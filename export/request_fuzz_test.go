package export

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/search"
)

// fuzzParams decodes the fuzzer's string into params: "&" separates
// params, the first "=" separates name and value (no URL unescaping: the
// values are what httpapi hands over after decoding).
func fuzzParams(s string) []Param {
	if s == "" {
		return nil
	}
	var out []Param
	for kv := range strings.SplitSeq(s, "&") {
		name, value, _ := strings.Cut(kv, "=")
		out = append(out, Param{Name: name, Value: value})
	}
	return out
}

func encodeFuzzParams(params []Param) string {
	parts := make([]string, len(params))
	for i, p := range params {
		parts[i] = p.Name + "=" + p.Value
	}
	return strings.Join(parts, "&")
}

// fuzzLevels are the levels FuzzParseRequest picks from.
var fuzzLevels = []Level{LevelSystem, LevelPatient, LevelGroup}

// FuzzParseRequest: ParseRequest never panics, refuses with a complete
// *RequestError, and what it accepts satisfies Request's invariants. Every
// _since/_until it accepts agrees with time.Parse on the instant.
func FuzzParseRequest(f *testing.F) {
	for _, tc := range requestCases(f) {
		f.Add(encodeFuzzParams(tc.params), tc.lenient, uint8(slices.Index(fuzzLevels, tc.level)))
	}
	f.Fuzz(func(t *testing.T, query string, lenient bool, li uint8) {
		params := fuzzParams(query)
		level := fuzzLevels[int(li)%len(fuzzLevels)]
		opts := ParseOptions{Now: testNow, Lenient: lenient, Level: level}
		req, err := ParseRequest(params, opts)
		again, err2 := ParseRequest(params, opts)
		if !reflect.DeepEqual(req, again) || (err == nil) != (err2 == nil) {
			t.Fatalf("ParseRequest is not deterministic on %q", query)
		}
		for _, p := range params {
			if p.Name == "_since" || p.Name == "_until" {
				checkInstantAgainstTime(t, p.Value)
			}
		}
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("%q: error %v is not a *RequestError", query, err)
			}
			switch re.Code {
			case "invalid", "value", "not-supported", "too-costly":
			default:
				t.Fatalf("%q: code %q", query, re.Code)
			}
			if re.Diagnostics == "" || !slices.ContainsFunc(params, func(p Param) bool { return p.Name == re.Param }) {
				t.Fatalf("%q: error %+v names no given parameter or has no diagnostics", query, re)
			}
			return
		}
		if req.OutputFormat != "application/fhir+ndjson" || req.Lenient != lenient {
			t.Fatalf("%q: OutputFormat %q Lenient %v", query, req.OutputFormat, req.Lenient)
		}
		if req.Since >= req.Until {
			t.Fatalf("%q: Since %d >= Until %d", query, req.Since, req.Until)
		}
		if req.Since > testNow || req.Until != index.Unbounded && req.Until >= testNow {
			t.Fatalf("%q: window (%d, %d] reaches past now %d", query, req.Since, req.Until, testNow)
		}
		for i, typ := range req.Types {
			if !fhir.IsResourceType(typ) || slices.Contains(req.Types[:i], typ) {
				t.Fatalf("%q: bad or duplicate type %q in %q", query, typ, req.Types)
			}
		}
		for i, e := range req.Elements {
			if e.Type != "" && !fhir.IsResourceType(e.Type) || !isElementName(e.Name) || slices.Contains(req.Elements[:i], e) {
				t.Fatalf("%q: bad or duplicate element %+v", query, e)
			}
		}
		if !lenient && len(req.Ignored) != 0 {
			t.Fatalf("%q: strict request ignored %q", query, req.Ignored)
		}
		hasType := slices.ContainsFunc(params, func(p Param) bool { return p.Name == "_type" })
		if hasType != (len(req.Types) > 0) {
			t.Fatalf("%q: _type given %v but Types %q", query, hasType, req.Types)
		}
		checkLevelParams(t, query, params, level, lenient, req)
		checkTypeFilters(t, query, params, req)
	})
}

// checkTypeFilters checks an accepted request's TypeFilters: each one
// query of a given _typeFilter that parses, once, of a requested type.
func checkTypeFilters(t *testing.T, query string, params []Param, req Request) {
	t.Helper()
	if len(req.TypeFilters) > MaxTypeFilters {
		t.Fatalf("%q: %d _typeFilter queries kept, past the limit", query, len(req.TypeFilters))
	}
	for i, q := range req.TypeFilters {
		pq, err := search.ParseQuery(q)
		if err != nil || slices.Contains(req.TypeFilters[:i], q) {
			t.Fatalf("%q: kept a bad or duplicate query %q (%v)", query, q, err)
		}
		if len(req.Types) > 0 && !slices.Contains(req.Types, pq.Type) {
			t.Fatalf("%q: kept query %q of a type outside _type %q", query, q, req.Types)
		}
		if !slices.ContainsFunc(params, func(p Param) bool {
			return p.Name == "_typeFilter" && slices.Contains(search.SplitTypeFilter(p.Value), q)
		}) {
			t.Fatalf("%q: kept query %q that no _typeFilter holds", query, q)
		}
	}
}

// checkLevelParams checks what an accepted request made of patient,
// organizeOutputBy and includeAssociatedData against the parameters.
func checkLevelParams(t *testing.T, query string, params []Param, level Level, lenient bool, req Request) {
	t.Helper()
	hasPatient := slices.ContainsFunc(params, func(p Param) bool { return p.Name == "patient" })
	if want := hasPatient && level != LevelSystem; want != (len(req.Patients) > 0) {
		t.Fatalf("%q at %q: patient given %v but Patients %q", query, level, hasPatient, req.Patients)
	}
	for i, id := range req.Patients {
		if !fhir.IsID(id) || slices.Contains(req.Patients[:i], id) ||
			!slices.ContainsFunc(params, func(p Param) bool { return p.Name == "patient" && strings.Contains(p.Value, "Patient/"+id) }) {
			t.Fatalf("%q: bad, duplicate or unasked patient %q in %q", query, id, req.Patients)
		}
	}
	organize := slices.ContainsFunc(params, func(p Param) bool { return p.Name == "organizeOutputBy" && p.Value == "Patient" })
	if want := organize && level != LevelSystem; want != (req.OrganizeBy == "Patient") || req.OrganizeBy != "" && req.OrganizeBy != "Patient" {
		t.Fatalf("%q at %q: OrganizeBy %q", query, level, req.OrganizeBy)
	}
	codes := map[string]bool{}
	for _, p := range params {
		if p.Name == "includeAssociatedData" {
			for c := range strings.SplitSeq(p.Value, ",") {
				codes[strings.TrimSpace(c)] = true
			}
		}
	}
	want := ProvenanceNone
	switch {
	case codes["RelevantProvenanceResources"]:
		want = ProvenanceRelevant
	case codes["LatestProvenanceResources"]:
		want = ProvenanceLatest
	}
	if req.Provenance != want {
		t.Fatalf("%q: Provenance %q, want %q", query, req.Provenance, want)
	}
	if !lenient && codes["_none"] && want != ProvenanceNone {
		t.Fatalf("%q: _none with %q accepted without lenient handling", query, want)
	}
}

// checkInstantAgainstTime compares parseInstant with time.Parse where the
// latter applies (at most 9 fraction digits, no space for "+").
func checkInstantAgainstTime(t *testing.T, s string) {
	t.Helper()
	got, problem := parseInstant(s)
	if problem != "" || strings.Contains(s, " ") {
		return
	}
	if _, frac, ok := strings.Cut(s, "."); ok && strings.IndexAny(frac, "Z+-") > 9 {
		return
	}
	tt, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("parseInstant accepted %q, time.Parse did not: %v", s, err)
	}
	want := tt.Unix()*1_000_000 + int64(tt.Nanosecond()/1000)
	if got.us != want || (got.sub != "") != (tt.Nanosecond()%1000 != 0) {
		t.Fatalf("parseInstant(%q) = %+v, time.Parse says %d µs + %d ns", s, got, want, tt.Nanosecond()%1000)
	}
}
