package search

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// Hand-made search parameters, so that these tests do not depend on the
// generated table.

func mPath(typ string, steps ...string) fhirdefs.SearchPath {
	p := fhirdefs.SearchPath{Type: typ}
	for _, s := range steps {
		p.Steps = append(p.Steps, fhirdefs.PathStep{Name: s})
	}
	return p
}

func mDef(code, typ string, paths ...fhirdefs.SearchPath) *fhirdefs.SearchParam {
	return &fhirdefs.SearchParam{Code: code, Type: typ, Paths: paths}
}

var (
	defCategory   = mDef("category", "token", mPath("CodeableConcept", "category"))
	defIdentifier = mDef("identifier", "token", mPath("Identifier", "identifier"))
	defTelecom    = mDef("telecom", "token", mPath("ContactPoint", "telecom"))
	defGender     = mDef("gender", "token", mPath("code", "gender"))
	defActive     = mDef("active", "token", mPath("boolean", "active"))
	defID         = mDef("_id", "token", mPath("id", "id"))
	defTag        = mDef("_tag", "token", mPath("Coding", "meta", "tag"))
	defDate       = mDef("date", "date",
		mPath("dateTime", "effectiveDateTime"),
		mPath("Period", "effectivePeriod"),
		mPath("Timing", "effectiveTiming"),
		mPath("instant", "effectiveInstant"))
	defBirthdate = mDef("birthdate", "date", mPath("date", "birthDate"))
	defSubject   = mDef("subject", "reference", mPath("Reference", "subject"))
	defPatient   = mDef("patient", "reference", fhirdefs.SearchPath{
		Type: "Reference", Steps: []fhirdefs.PathStep{{Name: "subject"}}, Targets: []string{"Patient"},
	})
	defInstantiates = mDef("instantiates-canonical", "reference", mPath("canonical", "instantiatesCanonical"))
	defName         = mDef("name", "string", mPath("HumanName", "name"))
	defAddress      = mDef("address", "string", mPath("Address", "address"))
	defFamily       = mDef("family", "string", mPath("string", "name", "family"))
	defProfile      = mDef("_profile", "uri", mPath("canonical", "meta", "profile"))
)

// tokV is a token value as written: code, system|code, |code, system|.
func tokV(s string) Value {
	sys, code, ok := strings.Cut(s, "|")
	if !ok {
		return Value{Raw: s, Code: s}
	}
	return Value{Raw: s, System: sys, Code: code, HasSystem: true}
}

// dtV is a date value with its prefix ("ge2020").
func dateV(s string) Value {
	v := Value{Raw: s, Prefix: "eq"}
	if len(s) > 2 && s[0] >= 'a' && s[0] <= 'z' {
		v.Prefix, s = s[:2], s[2:]
	}
	lo, hi, ok := fhir.DateRange(s)
	if !ok {
		panic("bad test date " + s)
	}
	v.Lo, v.Hi = lo, hi
	return v
}

// refV is a reference value: id, Type/id or URL.
func refV(s string) Value {
	v := Value{Raw: s}
	switch {
	case strings.Contains(s, "://"):
		v.URL = s
		if t, id, ok := fhir.ParseReference([]byte(s)); ok {
			v.RefType, v.RefID = string(t), string(id)
		}
	case strings.Contains(s, "/"):
		v.RefType, v.RefID, _ = strings.Cut(s, "/")
	default:
		v.RefID = s
	}
	return v
}

// textV is a string or uri value (folded unless exact).
func textV(s string, fold bool) Value {
	if fold {
		return Value{Raw: s, Text: Fold(s)}
	}
	return Value{Raw: s, Text: s}
}

func mParam(d *fhirdefs.SearchParam, modifier string, vals ...Value) Param {
	name := d.Code
	if modifier != "" {
		name += ":" + modifier
	}
	return Param{Name: name, Def: d, Modifier: modifier, Values: vals}
}

func missingP(d *fhirdefs.SearchParam, m bool) Param {
	return Param{Name: d.Code + ":missing", Def: d, Modifier: "missing", Missing: m}
}

type matchCase struct {
	name string
	p    Param
	body string
	want bool
}

func runMatch(t *testing.T, cases []matchCase) {
	t.Helper()
	for _, tc := range cases {
		q := Query{Type: "X", Params: []Param{tc.p}}
		got, err := q.Match([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %s on %s: %v", tc.name, tc.p.Name, tc.body, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: %s %v on %s = %v, want %v", tc.name, tc.p.Name, tc.p.Values, tc.body, got, tc.want)
		}
	}
}

const (
	obsLab = `{"resourceType":"Observation","id":"o1","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"subject":{"reference":"Patient/p1"}}`
	obsTwo = `{"resourceType":"Observation","id":"o2","category":[{"text":"no codings"},{"coding":[{"code":"vital-signs"},{"system":"s","code":"exam"}]}]}`
)

