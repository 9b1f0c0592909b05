package search

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// sampleObservations returns the Observations of the repository's
// Synthea sample.
func sampleObservations(tb testing.TB) [][]byte {
	tb.Helper()
	obs := matchSampleByType(tb)["Observation"]
	if len(obs) == 0 {
		tb.Fatal("no Observation in the sample")
	}
	return obs
}

// The search parameters of the benchmark, as the R4 definitions have them
// for Observation.
var (
	benchCategory = mDef("category", "token", mPath("CodeableConcept", "category"))
	benchDate     = mDef("date", "date",
		mPath("dateTime", "effectiveDateTime"),
		mPath("Period", "effectivePeriod"),
		mPath("Timing", "effectiveTiming"),
		mPath("instant", "effectiveInstant"))
)

// BenchmarkMatch reports the cost of evaluating a query on each of the
// sample's Observations (ns/resource) and the share that matched.
func BenchmarkMatch(b *testing.B) {
	obs := sampleObservations(b)
	for _, bc := range []struct {
		name string
		q    Query
	}{
		{"category=laboratory", Query{Type: "Observation", Params: []Param{mParam(benchCategory, "", tokV("laboratory"))}}},
		{"category=system|laboratory", Query{Type: "Observation", Params: []Param{mParam(benchCategory, "", tokV("http://terminology.hl7.org/CodeSystem/observation-category|laboratory"))}}},
		{"category=imaging", Query{Type: "Observation", Params: []Param{mParam(benchCategory, "", tokV("imaging"))}}},
		{"date=ge2020-01-01", Query{Type: "Observation", Params: []Param{mParam(benchDate, "", dateV("ge2020-01-01"))}}},
	} {
		bc.q.plan = newFastPlan(&bc.q) // as ParseQuery does
		b.Run(bc.name, func(b *testing.B) {
			matched := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				matched = 0
				for _, body := range obs {
					ok, err := bc.q.Match(body)
					if err != nil {
						b.Fatal(err)
					}
					if ok {
						matched++
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(obs)), "ns/resource")
			b.ReportMetric(float64(matched)/float64(len(obs)), "matched")
		})
	}
}

// TestMatchSample checks Match on the sample against counts computed from
// the raw JSON independently: an Observation is laboratory when its text
// holds the laboratory coding, and dated 2020 or later when its
// effectiveDateTime's year is.
func TestMatchSample(t *testing.T) {
	obs := sampleObservations(t)
	lab := Query{Params: []Param{mParam(benchCategory, "", tokV("http://terminology.hl7.org/CodeSystem/observation-category|laboratory"))}}
	recent := Query{Params: []Param{mParam(benchDate, "", dateV("ge2020-01-01"))}}
	labCoding := []byte(`{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"`)
	var wantLab, gotLab, wantRecent, gotRecent int
	for _, body := range obs {
		if bytes.Contains(body, labCoding) {
			wantLab++
		}
		if i := bytes.Index(body, []byte(`"effectiveDateTime":"`)); i >= 0 {
			year := body[i+len(`"effectiveDateTime":"`):][:4]
			if string(year) >= "2020" {
				wantRecent++
			}
		}
		if ok, err := lab.Match(body); err != nil {
			t.Fatal(err)
		} else if ok {
			gotLab++
		}
		if ok, err := recent.Match(body); err != nil {
			t.Fatal(err)
		} else if ok {
			gotRecent++
		}
	}
	if gotLab != wantLab || wantLab == 0 {
		t.Errorf("category=laboratory: %d of %d match, want %d", gotLab, len(obs), wantLab)
	}
	if gotRecent != wantRecent || wantRecent == 0 {
		t.Errorf("date=ge2020-01-01: %d of %d match, want %d", gotRecent, len(obs), wantRecent)
	}
}

// The shortcuts a body without a backslash takes (the quick reject, the
// skip of paths whose first member is absent) change no answer: Match on
// each sample Observation agrees with Match on the same resource with an
// escape in a name that no path reads, which takes no shortcut.
func TestMatchShortcutsAgree(t *testing.T) {
	obs := sampleObservations(t)
	subject := mDef("subject", "reference", mPath("Reference", "subject"))
	code := mDef("code", "token", mPath("CodeableConcept", "code"))
	text := mDef("code-text", "string", mPath("string", "code", "text"))
	queries := []Query{
		{Params: []Param{mParam(benchCategory, "", tokV("laboratory"))}},
		{Params: []Param{mParam(benchCategory, "", tokV("vital-signs"), tokV("survey"))}},
		{Params: []Param{mParam(benchCategory, "", tokV("http://terminology.hl7.org/CodeSystem/observation-category|"))}},
		{Params: []Param{mParam(benchCategory, "not", tokV("laboratory"))}},
		{Params: []Param{missingP(benchCategory, true)}},
		{Params: []Param{mParam(code, "", tokV("http://loinc.org|8302-2"), tokV("6298-4"))}},
		{Params: []Param{mParam(benchDate, "", dateV("ge2020-01-01"))}},
		{Params: []Param{mParam(benchDate, "", dateV("lt2000"), dateV("2015"))}},
		{Params: []Param{mParam(subject, "", refV(subjectOf(obs[0])))}},
		{Params: []Param{mParam(text, "", textV("POTAS", true))}},
		{Params: []Param{mParam(text, "exact", textV("Potassium", false))}},
		{Params: []Param{mParam(text, "contains", textV("pressure", true))}},
	}
	matched := make([]int, len(queries))
	for _, body := range obs {
		escaped := bytes.Replace(body, []byte(`"resourceType"`), []byte(`"resourc\u0065Type"`), 1)
		for i, q := range queries {
			got, err1 := q.Match(body)
			want, err2 := q.Match(escaped)
			if err1 != nil || err2 != nil || got != want {
				t.Fatalf("query %d on %s: %v, %v; without shortcuts %v, %v", i, body, got, err1, want, err2)
			}
			if got {
				matched[i]++
			}
		}
	}
	t.Logf("matches per query of %d: %v", len(obs), matched)
}

