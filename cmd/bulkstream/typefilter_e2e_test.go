package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// sampleFacts are the fields of the Synthea sample that the _typeFilter
// end-to-end test filters on, read here from the raw JSON with
// encoding/json alone, so that the expected ids do not come from the code
// under test.
type sampleFacts struct {
	obsCategories map[string][]string  // Observation id → its category codes (any system)
	obsEffective  map[string]time.Time // Observation id → effectiveDateTime
	obsSubject    map[string]string    // Observation id → subject patient id
	condStatus    map[string][]string  // Condition id → clinicalStatus codes
	condOnset     map[string]time.Time // Condition id → onsetDateTime
	gender        map[string]string    // Patient id → gender
}

func sampleFactsOf(t *testing.T, input map[string][]byte) sampleFacts {
	t.Helper()
	f := sampleFacts{obsCategories: map[string][]string{}, obsEffective: map[string]time.Time{}, obsSubject: map[string]string{},
		condStatus: map[string][]string{}, condOnset: map[string]time.Time{}, gender: map[string]string{}}
	type codeable struct {
		Coding []struct{ System, Code string }
	}
	codes := func(cs ...codeable) []string {
		var out []string
		for _, c := range cs {
			for _, cd := range c.Coding {
				out = append(out, cd.Code)
			}
		}
		return out
	}
	instant := func(key, v string) time.Time {
		tm, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Fatalf("%s: %q is no dateTime with seconds and zone (the test reads only those): %v", key, v, err)
		}
		return tm
	}
	for key, line := range input {
		typ, id, _ := strings.Cut(key, "/")
		switch typ {
		case "Observation":
			var o struct {
				Category          []codeable
				EffectiveDateTime string
				Subject           struct{ Reference string }
			}
			if err := json.Unmarshal(line, &o); err != nil {
				t.Fatal(err)
			}
			f.obsCategories[id] = codes(o.Category...)
			f.obsEffective[id] = instant(key, o.EffectiveDateTime)
			f.obsSubject[id] = strings.TrimPrefix(o.Subject.Reference, "Patient/")
		case "Condition":
			var c struct {
				ClinicalStatus codeable
				OnsetDateTime  string
			}
			if err := json.Unmarshal(line, &c); err != nil {
				t.Fatal(err)
			}
			f.condStatus[id] = codes(c.ClinicalStatus)
			f.condOnset[id] = instant(key, c.OnsetDateTime)
		case "Patient":
			var p struct{ Gender string }
			if err := json.Unmarshal(line, &p); err != nil {
				t.Fatal(err)
			}
			f.gender[id] = p.Gender
		}
	}
	return f
}

// idsWhere returns the keys of m whose value passes keep.
func idsWhere[V any](m map[string]V, keep func(id string, v V) bool) []string {
	var ids []string
	for id, v := range m {
		if keep(id, v) {
			ids = append(ids, id)
		}
	}
	return ids
}