func TestMatchToken(t *testing.T) {
	const lab = "http://terminology.hl7.org/CodeSystem/observation-category"
	runMatch(t, []matchCase{
		// CodeableConcept: any coding.
		{"cc code", mParam(defCategory, "", tokV("laboratory")), obsLab, true},
		{"cc other code", mParam(defCategory, "", tokV("vital-signs")), obsLab, false},
		{"cc codes are case-sensitive", mParam(defCategory, "", tokV("Laboratory")), obsLab, false},
		{"cc system|code", mParam(defCategory, "", tokV(lab+"|laboratory")), obsLab, true},
		{"cc wrong system", mParam(defCategory, "", tokV("http://other|laboratory")), obsLab, false},
		{"cc |code with system", mParam(defCategory, "", tokV("|laboratory")), obsLab, false},
		{"cc |code without system", mParam(defCategory, "", tokV("|vital-signs")), obsTwo, true},
		{"cc system|", mParam(defCategory, "", tokV(lab+"|")), obsLab, true},
		{"cc other system|", mParam(defCategory, "", tokV("s|")), obsLab, false},
		{"cc second concept, second coding", mParam(defCategory, "", tokV("s|exam")), obsTwo, true},
		{"cc OR of values", mParam(defCategory, "", tokV("x"), tokV("exam")), obsTwo, true},
		{"cc OR none", mParam(defCategory, "", tokV("x"), tokV("y")), obsTwo, false},
		{"cc single object not array", mParam(defCategory, "", tokV("a")), `{"category":{"coding":{"code":"a"}}}`, true},
		{"cc no element", mParam(defCategory, "", tokV("laboratory")), `{"id":"x"}`, false},
		{"cc code in another element", mParam(defCategory, "", tokV("laboratory")), `{"code":{"coding":[{"code":"laboratory"}]}}`, false},
		// :not
		{":not matching", mParam(defCategory, "not", tokV("laboratory")), obsLab, false},
		{":not other", mParam(defCategory, "not", tokV("vital-signs")), obsLab, true},
		{":not without the element", mParam(defCategory, "not", tokV("laboratory")), `{"id":"x"}`, true},
		{":not any of values", mParam(defCategory, "not", tokV("x"), tokV("laboratory")), obsLab, false},
		// :missing
		{":missing=true with element", missingP(defCategory, true), obsLab, false},
		{":missing=true without", missingP(defCategory, true), `{"id":"x"}`, true},
		{":missing=false with element", missingP(defCategory, false), obsLab, true},
		{":missing=false without", missingP(defCategory, false), `{"id":"x"}`, false},
		{":missing null is missing", missingP(defCategory, true), `{"category":null}`, true},
		// Identifier: system and value.
		{"id value", mParam(defIdentifier, "", tokV("123")), `{"identifier":[{"system":"urn:a","value":"123"}]}`, true},
		{"id system|value", mParam(defIdentifier, "", tokV("urn:a|123")), `{"identifier":[{"system":"urn:a","value":"123"}]}`, true},
		{"id wrong system", mParam(defIdentifier, "", tokV("urn:b|123")), `{"identifier":[{"system":"urn:a","value":"123"}]}`, false},
		{"id system|", mParam(defIdentifier, "", tokV("urn:a|")), `{"identifier":[{"system":"urn:a","value":"123"}]}`, true},
		{"id |value no system", mParam(defIdentifier, "", tokV("|123")), `{"identifier":[{"value":"123"}]}`, true},
		{"id code member is not the value", mParam(defIdentifier, "", tokV("123")), `{"identifier":[{"code":"123"}]}`, false},
		// ContactPoint: value, no system of its own.
		{"cp value", mParam(defTelecom, "", tokV("555-1234")), `{"telecom":[{"system":"phone","value":"555-1234"}]}`, true},
		{"cp other", mParam(defTelecom, "", tokV("555")), `{"telecom":[{"system":"phone","value":"555-1234"}]}`, false},
		{"cp |value", mParam(defTelecom, "", tokV("|555-1234")), `{"telecom":[{"system":"phone","value":"555-1234"}]}`, true},
		// code primitive.
		{"code", mParam(defGender, "", tokV("female")), `{"gender":"female"}`, true},
		{"code other", mParam(defGender, "", tokV("male")), `{"gender":"female"}`, false},
		{"code prefix is no match", mParam(defGender, "", tokV("fem")), `{"gender":"female"}`, false},
		{"code |code", mParam(defGender, "", tokV("|female")), `{"gender":"female"}`, true},
		{"code system|code", mParam(defGender, "", tokV("http://hl7.org/fhir/administrative-gender|female")), `{"gender":"female"}`, true},
		{"code system|code other", mParam(defGender, "", tokV("http://hl7.org/fhir/administrative-gender|male")), `{"gender":"female"}`, false},
		{"code system|", mParam(defGender, "", tokV("http://hl7.org/fhir/administrative-gender|")), `{"gender":"female"}`, true},
		{"code system| without element", mParam(defGender, "", tokV("http://hl7.org/fhir/administrative-gender|")), `{"id":"x"}`, false},
		{"code :not", mParam(defGender, "not", tokV("male")), `{"gender":"female"}`, true},
		{"id primitive", mParam(defID, "", tokV("o1")), obsLab, true},
		{"id primitive other", mParam(defID, "", tokV("o2")), obsLab, false},
		// boolean.
		{"bool true", mParam(defActive, "", tokV("true")), `{"active":true}`, true},
		{"bool false", mParam(defActive, "", tokV("false")), `{"active":true}`, false},
		{"bool false matches false", mParam(defActive, "", tokV("false")), `{"active":false}`, true},
		{"bool as a string is the wrong shape", mParam(defActive, "", tokV("true")), `{"active":"true"}`, false},
		{"code as a boolean is the wrong shape", mParam(defGender, "", tokV("true")), `{"gender":true}`, false},
		{"integer token", mParam(mDef("n", "token", mPath("positiveInt", "n")), "", tokV("2")), `{"n":2}`, true},
		{"integer token other", mParam(mDef("n", "token", mPath("positiveInt", "n")), "", tokV("2")), `{"n":12}`, false},
		{"bool :not without element", mParam(defActive, "not", tokV("true")), `{"id":"x"}`, true},
		// Coding (meta.tag).
		{"tag", mParam(defTag, "", tokV("urn:t|a")), `{"meta":{"tag":[{"system":"urn:t","code":"a"}]}}`, true},
		{"tag wrong code", mParam(defTag, "", tokV("urn:t|b")), `{"meta":{"tag":[{"system":"urn:t","code":"a"}]}}`, false},
		// Wrong shapes never match and never error.
		{"cc is a string", mParam(defCategory, "", tokV("a")), `{"category":"a"}`, false},
		{"cc coding is a number", mParam(defCategory, "", tokV("1")), `{"category":{"coding":1}}`, false},
		{"coding code is a number", mParam(defCategory, "", tokV("1")), `{"category":{"coding":[{"code":1}]}}`, false},
		{"code is an object", mParam(defGender, "", tokV("a")), `{"gender":{"a":"a"}}`, false},
		{"code is a number", mParam(defGender, "", tokV("1")), `{"gender":1}`, false},
	})
}

