package search

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"os"
	"testing"
)

// sampleObservations returns the Observations of the repository's
// Synthea sample (compact NDJSON, gzip).
func sampleObservations(tb testing.TB) [][]byte {
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
	var out [][]byte
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte(`{"resourceType":"Observation"`)) {
			out = append(out, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(out) == 0 {
		tb.Fatal("no Observation in the sample")
	}
	return out
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