// idsOfType returns the ids of the Type/id keys of type typ.
func idsOfType[V any](m map[string]V, typ string) []string {
	var ids []string
	for key := range m {
		if id, ok := strings.CutPrefix(key, typ+"/"); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// typeFilterKickoff sends a kick-off with a Prefer header of its own and
// returns the response with its body read.
func typeFilterKickoff(t *testing.T, method, u, body, prefer string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", prefer)
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestTypeFilterE2E: the real binary loaded with the Synthea sample
// exports exactly the resources a _typeFilter selects, the expected ids
// computed here from the sample's raw JSON: a system-level GET (a filtered
// type next to an unfiltered one), a POST whose two queries for one type
// are ORed, a Group-level `bulkstream fetch --type-filter` (parameters of
// one query ANDed, a value comma ORed, two types filtered); /metadata lists
// the parameters used (gzipped on the wire); an unsupported
// parameter is a 400 OperationOutcome naming it, and with Prefer:
// handling=lenient its type is exported whole with a warning in the error
// file.
func TestTypeFilterE2E(t *testing.T) {
	s := startServerWith(t, serverOpts{binary: true})
	input := s.publishSampleApplied(t)
	facts := sampleFactsOf(t, input)
	sc := compartmentsOf(t, input)
	allPatients := idsOfType(input, "Patient")

	// exportIDs runs a kick-off to completion and returns the exported ids
	// by type, and the manifest.
	exportIDs := func(t *testing.T, method, u, body string) (map[string][]string, manifest) {
		t.Helper()
		raw := levelExport(t, method, u, body)
		var m manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		ids := map[string][]string{}
		for key := range downloadOutputs(t, m) {
			typ, id, _ := strings.Cut(key, "/")
			ids[typ] = append(ids[typ], id)
		}
		return ids, m
	}

	t.Run("system GET", func(t *testing.T) {
		q := url.Values{"_type": {"Observation,Patient"}, "_typeFilter": {"Observation?category=laboratory"}}
		got, m := exportIDs(t, http.MethodGet, s.base+"/$export?"+q.Encode(), "")
		want := idsWhere(facts.obsCategories, func(_ string, cats []string) bool { return slices.Contains(cats, "laboratory") })
		if len(want) == 0 || len(want) == len(facts.obsCategories) {
			t.Fatalf("%d of %d Observations are laboratory: the filter would prove nothing", len(want), len(facts.obsCategories))
		}
		t.Logf("%d of %d Observations are laboratory", len(want), len(facts.obsCategories))
		sameIDs(t, "Observations", got["Observation"], want)
		sameIDs(t, "Patients (no filter: all)", got["Patient"], allPatients)
		if len(got) != 2 {
			t.Errorf("exported types %v, want Observation and Patient", slices.Sorted(maps.Keys(got)))
		}
		if len(m.Error) != 0 {
			t.Errorf("error files %v", m.Error)
		}
	})

	t.Run("system POST ORed queries", func(t *testing.T) {
		body := `{"resourceType":"Parameters","parameter":[` +
			`{"name":"_type","valueString":"Condition"},` +
			`{"name":"_typeFilter","valueString":"Condition?clinical-status=active"},` +
			`{"name":"_typeFilter","valueString":"Condition?onset-date=ge2015"}]}`
		got, _ := exportIDs(t, http.MethodPost, s.base+"/$export", body)
		// ge2015: the onset (a second) ends at or after 2015-01-01T00:00:00Z
		// (a date without zone is UTC here).
		from := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
		active := idsWhere(facts.condStatus, func(_ string, st []string) bool { return slices.Contains(st, "active") })
		recent := idsWhere(facts.condOnset, func(_ string, on time.Time) bool { return !on.Before(from) })
		want := idsWhere(facts.condStatus, func(id string, _ []string) bool {
			return slices.Contains(active, id) || slices.Contains(recent, id)
		})
		if len(want) == len(active) || len(want) == len(recent) || len(want) == len(facts.condStatus) {
			t.Fatalf("active %d, onset ≥ 2015 %d, either %d of %d Conditions: the OR would prove nothing",
				len(active), len(recent), len(want), len(facts.condStatus))
		}
		t.Logf("Conditions: %d active, %d with onset ≥ 2015, %d either, of %d", len(active), len(recent), len(want), len(facts.condStatus))
		sameIDs(t, "Conditions (active OR onset ≥ 2015)", got["Condition"], want)
		if len(got) != 1 {
			t.Errorf("exported types %v, want Condition", slices.Sorted(maps.Keys(got)))
		}
	})

	t.Run("group fetch --type-filter", func(t *testing.T) {
		const group = "NeighborhoodHealthPlan"
		members := sc.members[group]
		out := t.TempDir()
		runCmd(t, "fetch", "--url", s.base, "--group", group, "--type", "Patient,Observation", "--out", out,
			"--type-filter", "Observation?category=vital-signs,survey&date=ge2019-01-01",
			"--type-filter", "Patient?gender=female")
		got := map[string][]string{}
		for key := range readNDJSONDir(t, out, "*.ndjson") {
			typ, id, _ := strings.Cut(key, "/")
			got[typ] = append(got[typ], id)
		}
		from := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
		wantObs := idsWhere(facts.obsCategories, func(id string, cats []string) bool {
			return slices.Contains(members, facts.obsSubject[id]) && !facts.obsEffective[id].Before(from) &&
				(slices.Contains(cats, "vital-signs") || slices.Contains(cats, "survey"))
		})
		wantPats := idsWhere(facts.gender, func(id, g string) bool { return slices.Contains(members, id) && g == "female" })
		var memberObs int
		for _, p := range members {
			memberObs += len(sc.obs[p])
		}
		if len(wantObs) == 0 || len(wantObs) == memberObs || len(wantPats) == 0 || len(wantPats) == len(members) {
			t.Fatalf("%d of the members' %d Observations and %d of %d members pass: the filters would prove nothing",
				len(wantObs), memberObs, len(wantPats), len(members))
		}
		t.Logf("Group members: %d of %d Observations, %d of %d Patients pass", len(wantObs), memberObs, len(wantPats), len(members))
		sameIDs(t, "the members' vital-signs or survey Observations since 2019", got["Observation"], wantObs)
		sameIDs(t, "female members", got["Patient"], wantPats)
	})

	// The CapabilityStatement lists what the queries above use, gzipped
	// on the wire when asked.
	t.Run("metadata searchParam", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.base+"/metadata", nil)
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultTransport.RoundTrip(req) // no transparent decompression
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("metadata: %d, Content-Encoding %q; want 200 gzip", resp.StatusCode, resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var cs struct {
			Rest []struct {
				Resource []struct {
					Type        string
					SearchParam []struct{ Name, Type string }
				}
			}
		}
		if err := json.NewDecoder(zr).Decode(&cs); err != nil || len(cs.Rest) != 1 {
			t.Fatalf("metadata: %v", err)
		}
		listed := map[string]string{}
		for _, r := range cs.Rest[0].Resource {
			for _, p := range r.SearchParam {
				listed[r.Type+"?"+p.Name] = p.Type
			}
		}
		for q, typ := range map[string]string{"Observation?category": "token", "Observation?date": "date", "Condition?clinical-status": "token",
			"Condition?onset-date": "date", "Patient?gender": "token"} {
			if listed[q] != typ {
				t.Errorf("searchParam %s: type %q, want %q", q, listed[q], typ)
			}
		}
		if _, ok := listed["Patient?status"]; ok {
			t.Errorf("searchParam lists Patient?status, which R4 does not define")
		}
	})

	t.Run("unsupported parameter 400", func(t *testing.T) {
		q := url.Values{"_type": {"Patient"}, "_typeFilter": {"Patient?status=active"}}
		resp, b := typeFilterKickoff(t, http.MethodGet, s.base+"/$export?"+q.Encode(), "", "respond-async")
		var oo struct {
			ResourceType string
			Issue        []struct{ Severity, Code, Diagnostics string }
		}
		if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(b, &oo) != nil || oo.ResourceType != "OperationOutcome" ||
			len(oo.Issue) == 0 || !strings.Contains(oo.Issue[0].Diagnostics, "no search parameter") || !strings.Contains(oo.Issue[0].Diagnostics, "status") {
			t.Errorf("Patient?status=active: %d %s; want 400 and an OperationOutcome saying Patient has no search parameter status", resp.StatusCode, b)
		}
	})

	// Lenient: the type of the bad query is exported whole (a superset),
	// the other type's query still applies.
	t.Run("unsupported parameter lenient", func(t *testing.T) {
		q := url.Values{"_type": {"Patient,Condition"}, "_typeFilter": {"Patient?status=active", "Condition?clinical-status=active"}}
		resp, b := typeFilterKickoff(t, http.MethodGet, s.base+"/$export?"+q.Encode(), "", "respond-async, handling=lenient")
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("lenient Patient?status=active: %d %s, want 202", resp.StatusCode, b)
		}
		status := resp.Header.Get("Content-Location")
		code, raw := pollExport(t, status, 2*time.Minute)
		if code != http.StatusOK {
			t.Fatalf("status: %d %s", code, raw)
		}
		var m manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		got := downloadOutputs(t, m)
		sameIDs(t, "Patients (filter ignored: all)", idsOfType(got, "Patient"), allPatients)
		active := idsWhere(facts.condStatus, func(_ string, st []string) bool { return slices.Contains(st, "active") })
		sameIDs(t, "Conditions (still filtered: active)", idsOfType(got, "Condition"), active)
		var warned bool
		for _, e := range m.Error {
			for _, l := range download(t, e.URL) {
				var oo struct {
					ResourceType string
					Issue        []struct{ Severity, Diagnostics string }
				}
				if err := json.Unmarshal(l, &oo); err != nil || oo.ResourceType != "OperationOutcome" {
					t.Errorf("error file line %s", l)
					continue
				}
				for _, is := range oo.Issue {
					if is.Severity == "warning" && strings.Contains(is.Diagnostics, "no search parameter") && strings.Contains(is.Diagnostics, "status") &&
						strings.Contains(is.Diagnostics, "_typeFilter") {
						warned = true
					}
				}
			}
		}
		if !warned {
			t.Errorf("no warning OperationOutcome about the ignored _typeFilter in the error files %v", m.Error)
		}
	})
}

// TestFetchTypeFilterFlags: --type-filter is refused empty, and with
// --apply on an incremental run (the mirror could not drop a resource that
// stopped matching), before any request.
func TestFetchTypeFilterFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--type-filter", " "}, `invalid value " " for flag -type-filter: empty value`},
		{[]string{"--type-filter", "Observation?category=laboratory", "--apply", "m", "--state", "s.json"}, "--type-filter with --apply needs a full run"},
		{[]string{"--type-filter", "Observation?category=laboratory", "--apply", "m", "--since", "2026-01-01T00:00:00Z"}, "--type-filter with --apply needs a full run"},
		{[]string{"--type-filter", "category=laboratory"}, `Request.TypeFilters[0] "category=laboratory" is not a search query`},
	} {
		var stdout, stderr bytes.Buffer
		// Port 1 refuses connections: a request would fail differently.
		err := run(t.Context(), append([]string{"fetch", "--url", "http://127.0.0.1:1/fhir", "--out", t.TempDir()}, tc.args...), nil, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fetch %v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