func TestMatchDate(t *testing.T) {
	dtBody := func(s string) string { return `{"effectiveDateTime":"` + s + `"}` }
	period := func(start, end string) string {
		var parts []string
		if start != "" {
			parts = append(parts, `"start":"`+start+`"`)
		}
		if end != "" {
			parts = append(parts, `"end":"`+end+`"`)
		}
		return `{"effectivePeriod":{` + strings.Join(parts, ",") + `}}`
	}
	d := func(v string) Param { return mParam(defDate, "", dateV(v)) }
	runMatch(t, []matchCase{
		// eq: the target within the search range, at every precision.
		{"eq year", d("2020"), dtBody("2020-06-01T10:00:00Z"), true},
		{"eq year other", d("2021"), dtBody("2020-06-01T10:00:00Z"), false},
		{"eq month", d("2020-06"), dtBody("2020-06-30T23:59:59Z"), true},
		{"eq month next", d("2020-06"), dtBody("2020-07-01T00:00:00Z"), false},
		{"eq day", d("2020-06-01"), dtBody("2020-06-01"), true},
		{"eq day, target a month", d("2020-06-01"), dtBody("2020-06"), false},
		{"eq second", d("2020-06-01T10:00:00Z"), dtBody("2020-06-01T10:00:00Z"), true},
		{"eq second with offset", d("2020-06-01T10:00:00Z"), dtBody("2020-06-01T05:00:00-05:00"), true},
		{"eq fraction within second", d("2020-06-01T10:00:00Z"), dtBody("2020-06-01T10:00:00.123Z"), true},
		{"eq second, target a fraction outside", d("2020-06-01T10:00:00Z"), dtBody("2020-06-01T10:00:01.000Z"), false},
		{"eq target a year, search a day", d("2020-06-01"), dtBody("2020"), false},
		// ne
		{"ne within", d("ne2020"), dtBody("2020-06-01"), false},
		{"ne outside", d("ne2020"), dtBody("2021-06-01"), true},
		{"ne overlapping", d("ne2020-06-01"), dtBody("2020-06"), true},
		// gt / lt: the target reaches beyond.
		{"gt after", d("gt2020"), dtBody("2021-01-01"), true},
		{"gt within", d("gt2020"), dtBody("2020-12-31"), false},
		{"gt before", d("gt2020"), dtBody("2019-12-31"), false},
		{"gt target straddles", d("gt2020-06-01"), dtBody("2020-06"), true},
		{"lt before", d("lt2020"), dtBody("2019-12-31T23:59:59Z"), true},
		{"lt within", d("lt2020"), dtBody("2020-01-01"), false},
		{"lt target straddles", d("lt2020-06-15"), dtBody("2020-06"), true},
		// ge / le: beyond or within.
		{"ge within", d("ge2020-01-01"), dtBody("2020-01-01T00:00:00Z"), true},
		{"ge after", d("ge2020-01-01"), dtBody("2024-01-01"), true},
		{"ge before", d("ge2020-01-01"), dtBody("2019-12-31T23:59:59Z"), false},
		{"ge target straddles start only", d("ge2020-01-01"), period("2019-12-31", "2020-01-01"), false},
		{"le within", d("le2020-01-01"), dtBody("2020-01-01T23:59:59Z"), true},
		{"le before", d("le2020-01-01"), dtBody("1999"), true},
		{"le after", d("le2020-01-01"), dtBody("2020-01-02"), false},
		// sa / eb: wholly after / before.
		{"sa after", d("sa2020"), dtBody("2021-01-01"), true},
		{"sa straddles", d("sa2020-06-01"), dtBody("2020-06"), false},
		{"sa within", d("sa2020"), dtBody("2020-05-05"), false},
		{"eb before", d("eb2020"), dtBody("2019-12-31"), true},
		{"eb straddles", d("eb2020-06-15"), dtBody("2020-06"), false},
		{"eb after", d("eb2020"), dtBody("2021"), false},
		// ap: overlap after widening (by at least the value's own width).
		{"ap same day", d("ap2020-03-01"), dtBody("2020-03-01T12:00:00Z"), true},
		{"ap next day within width", d("ap2020-03-01"), dtBody("2020-03-02T12:00:00Z"), true},
		{"ap years off", d("ap2020-03-01"), dtBody("2010-03-02"), false},
		{"ap far past widened", d("ap1900"), dtBody("1905-06-01"), true}, // 10% of >120 years
		{"ap far past, too far", d("ap1900"), dtBody("1980-06-01"), false},
		// Period: open ends.
		{"period within", d("2020"), period("2020-02-01", "2020-03-01"), true},
		{"period equal bounds", d("2020-02-01"), period("2020-02-01", "2020-02-01"), true},
		{"period equal bounds, instants", d("2020-02-01T10:00:00Z"), period("2020-02-01T10:00:00Z", "2020-02-01T10:00:00Z"), true},
		{"period partly outside", d("2020"), period("2019-12-01", "2020-03-01"), false},
		{"period open end: eq never", d("2020"), period("2020-02-01", ""), false},
		{"period open end: gt", d("gt2020"), period("2020-02-01", ""), true},
		{"period open end: ge", d("ge2030"), period("2020-02-01", ""), true},
		{"period open end: lt", d("lt2020"), period("2020-02-01", ""), false},
		{"period open end: sa", d("sa2019"), period("2020-02-01", ""), true},
		{"period open end: eb never", d("eb2100"), period("2020-02-01", ""), false},
		{"period open start: lt", d("lt2000"), period("", "2020-01-01"), true},
		{"period open start: le", d("le2020"), period("", "2020-01-01"), true},
		{"period open start: gt", d("gt2020"), period("", "2020-01-01"), false},
		{"period open start: eb", d("eb2021"), period("", "2020-01-01"), true},
		{"period open start: ne", d("ne2020"), period("", "2020-01-01"), true},
		{"period open start: ap", d("ap2019-12-31"), period("", "2020-01-01"), true},
		{"period empty is no value", d("ne2020"), `{"effectivePeriod":{}}`, false},
		{"period bad start is no value", d("ne2020"), period("junk", "2020-01-01"), false},
		// Timing: the outer limits of its events.
		{"timing within", d("2020"), `{"effectiveTiming":{"event":["2020-02-01","2020-11-01"]}}`, true},
		{"timing spills", d("2020"), `{"effectiveTiming":{"event":["2020-02-01","2021-01-01"]}}`, false},
		{"timing gt by last event", d("gt2020"), `{"effectiveTiming":{"event":["2019-02-01","2021-01-01"]}}`, true},
		{"timing lt by first event", d("lt2020"), `{"effectiveTiming":{"event":["2021-02-01","2019-01-01"]}}`, true},
		{"timing no events", d("ne2020"), `{"effectiveTiming":{"repeat":{"count":1}}}`, false},
		// and of its repeat.boundsPeriod (the schedule is ignored).
		{"timing bounds within", d("2020"), `{"effectiveTiming":{"repeat":{"boundsPeriod":{"start":"2020-02-01","end":"2020-06-30"},"frequency":1,"period":2,"periodUnit":"d"}}}`, true},
		{"timing bounds reach after", d("gt2020"), `{"effectiveTiming":{"repeat":{"boundsPeriod":{"start":"2020-02-01"}}}}`, true},
		{"timing bounds before", d("ge2021"), `{"effectiveTiming":{"repeat":{"boundsPeriod":{"start":"2019-02-01","end":"2020-06-30"}}}}`, false},
		{"timing events and bounds", d("lt2019"), `{"effectiveTiming":{"event":["2020-02-01"],"repeat":{"boundsPeriod":{"start":"2018-12-01","end":"2020-06-30"}}}}`, true},
		{"timing bounds spill the events' year", d("2020"), `{"effectiveTiming":{"event":["2020-02-01"],"repeat":{"boundsPeriod":{"end":"2020-06-30"}}}}`, false},
		// instant, date, and :missing.
		{"instant", d("2020-06-01"), `{"effectiveInstant":"2020-06-01T10:00:00.000+02:00"}`, true},
		{"date", mParam(defBirthdate, "", dateV("1970")), `{"birthDate":"1970-05-06"}`, true},
		{"date partial target", mParam(defBirthdate, "", dateV("le1970-05-06")), `{"birthDate":"1970-05"}`, true},
		{"date partial target gt", mParam(defBirthdate, "", dateV("gt1970-05-06")), `{"birthDate":"1970-05"}`, true},
		{"date OR", mParam(defBirthdate, "", dateV("1960"), dateV("1970")), `{"birthDate":"1970-05-06"}`, true},
		{"missing date true", missingP(defDate, true), `{"id":"a"}`, true},
		{"missing date false", missingP(defDate, false), dtBody("2020"), true},
		// Wrong shapes.
		{"not a date", d("ne2020"), dtBody("yesterday"), false},
		{"a number", d("ne2020"), `{"effectiveDateTime":2020}`, false},
		{"time without zone", d("ne2020"), dtBody("2021-01-01T10:00:00"), false},
		{"period is a string", d("ne2020"), `{"effectivePeriod":"2021"}`, false},
	})
}

