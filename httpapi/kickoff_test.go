package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/bulkstream/bulkstream/export"
)

// TestKickoffGET: every query value is one Param in request order, and
// RequestURL is the raw target as sent: the SMART Bulk Data test suite
// (BDT, github.com/smart-on-fhir/bulk-data-tests) compares the manifest's
// request with the URL it sent, byte for byte, and re-encoding parsed
// values would reorder and re-escape them.
func TestKickoffGET(t *testing.T) {
	jobs := newFakeJobs()
	h := newTestHandler(t, jobs, nil)
	target := "/fhir/$export?_type=A,B&_type=C&_since=2025-01-01T00%3A00%3A00Z&_elements=&flag"
	r := httptest.NewRequest("GET", target, nil)
	r.Host = "evil.example.com:9999" // never used for URLs
	r.Header.Set("Accept", "application/fhir+json")
	r.Header.Add("Prefer", "respond-async")
	r.Header.Add("Prefer", "handling = lenient")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)

	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d, want 202 (%s)", rec.Code, rec.Body)
	}
	if got, want := rec.Header().Get("Content-Location"), testPublicURL+"/fhir/bulkstatus/job-1"; got != want {
		t.Errorf("Content-Location = %q, want %q", got, want)
	}
	if rec.Body.Len() != 0 {
		t.Errorf("body = %q, want empty", rec.Body)
	}
	k := jobs.lastKickoff(t)
	want := export.Kickoff{
		Params: []export.Param{
			{Name: "_type", Value: "A,B"},
			{Name: "_type", Value: "C"},
			{Name: "_since", Value: "2025-01-01T00:00:00Z"},
			{Name: "_elements", Value: ""},
			{Name: "flag", Value: ""},
		},
		Lenient:    true,
		RequestURL: testPublicURL + target,
	}
	if !reflect.DeepEqual(k, want) {
		t.Errorf("Kickoff got\n %+v\nwant\n %+v", k, want)
	}
}

func TestKickoffHeaderVariants(t *testing.T) {
	tests := []struct {
		name    string
		accept  []string
		prefer  []string
		lenient bool
	}{
		{"plain", []string{"application/fhir+json"}, []string{"respond-async"}, false},
		{"json preferred, fhir+json allowed", []string{"application/json, application/fhir+json;q=0.5"}, []string{"respond-async"}, false},
		{"star", []string{"*/*"}, []string{"RESPOND-ASYNC"}, false},
		{"params and list", []string{"text/html, application/fhir+json; charset=utf-8; q=0.8"}, []string{"respond-async, handling=lenient"}, true},
		{"accept two lines", []string{"text/html", "application/fhir+json"}, []string{"respond-async; wait=10"}, false},
		{"quoted lenient", []string{"*/*"}, []string{`handling="lenient"`, "respond-async"}, true},
		{"first handling wins", []string{"*/*"}, []string{"respond-async,handling=strict,handling=lenient"}, false},
		{"spaces", []string{"*/*"}, []string{" respond-async ,  handling =  Lenient "}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs := newFakeJobs()
			rec := serve(newTestHandler(t, jobs, nil), request{method: "GET", target: "/fhir/$export",
				header: http.Header{"Accept": tt.accept, "Prefer": tt.prefer}})
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202 (%s)", rec.Code, rec.Body)
			}
			if got := jobs.lastKickoff(t).Lenient; got != tt.lenient {
				t.Errorf("Lenient = %v, want %v", got, tt.lenient)
			}
		})
	}
}

