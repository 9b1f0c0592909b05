package search

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSplitTypeFilter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"Observation?category=laboratory", []string{"Observation?category=laboratory"}},
		// Bulk Data 2.0: comma-joined queries in one value.
		{"Observation?category=laboratory,MedicationRequest?status=active",
			[]string{"Observation?category=laboratory", "MedicationRequest?status=active"}},
		{"MedicationRequest?status=active,MedicationRequest?status=completed&date=gt2018-07-01T00:00:00Z",
			[]string{"MedicationRequest?status=active", "MedicationRequest?status=completed&date=gt2018-07-01T00:00:00Z"}},
		// A value-level OR stays in its query.
		{"MedicationRequest?status=active,completed", []string{"MedicationRequest?status=active,completed"}},
		{"Observation?status=final,amended,Condition?clinical-status=active",
			[]string{"Observation?status=final,amended", "Condition?clinical-status=active"}},
		{"Observation?code=a,b&status=final,Patient?name=x,y",
			[]string{"Observation?code=a,b&status=final", "Patient?name=x,y"}},
		// What follows the comma must be [A-Z][A-Za-z]*\?.
		{"Patient?name=Smith,jones?x", []string{"Patient?name=Smith,jones?x"}},
		{"Patient?name=Smith,Jones", []string{"Patient?name=Smith,Jones"}},
		{"Patient?name=Smith,Jo nes?x", []string{"Patient?name=Smith,Jo nes?x"}},
		{"Patient?name=Smith,J-ones?x", []string{"Patient?name=Smith,J-ones?x"}},
		{"Patient?name=Smith,?x", []string{"Patient?name=Smith,?x"}},
		{"Patient?name=Smith,X?", []string{"Patient?name=Smith", "X?"}},
		// An escaped comma is a value's comma, never a separator.
		{`Patient?name=a\,Observation?x`, []string{`Patient?name=a\,Observation?x`}},
		{`Patient?name=a\\,Observation?x`, []string{`Patient?name=a\\`, "Observation?x"}},
		// %2C (an encoded value comma) is not a comma here.
		{"Observation?code=a%2CPatient?x", []string{"Observation?code=a%2CPatient?x"}},
		// Empty pieces are dropped.
		{",Observation?a=b", []string{"Observation?a=b"}},
		{"Observation?a=b,,Patient?x=y", []string{"Observation?a=b,", "Patient?x=y"}},
		{",,Patient?x=y", []string{",", "Patient?x=y"}},
		{"Observation?a=b,", []string{"Observation?a=b,"}},
		{",", []string{","}},
	} {
		got := SplitTypeFilter(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitTypeFilter(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// day returns the µs range of the UTC day y-m-d.
func day(y, m, d int) (lo, hi int64) {
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	return t.UnixMicro(), t.AddDate(0, 0, 1).UnixMicro() - 1
}

// span returns the µs range [from, from+d).
func span(from time.Time, d time.Duration) (lo, hi int64) {
	return from.UnixMicro(), from.Add(d).UnixMicro() - 1
}

// spanValue is a date Value whose range is [from, from+d).
func spanValue(raw, prefix string, from time.Time, d time.Duration) Value {
	lo, hi := span(from, d)
	return Value{Raw: raw, Prefix: prefix, Lo: lo, Hi: hi}
}

func dateValue(raw, prefix string, lo, hi int64) Value {
	return Value{Raw: raw, Prefix: prefix, Lo: lo, Hi: hi}
}

// pq is a wanted Param without its Def: code is the parameter code the
// Def must have.
type pq struct {
	name, code, modifier string
	missing              bool
	values               []Value
}

func TestParseQuery(t *testing.T) {
	d20240305lo, d20240305hi := day(2024, 3, 5)
	utc := func(y, mo, d, h, mi, s int) time.Time { return time.Date(y, time.Month(mo), d, h, mi, s, 0, time.UTC) }
	lo1, hi1 := span(utc(2024, 1, 1, 0, 0, 0).Add(-time.Hour), time.Second) // 2024-01-01T00:00:00+01:00
	tok := func(raw, system, code string, hasSystem bool) Value {
		return Value{Raw: raw, System: system, Code: code, HasSystem: hasSystem}
	}
	for _, tc := range []struct {
		q      string
		typ    string
		params []pq
	}{
		// token forms
		{"Observation?category=laboratory", "Observation", []pq{{"category", "category", "", false, []Value{tok("laboratory", "", "laboratory", false)}}}},
		{"Observation?code=http://loinc.org|8867-4", "Observation", []pq{{"code", "code", "", false, []Value{tok("http://loinc.org|8867-4", "http://loinc.org", "8867-4", true)}}}},
		{"Observation?code=|8867-4", "Observation", []pq{{"code", "code", "", false, []Value{tok("|8867-4", "", "8867-4", true)}}}},
		{"Observation?code=http://loinc.org|", "Observation", []pq{{"code", "code", "", false, []Value{tok("http://loinc.org|", "http://loinc.org", "", true)}}}},
		{"Patient?active=true", "Patient", []pq{{"active", "active", "", false, []Value{tok("true", "", "true", false)}}}},
		{"Patient?active=false", "Patient", []pq{{"active", "active", "", false, []Value{tok("false", "", "false", false)}}}},
		{"Observation?status:not=final", "Observation", []pq{{"status:not", "status", "not", false, []Value{tok("final", "", "final", false)}}}},
		{"Observation?_tag=http://x.org|a,b", "Observation", []pq{{"_tag", "_tag", "", false, []Value{tok("http://x.org|a", "http://x.org", "a", true), tok("b", "", "b", false)}}}},
		{"Observation?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", "Observation", []pq{{"_security", "_security", "", false, []Value{tok("http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R", true)}}}},
		{"Observation?_id=abc", "Observation", []pq{{"_id", "_id", "", false, []Value{tok("abc", "", "abc", false)}}}},
		// :missing on every type
		{"Observation?category:missing=true", "Observation", []pq{{"category:missing", "category", "missing", true, nil}}},
		{"Observation?subject:missing=false", "Observation", []pq{{"subject:missing", "subject", "missing", false, nil}}},
		{"Patient?name:missing=true&birthdate:missing=false", "Patient", []pq{{"name:missing", "name", "missing", true, nil}, {"birthdate:missing", "birthdate", "missing", false, nil}}},
		// value OR, repeated names ANDed, empty '&' pieces skipped
		{"MedicationRequest?status=active,completed", "MedicationRequest", []pq{{"status", "status", "", false, []Value{tok("active", "", "active", false), tok("completed", "", "completed", false)}}}},
		{"Observation?&status=final&&status=amended&", "Observation", []pq{
			{"status", "status", "", false, []Value{tok("final", "", "final", false)}},
			{"status", "status", "", false, []Value{tok("amended", "", "amended", false)}}}},
		// escapes
		{`Observation?code=a\,b`, "Observation", []pq{{"code", "code", "", false, []Value{tok(`a\,b`, "", "a,b", false)}}}},
		{`Observation?code=s\|x|c\$d`, "Observation", []pq{{"code", "code", "", false, []Value{tok(`s\|x|c\$d`, "s|x", "c$d", true)}}}},
		{`Observation?code=a\\,b`, "Observation", []pq{{"code", "code", "", false, []Value{tok(`a\\`, "", `a\`, false), tok("b", "", "b", false)}}}},
		{`Observation?code=a\b\`, "Observation", []pq{{"code", "code", "", false, []Value{tok(`a\b\`, "", `a\b\`, false)}}}},
		{`Patient?name=O\,Brien`, "Patient", []pq{{"name", "name", "", false, []Value{{Raw: `O\,Brien`, Text: "o,brien"}}}}},
		// doubly encoded values: %2C is a value comma, %26 an '&' in a value, %7C a '|'
		{"Observation?status=final%2Camended", "Observation", []pq{{"status", "status", "", false, []Value{tok("final", "", "final", false), tok("amended", "", "amended", false)}}}},
		{"Observation?code=http%3A%2F%2Floinc.org%7C8867-4", "Observation", []pq{{"code", "code", "", false, []Value{tok("http://loinc.org|8867-4", "http://loinc.org", "8867-4", true)}}}},
		{"Patient?name=a%26b&family=c", "Patient", []pq{
			{"name", "name", "", false, []Value{{Raw: "a&b", Text: "a&b"}}},
			{"family", "family", "", false, []Value{{Raw: "c", Text: "c"}}}}},
		{"Patient?name=Smith+Jones", "Patient", []pq{{"name", "name", "", false, []Value{{Raw: "Smith Jones", Text: "smith jones"}}}}},
		{"Patient?na%6De=x", "Patient", []pq{{"name", "name", "", false, []Value{{Raw: "x", Text: "x"}}}}},
		{"Observation?status%3Anot=final", "Observation", []pq{{"status:not", "status", "not", false, []Value{tok("final", "", "final", false)}}}},
		// string: folded by default, as written with :exact, folded with :contains
		{"Patient?name=Müller", "Patient", []pq{{"name", "name", "", false, []Value{{Raw: "Müller", Text: "muller"}}}}},
		{"Patient?family:exact=Müller", "Patient", []pq{{"family:exact", "family", "exact", false, []Value{{Raw: "Müller", Text: "Müller"}}}}},
		{"Patient?address:contains=ÉTR", "Patient", []pq{{"address:contains", "address", "contains", false, []Value{{Raw: "ÉTR", Text: "etr"}}}}},
		// uri
		{"Observation?_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns", "Observation", []pq{{"_profile", "_profile", "", false, []Value{{Raw: "http://hl7.org/fhir/StructureDefinition/vitalsigns", Text: "http://hl7.org/fhir/StructureDefinition/vitalsigns"}}}}},
		// reference
		{"Observation?subject=123", "Observation", []pq{{"subject", "subject", "", false, []Value{{Raw: "123", RefID: "123"}}}}},
		{"Observation?subject=Patient/123", "Observation", []pq{{"subject", "subject", "", false, []Value{{Raw: "Patient/123", RefType: "Patient", RefID: "123"}}}}},
		{"Observation?subject=https://example.org/fhir/Patient/123", "Observation", []pq{{"subject", "subject", "", false, []Value{{Raw: "https://example.org/fhir/Patient/123", URL: "https://example.org/fhir/Patient/123", RefType: "Patient", RefID: "123"}}}}},
		{"Observation?subject=http://example.org/fhir/Patient/123/_history/2", "Observation", []pq{{"subject", "subject", "", false, []Value{{Raw: "http://example.org/fhir/Patient/123/_history/2", URL: "http://example.org/fhir/Patient/123/_history/2", RefType: "Patient", RefID: "123"}}}}},
		{"Observation?subject=http://example.org/x", "Observation", []pq{{"subject", "subject", "", false, []Value{{Raw: "http://example.org/x", URL: "http://example.org/x"}}}}},
		{"Observation?subject=Patient/1,Group/2", "Observation", []pq{{"subject", "subject", "", false, []Value{{Raw: "Patient/1", RefType: "Patient", RefID: "1"}, {Raw: "Group/2", RefType: "Group", RefID: "2"}}}}},
		// dates: partial dates at every precision
		{"Patient?birthdate=2024", "Patient", []pq{{"birthdate", "birthdate", "", false, []Value{dateValue("2024", "eq", utc(2024, 1, 1, 0, 0, 0).UnixMicro(), utc(2025, 1, 1, 0, 0, 0).UnixMicro()-1)}}}},
		{"Patient?birthdate=2024-02", "Patient", []pq{{"birthdate", "birthdate", "", false, []Value{dateValue("2024-02", "eq", utc(2024, 2, 1, 0, 0, 0).UnixMicro(), utc(2024, 3, 1, 0, 0, 0).UnixMicro()-1)}}}},
		{"Patient?birthdate=2024-03-05", "Patient", []pq{{"birthdate", "birthdate", "", false, []Value{dateValue("2024-03-05", "eq", d20240305lo, d20240305hi)}}}},
		{"Encounter?date=ge2024-03-05T10:20", "Encounter", []pq{{"date", "date", "", false, []Value{spanValue("ge2024-03-05T10:20", "ge", utc(2024, 3, 5, 10, 20, 0), time.Minute)}}}},
		{"Encounter?date=ge2024-03-05T10:20-05:00", "Encounter", []pq{{"date", "date", "", false, []Value{spanValue("ge2024-03-05T10:20-05:00", "ge", utc(2024, 3, 5, 15, 20, 0), time.Minute)}}}},
		{"Encounter?date=ge2024-03-05T10:20:30", "Encounter", []pq{{"date", "date", "", false, []Value{spanValue("ge2024-03-05T10:20:30", "ge", utc(2024, 3, 5, 10, 20, 30), time.Second)}}}},
		{"Encounter?date=ge2024-03-05T10:20:30.5Z", "Encounter", []pq{{"date", "date", "", false, []Value{spanValue("ge2024-03-05T10:20:30.5Z", "ge", utc(2024, 3, 5, 10, 20, 30).Add(500*time.Millisecond), 100*time.Millisecond)}}}},
		{"Observation?_lastUpdated=lt2024-03-05T10:20:30Z", "Observation", []pq{{"_lastUpdated", "_lastUpdated", "", false, []Value{spanValue("lt2024-03-05T10:20:30Z", "lt", utc(2024, 3, 5, 10, 20, 30), time.Second)}}}},
		// the time zone's '+': unencoded (a space after decoding), %2B, or a space
		{"Observation?date=ge2024-01-01T00:00:00+01:00", "Observation", []pq{{"date", "date", "", false, []Value{dateValue("ge2024-01-01T00:00:00 01:00", "ge", lo1, hi1)}}}},
		{"Observation?date=ge2024-01-01T00:00:00%2B01:00", "Observation", []pq{{"date", "date", "", false, []Value{dateValue("ge2024-01-01T00:00:00+01:00", "ge", lo1, hi1)}}}},
		{"Observation?date=ge2024-01-01T00:00:00 01:00", "Observation", []pq{{"date", "date", "", false, []Value{dateValue("ge2024-01-01T00:00:00 01:00", "ge", lo1, hi1)}}}},
		// two date params: a range
		{"Encounter?date=ge2024-03-05&date=lt2024-04", "Encounter", []pq{
			{"date", "date", "", false, []Value{dateValue("ge2024-03-05", "ge", d20240305lo, d20240305hi)}},
			{"date", "date", "", false, []Value{dateValue("lt2024-04", "lt", utc(2024, 4, 1, 0, 0, 0).UnixMicro(), utc(2024, 5, 1, 0, 0, 0).UnixMicro()-1)}}}},
	} {
		got, err := ParseQuery(tc.q)
		if err != nil {
			t.Errorf("ParseQuery(%.100q): %v", tc.q, err)
			continue
		}
		checkQuery(t, tc.q, got, tc.typ, tc.params)
	}
}

// checkQuery compares got with the wanted type and params (each param's
// Def must be the definition of its code).
func checkQuery(t *testing.T, q string, got Query, typ string, params []pq) {
	t.Helper()
	if got.Type != typ || got.Raw != q || len(got.Params) != len(params) {
		t.Errorf("ParseQuery(%.100q) = %+v, want type %s and %d params", q, got, typ, len(params))
		return
	}
	for i, p := range got.Params {
		w := params[i]
		if p.Def == nil || p.Def.Code != w.code {
			t.Errorf("ParseQuery(%.100q) param %d: Def %+v, want the definition of %s", q, i, p.Def, w.code)
			continue
		}
		p.Def = nil
		want := Param{Name: w.name, Modifier: w.modifier, Missing: w.missing, Values: w.values}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("ParseQuery(%.100q) param %d:\n got %+v\nwant %+v", q, i, p, want)
		}
	}
}

func TestParseQueryDatePrefixes(t *testing.T) {
	lo, hi := day(2024, 3, 5)
	for _, prefix := range []string{"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"} {
		q := "Observation?date=" + prefix + "2024-03-05"
		got, err := ParseQuery(q)
		if err != nil {
			t.Errorf("ParseQuery(%.100q): %v", q, err)
			continue
		}
		checkQuery(t, q, got, "Observation", []pq{{"date", "date", "", false, []Value{dateValue(prefix+"2024-03-05", prefix, lo, hi)}}})
	}
}

// TestParseQueryErrors: every refusal is an *Error naming the offending
// parameter (Param and the message).
func TestParseQueryErrors(t *testing.T) {
	type errCase struct {
		q     string
		param string // the *Error's Param; the message must name it
		msg   string // in the message
	}
	cases := []errCase{
		// the query itself
		{"", "", "empty query"},
		{"Observation", "", "no '?'"},
		{"Observation=code", "", "no '?'"},
		{"Observation%3Fcode%3D1", "", "percent-encoded twice"},
		{"Foo?code=1", "", "Foo is not an R4 resource type"},
		{"observation?code=1", "", "observation is not an R4 resource type"},
		{"?code=1", "", `"" is not an R4 resource type`},
		{"Observation?", "", "no search parameter"},
		{"Observation?&&", "", "no search parameter"},
		{"Observation?=x", "", "without a name"},
		// unknown parameters
		{"Observation?foo=1", "foo", "Observation has no search parameter foo"},
		{"Patient?category=1", "category", "Patient has no search parameter category"},
		{"Observation?foo:exact=1", "foo:exact", "Observation has no search parameter foo"},
		{"Observation?Code=1", "Code", "Observation has no search parameter Code"},
		{"Observation?_since=2024", "_since", "Observation has no search parameter _since"},
		// chains, type modifiers
		{"Observation?subject.name=x", "subject.name", "chained"},
		{"Observation?subject:Patient.name=x", "subject:Patient.name", "chained"},
		{"Observation?subject:Patient=123", "subject:Patient", "type-restricted"},
		// modifiers
		{"Observation?code:text=x", "code:text", "modifier :text is not supported"},
		{"Observation?code:in=http://x.org/vs", "code:in", "modifier :in is not supported"},
		{"Observation?code:below=x", "code:below", "modifier :below"},
		{"Observation?code:exact=x", "code:exact", "modifier :exact is not supported on a token"},
		{"Patient?name:not=x", "name:not", "modifier :not is not supported on a string"},
		{"Observation?date:not=2024", "date:not", "modifier :not"},
		{"Observation?subject:identifier=x|1", "subject:identifier", "modifier :identifier"},
		{"Observation?_profile:below=http://x", "_profile:below", "modifier :below"},
		{"Observation?code:=x", "code:", "empty modifier"},
		{"Observation?code:not:missing=true", "code:not:missing", "modifier :not:missing"},
		{"Observation?:missing=true", ":missing", "no name"},
		{"Observation?code:missing=yes", "code:missing", "neither true nor false"},
		{"Observation?code:missing=true,false", "code:missing", "neither true nor false"},
		// empty values
		{"Observation?code", "code", "code has no value"},
		{"Observation?code=", "code", "code has no value"},
		{"Observation?code:missing=", "code:missing", "has no value"},
		{"Observation?code=a,", "code", "code: empty value"},
		{"Observation?code=,a", "code", "code: empty value"},
		{"Observation?code=a,,b", "code", "code: empty value"},
		{"Observation?code=%2C", "code", "code: empty value"},
		// tokens
		{"Observation?code=|", "code", "neither a system nor a code"},
		{"Observation?code=a|b|c", "code", "more than one '|'"},
		{"Patient?active=yes", "active", "neither true nor false"},
		{"Patient?active=http://x|true", "active", "neither true nor false"},
		// dates
		{"Observation?date=2024-13", "date", `date: 2024-13 is not a date`},
		{"Observation?date=ge2024-02-30", "date", `ge2024-02-30 is not a date`},
		{"Observation?date=xx2024", "date", `xx2024 is not a date`},
		{"Observation?date=ge", "date", `ge is not a date`},
		{"Observation?date=EQ2024", "date", `EQ2024 is not a date`},
		{"Observation?date=2024-01-01T25:00Z", "date", "not a date"},
		{"Observation?date=2024-01-01T10", "date", "not a date"},
		{"Observation?date=2024-01-01T10:00:00+1:00", "date", "not a date"},
		{"Observation?date=2024-01-01 10:00:00Z", "date", "not a date"},
		{"Observation?date=24-01-01", "date", "not a date"},
		{"Observation?date=2024,bad", "date", "bad is not a date"},
		{"Observation?_lastUpdated=gt2024-1-1", "_lastUpdated", "not a date"},
		// references
		{"Observation?subject=urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "subject", "is not a reference"},
		{"Observation?subject=Foo/1", "subject", "Foo/1 is not a reference"},
		{"Observation?subject=Patient/", "subject", "is not a reference"},
		{"Observation?subject=Patient/a_b", "subject", "is not a reference"},
		{"Observation?subject=Patient/1/_history/2", "subject", "is not a reference"},
		{"Observation?subject=%23contained", "subject", "is not a reference"},
		{"Observation?subject=https://", "subject", "is not a reference URL"},
		{"Observation?subject=http://x/a b", "subject", "is not a reference URL"},
		// percent-encoding and UTF-8
		{"Observation?code=%zz", "code", "bad percent-encoding"},
		{"Observation?co%zzde=1", "co%zzde", "bad percent-encoding"},
		{"Patient?name=%FF", "name", "not valid UTF-8"},
		{"Patient?na%FFme=x", "na\xffme", "not valid UTF-8"},
	}
	// result and control parameters, and the unsupported special ones
	for _, name := range []string{"_sort", "_count", "_include", "_revinclude", "_elements", "_summary", "_total", "_contained", "_containedType", "_format", "_pretty", "_type"} {
		cases = append(cases, errCase{"Observation?" + name + "=x", name, name + " is not allowed in _typeFilter"})
	}
	cases = append(cases, errCase{"Observation?_include:iterate=Observation:subject", "_include:iterate", "is not allowed in _typeFilter"})
	for _, name := range []string{"_has", "_filter", "_query", "_list", "_text", "_content"} {
		cases = append(cases, errCase{"Observation?" + name + "=x", name, name + " is not supported"})
	}
	cases = append(cases, errCase{"Observation?_has:Observation:patient:code=x", "_has:Observation:patient:code", "is not supported"})
	// quantity, number and composite parameters
	for _, name := range []string{"value-quantity", "code-value-quantity", "component-code-value-concept"} {
		cases = append(cases, errCase{"Observation?" + name + "=5", name, name + " is not supported"})
	}
	cases = append(cases, errCase{"RiskAssessment?probability=0.5", "probability", "probability is not supported"})
	// limits: 64 values a query, 8 KiB
	cases = append(cases,
		errCase{"Observation?code=" + strings.Repeat("a,", 64) + "a", "code", "too many values"},
		errCase{"Observation?code=" + strings.Repeat("a,", 31) + "a&status=" + strings.Repeat("a,", 31) + "a&category:missing=true", "category:missing", "too many values"},
		errCase{"Patient?name=" + strings.Repeat("a", MaxQueryBytes-len("Patient?name=")+1), "", "query too long"},
	)
	for _, tc := range cases {
		_, err := ParseQuery(tc.q)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("ParseQuery(%.100q) = %v, want an *Error", tc.q, err)
			continue
		}
		if e.Query != tc.q || e.Param != tc.param {
			t.Errorf("ParseQuery(%.100q): Query %q Param %q, want Param %q", tc.q, e.Query, e.Param, tc.param)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "_typeFilter ") || !strings.Contains(msg, tc.msg) {
			t.Errorf("ParseQuery(%.100q) = %q, want it to say %q", tc.q, msg, tc.msg)
		}
		named, _, _ := strings.Cut(tc.param, ":")
		if named == "" {
			named = tc.param
		}
		if tc.param != "" && !strings.Contains(e.Msg, show(named)) {
			t.Errorf("ParseQuery(%.100q) = %q: the message does not name the parameter %q", tc.q, msg, tc.param)
		}
	}
}

func TestParseQueryErrorMessage(t *testing.T) {
	_, err := ParseQuery("Observation?foo=1")
	if got, want := fmt.Sprint(err), "_typeFilter Observation?foo=1: Observation has no search parameter foo"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A long query is cut in the message, a control character quoted.
	long := "Patient?name=" + strings.Repeat("é", 200) + "&foo=1"
	_, err = ParseQuery(long)
	if msg := err.Error(); len(msg) > 300 || !strings.HasSuffix(msg, "…: Patient has no search parameter foo") {
		t.Errorf("long query: %q", msg)
	}
	_, err = ParseQuery("Observation?foo=1&x=\n")
	if msg := err.Error(); strings.Contains(msg, "\n") {
		t.Errorf("control character in %q", msg)
	}
}

// TestParseQueryLimits: exactly at the limits is accepted.
func TestParseQueryLimits(t *testing.T) {
	for _, q := range []string{
		"Observation?code=" + strings.Repeat("a,", 63) + "a",
		"Observation?code=" + strings.Repeat("a,", 31) + "a&status=" + strings.Repeat("a,", 31) + "a",
		"Observation?code=" + strings.Repeat("a,", 31) + "a&status=" + strings.Repeat("a,", 30) + "a&category:missing=true",
		"Patient?name=" + strings.Repeat("a", MaxQueryBytes-len("Patient?name=")),
	} {
		if _, err := ParseQuery(q); err != nil {
			t.Errorf("ParseQuery(%.40q...): %v", q, err)
		}
	}
}

// TestParseQueryStopsAtLimit: a parameter with hundreds of values is
// refused at its 65th, not after parsing them all (here each value
// allocates its folded text).
func TestParseQueryStopsAtLimit(t *testing.T) {
	q := "Patient?name=" + strings.Repeat("Äbcdefghijkl,", 580) + "Ä"
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := ParseQuery(q); err == nil {
			t.Fatal("accepted")
		}
	})
	if allocs > 4*MaxQueryValues {
		t.Errorf("ParseQuery of 581 values: %v allocations, want at most %d", allocs, 4*MaxQueryValues)
	}
}