func TestMatchReference(t *testing.T) {
	sub := func(r string) string { return `{"subject":{"reference":"` + r + `"}}` }
	runMatch(t, []matchCase{
		{"id", mParam(defSubject, "", refV("p1")), sub("Patient/p1"), true},
		{"id other", mParam(defSubject, "", refV("p2")), sub("Patient/p1"), false},
		{"id of any type", mParam(defSubject, "", refV("g1")), sub("Group/g1"), true},
		{"id with path targets", mParam(defPatient, "", refV("g1")), sub("Group/g1"), false},
		{"id with path targets ok", mParam(defPatient, "", refV("p1")), sub("Patient/p1"), true},
		{"Type/id", mParam(defSubject, "", refV("Patient/p1")), sub("Patient/p1"), true},
		{"Type/id other type", mParam(defSubject, "", refV("Group/p1")), sub("Patient/p1"), false},
		{"Type/id vs versioned", mParam(defSubject, "", refV("Patient/p1")), sub("Patient/p1/_history/3"), true},
		{"Type/id vs absolute", mParam(defSubject, "", refV("Patient/p1")), sub("https://ex.org/fhir/Patient/p1"), true},
		{"id vs absolute", mParam(defSubject, "", refV("p1")), sub("https://ex.org/fhir/Patient/p1"), true},
		{"URL same string", mParam(defSubject, "", refV("https://ex.org/fhir/Patient/p1")), sub("https://ex.org/fhir/Patient/p1"), true},
		{"URL same Type/id", mParam(defSubject, "", refV("https://ex.org/fhir/Patient/p1")), sub("Patient/p1"), true},
		{"URL other id", mParam(defSubject, "", refV("https://ex.org/fhir/Patient/p2")), sub("Patient/p1"), false},
		{"URL no Type/id, same string", mParam(defSubject, "", refV("https://ex.org/x")), sub("https://ex.org/x"), true},
		{"URL no Type/id, other", mParam(defSubject, "", refV("https://ex.org/x")), sub("https://ex.org/y"), false},
		{"id prefix is no match", mParam(defSubject, "", refV("p")), sub("Patient/p1"), false},
		{"contained is no match", mParam(defSubject, "", refV("p1")), sub("#p1"), false},
		{"urn is no match by id", mParam(defSubject, "", refV("p1")), sub("urn:uuid:p1"), false},
		{"reference without reference", mParam(defSubject, "", refV("p1")), `{"subject":{"display":"p1"}}`, false},
		{"reference is a string", mParam(defSubject, "", refV("p1")), `{"subject":"Patient/p1"}`, false},
		{"OR", mParam(defSubject, "", refV("x"), refV("Patient/p1")), sub("Patient/p1"), true},
		{"missing true", missingP(defSubject, true), `{"id":"a"}`, true},
		{"missing false", missingP(defSubject, false), sub("Patient/p1"), true},
		{"missing with targets: other type is missing", missingP(defPatient, true), sub("Group/g1"), true},
		// canonical: strings, a version ignored unless searched for.
		{"canonical", mParam(defInstantiates, "", refV("http://ex.org/Questionnaire/q")), `{"instantiatesCanonical":["http://ex.org/Questionnaire/q"]}`, true},
		{"canonical versioned", mParam(defInstantiates, "", refV("http://ex.org/Questionnaire/q")), `{"instantiatesCanonical":["http://ex.org/Questionnaire/q|2.0"]}`, true},
		{"canonical version searched", mParam(defInstantiates, "", Value{Raw: "http://ex.org/Questionnaire/q|1.0", URL: "http://ex.org/Questionnaire/q|1.0"}), `{"instantiatesCanonical":["http://ex.org/Questionnaire/q|2.0"]}`, false},
		{"canonical other", mParam(defInstantiates, "", refV("http://ex.org/Questionnaire/r")), `{"instantiatesCanonical":["http://ex.org/Questionnaire/q"]}`, false},
	})
}