// subjectOf returns the subject reference of a sample resource.
func subjectOf(body []byte) string {
	_, rest, _ := bytes.Cut(body, []byte(`"subject":{"reference":"`))
	ref, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(ref)
}

// matchSampleByType returns the sample's resources by type.
func matchSampleByType(tb testing.TB) map[string][][]byte {
	tb.Helper()
	f, err := os.Open("../../testdata/synthea-r4-100-patients.ndjson.gz")
	if err != nil {
		tb.Skip("no Synthea sample:", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	out := make(map[string][][]byte)
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r struct{ ResourceType string }
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			tb.Fatal(err)
		}
		out[r.ResourceType] = append(out[r.ResourceType], bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// Queries parsed with the generated search parameters select on the
// sample what an independent reading of the decoded JSON selects.
func TestMatchSampleQueries(t *testing.T) {
	byType := matchSampleByType(t)
	type coding struct{ System, Code string }
	type res struct {
		ID     string
		Gender string
		Status string
		Name   []struct {
			Family string
			Given  []string
		}
		Period         struct{ Start, End string }
		Subject        struct{ Reference string }
		ClinicalStatus struct{ Coding []coding }
	}
	someSubject := subjectOf(byType["Observation"][0])
	dayEnd := time.Date(2020, 1, 1, 23, 59, 59, 999999000, time.UTC)
	dayStart := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	folded := strings.NewReplacer("á", "a", "é", "e", "í", "i", "ó", "o", "ú", "u", "ñ", "n", "ü", "u")
	for _, tc := range []struct {
		query string
		want  func(r *res) bool
	}{
		{"Patient?gender=female", func(r *res) bool { return r.Gender == "female" }},
		{"Patient?gender:not=female", func(r *res) bool { return r.Gender != "female" }},
		{"Patient?name=ramon", func(r *res) bool {
			for _, n := range r.Name {
				for _, s := range append([]string{n.Family}, n.Given...) {
					if strings.HasPrefix(folded.Replace(strings.ToLower(s)), "ramon") {
						return true
					}
				}
			}
			return false
		}},
		{"MedicationRequest?status=active", func(r *res) bool { return r.Status == "active" }},
		{"Condition?clinical-status=active", func(r *res) bool {
			for _, c := range r.ClinicalStatus.Coding {
				if c.Code == "active" {
					return true
				}
			}
			return false
		}},
		{"Observation?subject=" + someSubject, func(r *res) bool { return r.Subject.Reference == someSubject }},
		{"Encounter?date=ge2020-01-01", func(r *res) bool {
			start, err1 := time.Parse(time.RFC3339, r.Period.Start)
			end, err2 := time.Parse(time.RFC3339, r.Period.End)
			if err1 != nil || err2 != nil {
				t.Fatalf("Encounter %s period %+v", r.ID, r.Period)
			}
			// The R4 ge: after the day, or within it.
			return end.After(dayEnd) || !start.Before(dayStart) && !end.After(dayEnd)
		}},
	} {
		q, err := ParseQuery(tc.query)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		got, want := 0, 0
		for _, body := range byType[q.Type] {
			var r res
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			ok, err := q.Match(body)
			if err != nil {
				t.Fatalf("%s on %s: %v", tc.query, r.ID, err)
			}
			escaped := bytes.Replace(body, []byte(`"resourceType"`), []byte(`"resourc\u0065Type"`), 1)
			if ok2, err := q.Match(escaped); err != nil || ok2 != ok {
				t.Errorf("%s on %s: %v; without shortcuts %v, %v", tc.query, r.ID, ok, ok2, err)
			}
			if w := tc.want(&r); ok != w {
				t.Errorf("%s on %s: %v, want %v", tc.query, r.ID, ok, w)
			} else if w {
				want++
			}
			if ok {
				got++
			}
		}
		if want == 0 || want == len(byType[q.Type]) {
			t.Errorf("%s: %d of %d match: the query does not discriminate", tc.query, want, len(byType[q.Type]))
		}
		t.Logf("%s: %d of %d", tc.query, got, len(byType[q.Type]))
	}
}