// TestKickoffPOST: each value[x] a Parameters entry may carry becomes its
// Param; RequestURL is the raw target without a re-encoding (see
// TestKickoffGET for why).
func TestKickoffPOST(t *testing.T) {
	body := `{"resourceType":"Parameters","id":"x","parameter":[
		{"name":"_type","valueString":"Patient"},
		{"name":"_type","valueString":"Observation"},
		{"name":"_since","valueInstant":"2025-01-01T00:00:00+05:00"},
		{"name":"_until","valueDateTime":"2026-01-01T00:00:00Z"},
		{"name":"patient","valueReference":{"reference":"Patient/p1","display":"x"}},
		{"name":"includeAssociatedData","valueCoding":{"system":"http://hl7.org/fhir/uv/bulkdata/CodeSystem/include-associated-data","code":"LatestProvenanceResources"}},
		{"name":"allowPartialManifests","valueBoolean":false},
		{"name":"_maximumFileSize","valuePositiveInt":1000},
		{"name":"_outputFormat","valueCode":"ndjson"}]}`
	for _, ct := range []string{"application/fhir+json", "application/json", "application/json; charset=utf-8"} {
		t.Run(ct, func(t *testing.T) {
			jobs := newFakeJobs()
			h := postHeaders()
			h.Set("Content-Type", ct)
			rec := serve(newTestHandler(t, jobs, nil), request{method: "POST", target: "/fhir/%24export", header: h, body: body})
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202 (%s)", rec.Code, rec.Body)
			}
			if got, want := rec.Header().Get("Content-Location"), testPublicURL+"/fhir/bulkstatus/job-1"; got != want {
				t.Errorf("Content-Location = %q, want %q", got, want)
			}
			want := export.Kickoff{
				Params: []export.Param{
					{Name: "_type", Value: "Patient"},
					{Name: "_type", Value: "Observation"},
					{Name: "_since", Value: "2025-01-01T00:00:00+05:00"},
					{Name: "_until", Value: "2026-01-01T00:00:00Z"},
					{Name: "patient", Value: "Patient/p1"},
					{Name: "includeAssociatedData", Value: "LatestProvenanceResources"},
					{Name: "allowPartialManifests", Value: "false"},
					{Name: "_maximumFileSize", Value: "1000"},
					{Name: "_outputFormat", Value: "ndjson"},
				},
				RequestURL: testPublicURL + "/fhir/%24export", // raw, as sent
			}
			if got := jobs.lastKickoff(t); !reflect.DeepEqual(got, want) {
				t.Errorf("Kickoff got\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestKickoffPOSTFullExport(t *testing.T) {
	for _, body := range []string{`{"resourceType":"Parameters","parameter":[]}`, `{"resourceType":"Parameters"}`} {
		jobs := newFakeJobs()
		rec := serve(newTestHandler(t, jobs, nil), request{method: "POST", target: "/fhir/$export", header: postHeaders(), body: body})
		if rec.Code != http.StatusAccepted {
			t.Fatalf("%s: status = %d, want 202 (%s)", body, rec.Code, rec.Body)
		}
		if k := jobs.lastKickoff(t); len(k.Params) != 0 || k.RequestURL != testPublicURL+"/fhir/$export" {
			t.Errorf("%s: Kickoff = %+v, want no params and the bare URL", body, k)
		}
	}
}

func TestKickoffUsesRequestContext(t *testing.T) {
	jobs := newFakeJobs()
	jobs.kickoff = func(ctx context.Context, k export.Kickoff) (string, error) {
		return "", ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client has gone
	r := httptest.NewRequest("GET", "/fhir/$export", nil).WithContext(ctx)
	r.Header = kickoffHeaders()
	rec := httptest.NewRecorder()
	newTestHandler(t, jobs, nil).ServeHTTP(rec, r)
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Errorf("wrote %d %q to a client that left; want nothing", rec.Code, rec.Body)
	}
}

func TestBasePathAndPublicURLPrefix(t *testing.T) {
	jobs := newFakeJobs()
	h := New(Config{Jobs: jobs, PublicURL: "https://fhir.example.org/api/", BasePath: "/r4/"})
	rec := serve(h, request{method: "GET", target: "/r4/$export?_type=Patient", header: kickoffHeaders()})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d (%s)", rec.Code, rec.Body)
	}
	if got, want := rec.Header().Get("Content-Location"), "https://fhir.example.org/api/r4/bulkstatus/job-1"; got != want {
		t.Errorf("Content-Location = %q, want %q", got, want)
	}
	if got, want := jobs.lastKickoff(t).RequestURL, "https://fhir.example.org/api/r4/$export?_type=Patient"; got != want {
		t.Errorf("RequestURL = %q, want %q", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	jobs := newFakeJobs()
	bad := []Config{
		{Jobs: jobs},
		{Jobs: jobs, PublicURL: "127.0.0.1:8080"},
		{Jobs: jobs, PublicURL: "ftp://x"},
		{Jobs: jobs, PublicURL: "http://x/?a=b"},
		{Jobs: jobs, PublicURL: "http://x", BasePath: "fhir"},
		{Jobs: jobs, PublicURL: "http://x", BasePath: "/fhir/:id"},
		{MaxBodyBytes: -1},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	for _, c := range []Config{{}, {Jobs: jobs, PublicURL: "https://x:8443/p"}, {Jobs: jobs, PublicURL: "http://x", BasePath: "/"}} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", c, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("New with an invalid Config did not panic")
		}
	}()
	New(Config{Jobs: jobs})
}