func TestMatchString(t *testing.T) {
	pat := `{"name":[{"family":"Müller","given":["Hans","Peter"],"prefix":["Dr."]}],"address":[{"line":["12 Main St"],"city":"São Paulo","postalCode":"01000-000","country":"BR"}]}`
	runMatch(t, []matchCase{
		{"family prefix", mParam(defName, "", textV("mul", true)), pat, true},
		{"family accent-insensitive", mParam(defName, "", textV("MÜLLER", true)), pat, true},
		{"given second", mParam(defName, "", textV("pe", true)), pat, true},
		{"prefix field", mParam(defName, "", textV("dr", true)), pat, true},
		{"not a prefix", mParam(defName, "", textV("ller", true)), pat, false},
		{"contains", mParam(defName, "contains", textV("ller", true)), pat, true},
		{"contains none", mParam(defName, "contains", textV("xyz", true)), pat, false},
		{"exact", mParam(defName, "exact", textV("Müller", false)), pat, true},
		{"exact case", mParam(defName, "exact", textV("müller", false)), pat, false},
		{"exact is not prefix", mParam(defName, "exact", textV("Mü", false)), pat, false},
		{"fields one at a time", mParam(defName, "", textV("hans peter", true)), pat, false},
		{"OR", mParam(defName, "", textV("x", true), textV("hans", true)), pat, true},
		{"address city", mParam(defAddress, "", textV("sao", true)), pat, true},
		{"address line", mParam(defAddress, "", textV("12 main", true)), pat, true},
		{"address postalCode", mParam(defAddress, "", textV("01000", true)), pat, true},
		{"address other", mParam(defAddress, "", textV("rio", true)), pat, false},
		{"address use is not searched", mParam(defAddress, "", textV("home", true)), `{"address":[{"use":"home","city":"X"}]}`, false},
		{"HumanName text", mParam(defName, "", textV("john", true)), `{"name":[{"text":"John Smith"}]}`, true},
		{"string path", mParam(defFamily, "", textV("mü", true)), pat, true},
		{"string path exact", mParam(defFamily, "exact", textV("Müller", false)), pat, true},
		{"missing", missingP(defName, true), `{"id":"a"}`, true},
		{"long value folds", mParam(defFamily, "contains", textV("end", true)), `{"name":{"family":"` + strings.Repeat("Ä", 300) + `END"}}`, true},
		{"wrong shape", mParam(defName, "", textV("a", true)), `{"name":[{"family":1},"a"]}`, false},
	})
}

