package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/export"
)

// TestKickoffLevels: [base]/Patient/$export and [base]/Group/[id]/$export
// reach Kickoff with their Level (and Group), GET and POST, with the same
// parameters and manifest request rules as [base]/$export; a POST's
// patient references (valueReference) arrive as patient params.
func TestKickoffLevels(t *testing.T) {
	body := `{"resourceType":"Parameters","parameter":[` +
		`{"name":"patient","valueReference":{"reference":"Patient/p1"}},` +
		`{"name":"patient","valueReference":{"reference":"Patient/p2"}},` +
		`{"name":"includeAssociatedData","valueCode":"LatestProvenanceResources"},` +
		`{"name":"organizeOutputBy","valueString":"Patient"}]}`
	postParams := []export.Param{
		{Name: "patient", Value: "Patient/p1"}, {Name: "patient", Value: "Patient/p2"},
		{Name: "includeAssociatedData", Value: "LatestProvenanceResources"}, {Name: "organizeOutputBy", Value: "Patient"},
	}
	for _, tc := range []struct {
		name   string
		req    request
		level  export.Level
		group  string
		params []export.Param
		url    string // RequestURL
	}{
		{"system GET", request{method: "GET", target: "/fhir/$export?_type=Patient", header: kickoffHeaders()},
			export.LevelSystem, "", []export.Param{{Name: "_type", Value: "Patient"}}, "/fhir/$export?_type=Patient"},
		{"patient GET", request{method: "GET", target: "/fhir/Patient/$export?_type=Patient&patient=Patient%2Fp1", header: kickoffHeaders()},
			export.LevelPatient, "", []export.Param{{Name: "_type", Value: "Patient"}, {Name: "patient", Value: "Patient/p1"}},
			"/fhir/Patient/$export?_type=Patient&patient=Patient%2Fp1"},
		{"patient POST", request{method: "POST", target: "/fhir/Patient/$export", header: postHeaders(), body: body},
			export.LevelPatient, "", postParams, "/fhir/Patient/$export"},
		{"group GET", request{method: "GET", target: "/fhir/Group/g-1.x/$export", header: kickoffHeaders()},
			export.LevelGroup, "g-1.x", nil, "/fhir/Group/g-1.x/$export"},
		{"group POST", request{method: "POST", target: "/fhir/Group/" + strings.Repeat("G", 64) + "/$export", header: postHeaders(), body: body},
			export.LevelGroup, strings.Repeat("G", 64), postParams, "/fhir/Group/" + strings.Repeat("G", 64) + "/$export"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs := newFakeJobs()
			rec := serve(newTestHandler(t, jobs, nil), tc.req)
			if rec.Code != http.StatusAccepted || rec.Header().Get("Content-Location") != testPublicURL+"/fhir/bulkstatus/job-1" {
				t.Fatalf("status %d Content-Location %q, want 202 and the status URL (%s)", rec.Code, rec.Header().Get("Content-Location"), rec.Body)
			}
			k := jobs.lastKickoff(t)
			if k.Level != tc.level || k.Group != tc.group || k.RequestURL != testPublicURL+tc.url || !reflect.DeepEqual(k.Params, tc.params) {
				t.Errorf("Kickoff level %q group %q url %q params %+v, want %q %q %q %+v",
					k.Level, k.Group, k.RequestURL, k.Params, tc.level, tc.group, testPublicURL+tc.url, tc.params)
			}
		})
	}
}

// TestKickoffLevelsChecks: the kick-off header checks hold at every
// level, a Group id that is not a FHIR id is 400 before Kickoff, and
// other methods are 405.
func TestKickoffLevelsChecks(t *testing.T) {
	jobs := newFakeJobs()
	h := newTestHandler(t, jobs, nil)
	for _, target := range []string{"/fhir/Patient/$export", "/fhir/Group/g1/$export"} {
		checkOutcome(t, serve(h, request{method: "GET", target: target, header: http.Header{"Accept": {"application/fhir+json"}}}),
			http.StatusBadRequest, "the Prefer header must contain respond-async")
		checkOutcome(t, serve(h, request{method: "GET", target: target, header: http.Header{"Prefer": {"respond-async"}}}),
			http.StatusBadRequest, "the Accept header is required")
		checkOutcome(t, serve(h, request{method: "POST", target: target + "?_type=Patient", header: postHeaders(), body: `{"resourceType":"Parameters"}`}),
			http.StatusBadRequest, "a POST kick-off takes its parameters from the Parameters body only")
		checkOutcome(t, serve(h, request{method: "DELETE", target: target}), http.StatusMethodNotAllowed, "allowed: GET, OPTIONS, POST")
		checkOutcome(t, serve(h, request{method: "HEAD", target: target, header: kickoffHeaders()}), http.StatusMethodNotAllowed, "")
	}
	for _, id := range []string{"a_b", "a%20b", strings.Repeat("x", 65), "%C3%A9"} {
		oo := checkOutcome(t, serve(h, request{method: "GET", target: "/fhir/Group/" + id + "/$export", header: kickoffHeaders()}),
			http.StatusBadRequest, "is not a FHIR id")
		if oo.Issue[0].Code != "value" {
			t.Errorf("Group %s: code %q, want value", id, oo.Issue[0].Code)
		}
	}
	// Not kick-offs: a Group id with a slash, a Patient instance.
	checkOutcome(t, serve(h, request{method: "GET", target: "/fhir/Group/a/b/$export", header: kickoffHeaders()}), http.StatusNotFound, "no route")
	checkOutcome(t, serve(h, request{method: "GET", target: "/fhir/Patient/p1/$export", header: kickoffHeaders()}), http.StatusNotFound, "no route")
	if len(jobs.kickoffs) != 0 {
		t.Errorf("Kickoff called %d times, want none", len(jobs.kickoffs))
	}
}