func TestMatchURI(t *testing.T) {
	body := `{"meta":{"profile":["http://ex.org/StructureDefinition/a","http://ex.org/StructureDefinition/b"]}}`
	runMatch(t, []matchCase{
		{"uri", mParam(defProfile, "", textV("http://ex.org/StructureDefinition/b", false)), body, true},
		{"uri prefix is no match", mParam(defProfile, "", textV("http://ex.org/StructureDefinition", false)), body, false},
		{"uri case", mParam(defProfile, "", textV("http://ex.org/structuredefinition/b", false)), body, false},
		{"uri missing", missingP(defProfile, true), `{"meta":{}}`, true},
	})
}

// Strings in a body are read with their escapes decoded, and the quick
// reject does not skip a body whose bytes hold the needle only escaped.
func TestMatchEscapes(t *testing.T) {
	runMatch(t, []matchCase{
		{"token escaped", mParam(defCategory, "", tokV("laboratory")), `{"category":[{"coding":[{"code":"l\u0061boratory"}]}]}`, true},
		{"token escaped system", mParam(defCategory, "", tokV("http://x|a")), `{"category":[{"coding":[{"system":"http:\/\/x","code":"a"}]}]}`, true},
		{"token escaped no match", mParam(defCategory, "", tokV("lab")), `{"category":[{"coding":[{"code":"l\u0061boratory"}]}]}`, false},
		{"token quote in code", mParam(defGender, "", tokV(`a"b`)), `{"gender":"a\"b"}`, true},
		{"date escaped", mParam(defDate, "", dateV("2020")), `{"effectiveDateTime":"2020\u002d01-01"}`, true},
		{"reference escaped", mParam(defSubject, "", refV("Patient/p1")), `{"subject":{"reference":"Patient\/p1"}}`, true},
		{"string escaped", mParam(defName, "", textV("mül", true)), `{"name":[{"family":"M\u00fcller"}]}`, true},
		{"string exact escaped", mParam(defName, "exact", textV("Müller", false)), `{"name":[{"family":"M\u00fcller"}]}`, true},
		{"uri escaped", mParam(defProfile, "", textV("http://a/b", false)), `{"meta":{"profile":["http:\/\/a\/b"]}}`, true},
		{"escaped member name", mParam(defGender, "", tokV("female")), `{"g\u0065nder":"female"}`, true},
	})
}

func TestMatchAND(t *testing.T) {
	q := Query{Type: "Observation", Params: []Param{
		mParam(defCategory, "", tokV("laboratory")),
		mParam(defSubject, "", refV("Patient/p1")),
	}}
	for _, tc := range []struct {
		body string
		want bool
	}{
		{obsLab, true},
		{strings.Replace(obsLab, "Patient/p1", "Patient/p2", 1), false},
		{strings.Replace(obsLab, "laboratory", "exam", 1), false},
	} {
		got, err := q.Match([]byte(tc.body))
		if err != nil || got != tc.want {
			t.Errorf("Match(%s) = %v, %v; want %v", tc.body, got, err, tc.want)
		}
	}
	// No params: everything matches.
	if ok, err := (&Query{Type: "Observation"}).Match([]byte(obsLab)); !ok || err != nil {
		t.Errorf("empty query: %v, %v", ok, err)
	}
}

func TestMatchErrors(t *testing.T) {
	q := Query{Type: "Observation", Params: []Param{mParam(defCategory, "", tokV("laboratory"))}}
	for _, body := range []string{``, `[]`, `"x"`, `null`, `{"category":[{"coding":[{"code":"laboratory"}]}]`, `{"category":"laboratory",}`} {
		ok, err := q.Match([]byte(body))
		if ok || !errors.Is(err, jsonobj.ErrSyntax) {
			t.Errorf("Match(%q) = %v, %v; want jsonobj.ErrSyntax", body, ok, err)
		}
	}
	// A parameter Match does not evaluate is an error naming it.
	bad := Query{Type: "Observation", Params: []Param{{Name: "value-quantity", Def: mDef("value-quantity", "quantity", mPath("Quantity", "valueQuantity"))}}}
	if _, err := bad.Match([]byte(obsLab)); err == nil || !strings.Contains(err.Error(), "value-quantity") {
		t.Errorf("quantity parameter: err = %v", err)
	}
}

// The common cases allocate nothing per resource (with the plan
// ParseQuery makes).
func TestMatchNoAlloc(t *testing.T) {
	for _, tc := range []struct {
		q    Query
		body string
	}{
		{Query{Params: []Param{mParam(defCategory, "", tokV("http://terminology.hl7.org/CodeSystem/observation-category|laboratory"))}}, obsLab},
		{Query{Params: []Param{mParam(defCategory, "", tokV("vital-signs"))}}, obsLab},
		{Query{Params: []Param{mParam(defDate, "", dateV("ge2020-01-01"))}}, `{"effectiveDateTime":"2021-03-04T05:06:07-05:00"}`},
		{Query{Params: []Param{mParam(defDate, "", dateV("ap2020-01-01"))}}, `{"effectivePeriod":{"start":"2021-03-04T05:06:07-05:00"}}`},
		{Query{Params: []Param{mParam(defSubject, "", refV("Patient/p1"))}}, obsLab},
		{Query{Params: []Param{mParam(defName, "", textV("mü", true))}}, `{"name":[{"family":"Müller","given":["Hans"]}]}`},
		{Query{Params: []Param{mParam(defName, "contains", textV("some much longer text than thirty-two bytes", true))}}, `{"name":[{"family":"Müller","given":["Hans"]}]}`},
		{Query{Params: []Param{mParam(defGender, "not", tokV("male"))}}, `{"gender":"female"}`},
		{Query{Params: []Param{missingP(defGender, true)}}, `{"gender":"female"}`},
	} {
		body := []byte(tc.body)
		tc.q.plan = newFastPlan(&tc.q) // as ParseQuery does
		if n := testing.AllocsPerRun(100, func() { tc.q.Match(body) }); n != 0 {
			t.Errorf("%s on %s: %v allocations", tc.q.Params[0].Name, tc.body, n)
		}
	}
}