// TestKickoffGroupNotFound: an unknown Group is a 404 OperationOutcome
// naming it.
func TestKickoffGroupNotFound(t *testing.T) {
	jobs := newFakeJobs()
	jobs.kickoffErr = &export.NotFoundError{Type: "Group", ID: "g9"}
	rec := serve(newTestHandler(t, jobs, nil), request{method: "GET", target: "/fhir/Group/g9/$export", header: kickoffHeaders()})
	oo := checkOutcome(t, rec, http.StatusNotFound, "Group/g9 is not on this server")
	if oo.Issue[0].Code != "not-found" {
		t.Errorf("code %q, want not-found", oo.Issue[0].Code)
	}
}

// TestKickoffForbiddenGroupProvenance: a token without Group (Group
// level) or Provenance (includeAssociatedData) is a 403 saying it must
// grant read access to them.
func TestKickoffForbiddenGroupProvenance(t *testing.T) {
	jobs := newFakeJobs()
	jobs.kickoffErr = &export.ForbiddenError{Types: []string{"Group", "Provenance"}}
	rec := serve(newTestHandler(t, jobs, nil), request{method: "GET",
		target: "/fhir/Group/g1/$export?includeAssociatedData=LatestProvenanceResources", header: kickoffHeaders()})
	oo := checkOutcome(t, rec, http.StatusForbidden, "the token must grant read access to them: a Group-level export needs read access to Group (system/Group.rs); includeAssociatedData needs read access to Provenance (system/Provenance.rs)")
	if oo.Issue[0].Code != "forbidden" {
		t.Errorf("code %q, want forbidden", oo.Issue[0].Code)
	}
}

// TestManifestOrganizedByPatient: with Manifest.OutputOrganizedBy the
// manifest says outputOrganizedBy and its output items have no type
// (Bulk Data 3.0); error items keep theirs.
func TestManifestOrganizedByPatient(t *testing.T) {
	jobs := newFakeJobs()
	jobs.statuses["j1"] = export.Status{State: export.Completed, Manifest: &export.Manifest{
		TransactionTime: "2026-11-26T17:58:41.120000Z", Request: testPublicURL + "/fhir/Patient/$export?organizeOutputBy=Patient",
		OutputOrganizedBy: "Patient",
		Output: []export.FileInfo{
			{Type: "Patient", Name: "patients-1.ndjson", Count: 7},
			{Type: "Patient", Name: "patients-2.ndjson", Count: 3},
		},
		Error: []export.FileInfo{{Type: "OperationOutcome", Name: "error-1.ndjson", Count: 1}},
	}}
	rec := serve(newTestHandler(t, jobs, nil), request{method: "GET", target: "/fhir/bulkstatus/j1"})
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if string(m["outputOrganizedBy"]) != `"Patient"` {
		t.Errorf("outputOrganizedBy = %s, want \"Patient\"", m["outputOrganizedBy"])
	}
	var output, errs []map[string]any
	if err := json.Unmarshal(m["output"], &output); err != nil || len(output) != 2 {
		t.Fatalf("output = %s (%v)", m["output"], err)
	}
	for _, o := range output {
		if _, ok := o["type"]; ok || o["url"] == nil || o["count"] == nil {
			t.Errorf("output item %v: want url and count, no type", o)
		}
	}
	if err := json.Unmarshal(m["error"], &errs); err != nil || len(errs) != 1 || errs[0]["type"] != "OperationOutcome" {
		t.Errorf("error = %s, want its type kept", m["error"])
	}

	// Without it the manifest has no outputOrganizedBy and typed items.
	st := jobs.statuses["j1"]
	man := *st.Manifest
	man.OutputOrganizedBy = ""
	st.Manifest = &man
	jobs.statuses["j1"] = st
	rec = serve(newTestHandler(t, jobs, nil), request{method: "GET", target: "/fhir/bulkstatus/j1"})
	if b := rec.Body.Bytes(); bytes.Contains(b, []byte("outputOrganizedBy")) || bytes.Count(b, []byte(`"type":"Patient"`)) != 2 {
		t.Errorf("manifest without organizeOutputBy = %s", b)
	}
}