// index, the quick reject's search, agrees with bytes.Index.
func TestIndex(t *testing.T) {
	texts := []string{
		``, `"`, `""`, `{"a":"b"}`, obsLab, obsTwo,
		`{"effectiveDateTime":"2020","effectivePeriod":{}}`,
		`xx"name"`, `"name"xx`, `"name`, `name"`, `nam"name"`, `"nname"`, `"Name"`,
		`laboratorylaboratory`, `laborator`, `ZZZZZZZZZZ`,
	}
	needles := []string{"a", "b", "name", "laboratory", "effectivePeriod", "effectiveDateTime", "Z", "ZZZ", "p1", "coding", "\"", "q"}
	for _, txt := range texts {
		for _, n := range needles {
			b := []byte(txt)
			if got, want := index(b, n, false), bytes.Index(b, []byte(n)); got != want {
				t.Errorf("index(%q, %q) = %d, want %d", txt, n, got, want)
			}
			if got, want := index(b, n, true), bytes.Index(b, []byte(`"`+n+`"`)); (got >= 0) != (want >= 0) || got >= 0 && got != want+1 {
				t.Errorf("quoted index(%q, %q) = %d, want %d", txt, n, got, want+1)
			}
		}
	}
}

// Match never panics, errs only on a body that is not a JSON object, and
// on valid JSON answers with the fast walk as with the validating one.
func FuzzMatch(f *testing.F) {
	f.Add([]byte(obsLab))
	f.Add([]byte(obsTwo))
	f.Add([]byte(`{"effectivePeriod":{"start":"2020-01-01","end":"2020"},"effectiveTiming":{"event":["2020","x",1]}}`))
	f.Add([]byte(`{"name":[{"family":"M\u00fcller","given":["a",1,null]}],"address":{"line":"x"},"gender":"f\"","active":true}`))
	f.Add([]byte(`{"subject":{"reference":"http://x/Patient/p1/_history/2"},"instantiatesCanonical":"a|b","meta":{"profile":["p"],"tag":{"code":"a"}}}`))
	// Names of the paths nested, written as values, and duplicated.
	f.Add([]byte(`{"category":[{"coding":[{"code":"x"}]}],"contained":[{"category":[{"coding":[{"code":"laboratory"}]}],"effectiveDateTime":"2020"}],"id":"category"}`))
	f.Add([]byte(`{"effectiveDateTime":"1990","category":{"text":"effectiveDateTime"},"meta":{"tag":[{"code":"a"}]},"effectiveDateTime":"2020","x":{"effectiveDateTime":"1990"}}`))
	queries := []Query{
		{Params: []Param{mParam(defCategory, "", tokV("laboratory"), tokV("s|"), tokV("|x"))}},
		{Params: []Param{mParam(defCategory, "not", tokV("a")), missingP(defIdentifier, false)}},
		{Params: []Param{mParam(defTelecom, "", tokV("1")), mParam(defActive, "", tokV("true"))}},
		{Params: []Param{mParam(defGender, "", tokV("f\""))}},
		{Params: []Param{mParam(defDate, "", dateV("ap2020"), dateV("ne2020-01"), dateV("sa1990"))}},
		{Params: []Param{mParam(defBirthdate, "", dateV("le2020"))}},
		{Params: []Param{mParam(defSubject, "", refV("p1"), refV("Patient/p1"), refV("http://x/Patient/p1"))}},
		{Params: []Param{mParam(defPatient, "", refV("p1")), mParam(defInstantiates, "", refV("a"))}},
		{Params: []Param{mParam(defName, "", textV("mü", true)), mParam(defAddress, "contains", textV("x", true))}},
		{Params: []Param{mParam(defFamily, "exact", textV("Müller", false)), mParam(defProfile, "", textV("p", false))}},
		{Params: []Param{mParam(defTag, "", tokV("a"))}},
	}
	for i := range queries {
		queries[i].plan = newFastPlan(&queries[i])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		valid := len(body) > 0 && body[0] == '{' && json.Valid(body)
		// On valid JSON the fast walk (a body without backslash)
		// answers as the validating one, which reads the same object
		// with one more member, whose name is escaped.
		var escaped []byte
		if valid && bytes.IndexByte(body, '\\') < 0 {
			escaped = append([]byte(`{"\u0061":0,`), body[1:]...)
			if !json.Valid(escaped) { // body is {}
				escaped = append([]byte(`{"\u0061":0`), body[1:]...)
			}
		}
		for _, q := range queries {
			got, err := q.Match(body)
			if err != nil && valid {
				t.Fatalf("%v on the valid %q: %v", q.Params[0].Name, body, err)
			}
			if escaped != nil {
				if want, err := q.Match(escaped); err != nil || got != want {
					t.Fatalf("%v on %q: fast %v; validating %v, %v", q.Params[0].Name, body, got, want, err)
				}
			}
		}
	})
}
