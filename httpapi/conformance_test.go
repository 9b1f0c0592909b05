package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// The tests in this file run the handler over a real export.Manager and
// index, walking the requests the Bulk Data conformance suites (SMART
// bulk-data-tests "BDT", github.com/smart-on-fhir/bulk-data-tests; Inferno's
// Bulk Data test kit, github.com/inferno-framework/bulk-data-test-kit) send
// and checking what they assert: kick-off, status, manifest, cancel and file
// requests of the IG (https://hl7.org/fhir/uv/bulkdata/export.html).

// fixedHead is a stream head that never moves.
type fixedHead uint64

func (h fixedHead) Head(context.Context) (uint64, error) { return uint64(h), nil }

// conformanceServer returns a handler over a manager exporting two
// Patients and an Observation committed an hour ago.
func conformanceServer(t *testing.T) http.Handler {
	t.Helper()
	return realServer(t,
		change{"Patient", "p1", `{"resourceType":"Patient","id":"p1","gender":"female"}`},
		change{"Patient", "p2", `{"resourceType":"Patient","id":"p2","gender":"male"}`},
		change{"Observation", "o1", `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"bp"}}`},
	)
}

// change is one resource change of realServer: an upsert of body, or a
// delete when body is "".
type change struct{ typ, id, body string }

// realServer is the API over a real export manager and an index holding
// changes, applied in order 1 ms apart an hour ago.
func realServer(t *testing.T, changes ...change) http.Handler {
	t.Helper()
	x := indextest.Open(t)
	at := time.Now().Add(-time.Hour).UTC()
	cs := make([]index.Change, len(changes))
	for i, c := range changes {
		cs[i] = index.Change{Seq: uint64(i + 1), Time: at.Add(time.Duration(i) * time.Millisecond),
			Type: c.typ, ID: c.id, Body: []byte(c.body), Delete: c.body == ""}
	}
	if _, err := x.Apply(t.Context(), cs, 0); err != nil {
		t.Fatal(err)
	}
	return New(Config{Jobs: startManager(t, x, len(cs)), PublicURL: testPublicURL, Version: "test"})
}

// local turns one of the server's absolute URLs into a request target.
func local(t testing.TB, abs string) string {
	t.Helper()
	target, ok := strings.CutPrefix(abs, testPublicURL)
	if !ok {
		t.Fatalf("URL %q does not start with the public URL %s", abs, testPublicURL)
	}
	return target
}

// kickoffOK kicks off and returns the status URL.
func kickoffOK(t testing.TB, h http.Handler, req request) string {
	t.Helper()
	rec := serve(h, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("%s %s = %d, want 202 (%s)", req.method, req.target, rec.Code, rec.Body)
	}
	loc := rec.Header().Get("Content-Location")
	if !strings.HasPrefix(loc, testPublicURL+"/fhir/bulkstatus/") {
		t.Fatalf("Content-Location = %q, want an absolute status URL", loc)
	}
	return loc
}

type manifestDoc struct {
	TransactionTime     string
	Request             string
	RequiresAccessToken *bool
	OutputOrganizedBy   string
	Output, Error       []struct {
		Type, URL string
		Count     int
	}
	Deleted []json.RawMessage
}

// awaitManifest polls the status URL as BDT does: the first poll must be
// 202 with a short X-Progress and an integer Retry-After, later ones end
// in 200 with the manifest.
func awaitManifest(t testing.TB, h http.Handler, statusURL string) manifestDoc {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for poll := 0; ; poll++ {
		rec := serve(h, request{method: "GET", target: local(t, statusURL), header: http.Header{"Accept": {"application/json"}}})
		switch rec.Code {
		case http.StatusAccepted:
			if p := rec.Header().Get("X-Progress"); len(p) >= 100 || strings.HasPrefix(p, `"`) {
				t.Errorf("X-Progress = %q: want fewer than 100 characters, unquoted", p)
			}
			if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
				t.Errorf("Retry-After = %q, want whole seconds in 1..10", rec.Header().Get("Retry-After"))
			}
		case http.StatusOK:
			if poll == 0 {
				t.Error("the first poll was 200; BDT wants 202 while the export is in progress")
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("manifest Content-Type = %q, want application/json", ct)
			}
			exp, err := http.ParseTime(rec.Header().Get("Expires"))
			if err != nil || !exp.After(time.Now()) {
				t.Errorf("Expires = %q, want an HTTP date in the future", rec.Header().Get("Expires"))
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
				t.Fatalf("manifest: %v\n%s", err, rec.Body)
			}
			for _, k := range []string{"transactionTime", "request", "requiresAccessToken", "output", "error"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("manifest lacks %q (Inferno and BDT require it)", k)
				}
			}
			var m manifestDoc
			if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			if _, err := time.Parse(time.RFC3339Nano, m.TransactionTime); err != nil {
				t.Errorf("transactionTime %q is not an instant: %v", m.TransactionTime, err)
			}
			for i, f := range append(m.Output, m.Error...) {
				// Bulk Data 3.0: output items organized by patient have no type.
				if wantType := i >= len(m.Output) || m.OutputOrganizedBy == ""; wantType != (f.Type != "") {
					t.Errorf("manifest item %+v (outputOrganizedBy %q): type present %v, want %v", f, m.OutputOrganizedBy, f.Type != "", wantType)
				}
				if !strings.HasPrefix(f.URL, testPublicURL+"/") || f.Count <= 0 {
					t.Errorf("manifest item %+v: want an absolute url and count > 0", f)
				}
			}
			return m
		default:
			t.Fatalf("status poll = %d (%s)", rec.Code, rec.Body)
		}
		if time.Now().After(deadline) {
			t.Fatal("the export did not complete in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// download fetches a manifest file and returns its NDJSON lines, decoded.
func download(t testing.TB, h http.Handler, url string) []map[string]any {
	t.Helper()
	rec := serve(h, request{method: "GET", target: local(t, url)})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d (%s)", url, rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+ndjson") {
		t.Errorf("GET %s: Content-Type = %q, want application/fhir+ndjson", url, ct)
	}
	if rec.Header().Get("Content-Encoding") != "" {
		t.Errorf("GET %s without Accept-Encoding: Content-Encoding %q", url, rec.Header().Get("Content-Encoding"))
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(rec.Body.Bytes()))
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("GET %s: line %q: %v", url, sc.Bytes(), err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		t.Errorf("GET %s: empty file", url)
	}
	return out
}

// TestConformanceExport: kick-off, polling, manifest, download, cancel.
func TestConformanceExport(t *testing.T) {
	h := conformanceServer(t)
	target := "/fhir/$export?_type=Patient&_type=Observation&_outputFormat=application%2Ffhir%2Bndjson"
	hdr := kickoffHeaders()
	statusURL := kickoffOK(t, h, request{method: "GET", target: target, header: hdr})
	m := awaitManifest(t, h, statusURL)

	if m.Request != testPublicURL+target {
		t.Errorf("request = %q, want the kick-off URL as sent, %q", m.Request, testPublicURL+target)
	}
	if m.RequiresAccessToken == nil || *m.RequiresAccessToken {
		t.Errorf("requiresAccessToken = %v, want false (no auth yet)", m.RequiresAccessToken)
	}
	if len(m.Error) != 0 || m.Deleted != nil {
		t.Errorf("error = %+v, deleted = %s; want [] and none", m.Error, m.Deleted)
	}
	counts := map[string]int{}
	for _, f := range m.Output {
		for _, line := range download(t, h, f.URL) {
			if line["resourceType"] != f.Type {
				t.Errorf("%s: line of type %v in a %s file", f.URL, line["resourceType"], f.Type)
			}
			counts[f.Type]++
		}
	}
	if counts["Patient"] != 2 || counts["Observation"] != 1 || len(counts) != 2 {
		t.Errorf("exported %v, want 2 Patient and 1 Observation", counts)
	}

	// DELETE of a completed job: 202, then status, DELETE and files are 404.
	// BDT's client sends Accept: application/json and parses only bodies so labelled.
	rec := serve(h, request{method: "DELETE", target: local(t, statusURL), header: http.Header{"Accept": {"application/json"}}})
	checkOutcomeSeverity(t, rec, contentTypeJSON, http.StatusAccepted, "information")
	checkOutcome(t, serve(h, request{method: "GET", target: local(t, statusURL)}), http.StatusNotFound, "no such export job")
	checkOutcome(t, serve(h, request{method: "DELETE", target: local(t, statusURL)}), http.StatusNotFound, "no such export job")
	for _, f := range m.Output {
		checkOutcome(t, serve(h, request{method: "GET", target: local(t, f.URL)}), http.StatusNotFound, "no such export job or file")
	}
}

// checkOutcomeSeverity is checkOutcome for a non-error outcome.
func checkOutcomeSeverity(t testing.TB, rec *httptest.ResponseRecorder, contentType string, status int, severity string) {
	t.Helper()
	oo := checkOutcomeAs(t, rec, contentType, status, "")
	if oo.Issue[0].Severity != severity {
		t.Errorf("severity = %q, want %q", oo.Issue[0].Severity, severity)
	}
}

// TestConformanceLenient: an unsupported parameter is 400 without
// handling=lenient; with it (sent as a second Prefer line, as BDT does)
// the export runs and the manifest's error file holds one
// OperationOutcome per ignored parameter, as the IG asks of lenient
// handling.
func TestConformanceLenient(t *testing.T) {
	h := conformanceServer(t)
	target := "/fhir/$export?_type=Patient&_typeFilter=Patient%3Fstatus%3Dactive&allowPartialManifests=true"
	rec := serve(h, request{method: "GET", target: target, header: kickoffHeaders()})
	oo := checkOutcome(t, rec, http.StatusBadRequest, "Patient has no search parameter status")
	if oo.Issue[0].Code != "not-supported" {
		t.Errorf("code = %q, want not-supported", oo.Issue[0].Code)
	}

	hdr := kickoffHeaders()
	hdr.Add("Prefer", "handling=lenient")
	m := awaitManifest(t, h, kickoffOK(t, h, request{method: "GET", target: target, header: hdr}))
	if len(m.Output) != 1 || m.Output[0].Type != "Patient" || m.Output[0].Count != 2 {
		t.Errorf("output = %+v, want the 2 Patients (the filter ignored: a superset, never a subset)", m.Output)
	}
	if len(m.Error) != 1 || m.Error[0].Type != "OperationOutcome" || m.Error[0].Count != 2 {
		t.Fatalf("error = %+v, want one OperationOutcome file with 2 lines", m.Error)
	}
	lines := download(t, h, m.Error[0].URL)
	for i, param := range []string{"_typeFilter", "allowPartialManifests"} {
		if i >= len(lines) {
			break
		}
		b, _ := json.Marshal(lines[i])
		var o outcome
		if err := json.Unmarshal(b, &o); err != nil || o.ResourceType != "OperationOutcome" || len(o.Issue) != 1 {
			t.Fatalf("error line %d = %s, want an OperationOutcome with one issue", i, b)
		}
		if iss := o.Issue[0]; iss.Severity == "" || iss.Code == "" || !strings.Contains(iss.Diagnostics, param) {
			t.Errorf("error line %d issue = %+v, want severity, code and diagnostics naming %s", i, iss, param)
		}
	}
}

// TestConformanceKickoffVariants: what Inferno and BDT expect to be
// accepted (202) and refused (4xx + OperationOutcome), GET and POST.
func TestConformanceKickoffVariants(t *testing.T) {
	h := conformanceServer(t)
	weekAgo := time.Now().Add(-7 * 24 * time.Hour).UTC()
	postAt := func(target string, params ...string) request {
		var ps []string
		for i := 0; i+1 < len(params); i += 2 {
			key := "valueString"
			if params[i] == "_since" {
				key = "valueInstant"
			}
			if params[i] == "patient" {
				ps = append(ps, fmt.Sprintf(`{"name":"patient","valueReference":{"reference":%q}}`, params[i+1]))
				continue
			}
			ps = append(ps, fmt.Sprintf(`{"name":%q,%q:%q}`, params[i], key, params[i+1]))
		}
		hdr := kickoffHeaders()
		hdr.Set("Content-Type", "application/json") // BDT's POST content type
		return request{method: "POST", target: target, header: hdr,
			body: `{"resourceType":"Parameters","parameter":[` + strings.Join(ps, ",") + `]}`}
	}
	get := func(query string) request {
		return request{method: "GET", target: "/fhir/$export?" + query, header: kickoffHeaders()}
	}
	post := func(params ...string) request { return postAt("/fhir/$export", params...) }
	getAt := func(target string) request { return request{method: "GET", target: target, header: kickoffHeaders()} }
	accepted := map[string]request{
		"outputFormat fhir+ndjson":   get("_outputFormat=application%2Ffhir%2Bndjson"),
		"outputFormat ndjson type":   get("_outputFormat=application%2Fndjson"),
		"outputFormat ndjson":        get("_outputFormat=ndjson"),
		"outputFormat unencoded +":   get("_outputFormat=application/fhir+ndjson"),
		"since a week ago":           get("_since=" + weekAgo.Format(time.RFC3339)),
		"since unencoded + offset":   get("_since=" + weekAgo.In(time.FixedZone("", 5*3600)).Format("2006-01-02T15:04:05") + "+05:00"),
		"type repeated":              get("_type=Patient&_type=Observation"),
		"elements repeated":          get("_type=Patient&_elements=id&_elements=Patient.meta"),
		"POST empty parameter array": post(),
		"POST type and since":        post("_type", "Patient", "_type", "Observation", "_since", weekAgo.Format(time.RFC3339)),
		"includeAssociatedData":      get("includeAssociatedData=LatestProvenanceResources,RelevantProvenanceResources"),
		"Patient level":              getAt("/fhir/Patient/$export?_type=Patient,Observation&organizeOutputBy=Patient"),
		"POST Patient level patients": postAt("/fhir/Patient/$export", "patient", "Patient/p1", "patient", "Patient/p2",
			"includeAssociatedData", "RelevantProvenanceResources"),
		"typeFilter":                get("_type=Observation&_typeFilter=Observation%3Fcategory%3Dlaboratory"),
		"typeFilter repeated":       get("_typeFilter=Observation%3Fcategory%3Dlaboratory&_typeFilter=Observation%3Fstatus%3Dfinal"),
		"typeFilter 2.0 comma list": get("_typeFilter=Observation%3Fstatus%3Dfinal%2Camended,MedicationRequest%3Fstatus%3Dactive"),
		"POST typeFilter":           post("_typeFilter", "MedicationRequest?status=active", "_typeFilter", "Encounter?date=ge2024-01-01"),
		"Patient level typeFilter":  getAt("/fhir/Patient/$export?_typeFilter=Observation%3Fdate%3Dge2020&_typeFilter=Patient%3Fgender%3Dfemale"),
	}
	for name, req := range accepted {
		t.Run(name, func(t *testing.T) {
			statusURL := kickoffOK(t, h, req)
			// Inferno deletes each job right away.
			checkOutcomeSeverity(t, serve(h, request{method: "DELETE", target: local(t, statusURL)}), contentTypeFHIR, http.StatusAccepted, "information")
			checkOutcome(t, serve(h, request{method: "GET", target: local(t, statusURL)}), http.StatusNotFound, "no such export job")
		})
	}
	refused := map[string]struct {
		req  request
		diag string
	}{
		"outputFormat xml":                        {get("_outputFormat=application%2Fxml"), "is not supported"},
		"outputFormat html":                       {get("_outputFormat=text%2Fhtml"), "is not supported"},
		"outputFormat x-custom":                   {get("_outputFormat=x-custom"), "is not supported"},
		"since invalid":                           {get("_since=0000-60-01T30%3A70%3A80%2B05%3A00"), "is not a FHIR instant"},
		"since future":                            {get("_since=2057-01-01T00%3A00%3A00%2B05%3A00"), "is in the future"},
		"since date only":                         {get("_since=2025-01-01"), "is not a FHIR instant"},
		"POST since invalid":                      {post("_since", "0000-60-01T30:70:80+05:00"), "is not a FHIR instant"},
		"POST since future":                       {post("_since", "2057-01-01T00:00:00+05:00"), "is in the future"},
		"type missing":                            {get("_type=MissingType"), "is not a FHIR R4 resource type"},
		"POST type missing":                       {post("_type", "MissingType"), "is not a FHIR R4 resource type"},
		"POST patient":                            {post("patient", "Patient/p1", "patient", "Patient/p2"), "patient is for [base]/Patient/$export and [base]/Group/[id]/$export"},
		"POST patient not a Patient":              {postAt("/fhir/Patient/$export", "patient", "Group/g1"), "is not a Patient reference"},
		"typeFilter unknown parameter":            {get("_typeFilter=Patient%3Fstatus%3Dactive"), "Patient has no search parameter status"},
		"typeFilter result parameter":             {get("_typeFilter=Observation%3Fcategory%3Dlaboratory%26_count%3D10"), "_count"},
		"POST typeFilter chain":                   {post("_typeFilter", "Observation?subject.name=x"), "subject.name"},
		"organizeOutputBy":                        {get("organizeOutputBy=Patient"), "organizeOutputBy=Patient is supported at Patient and Group level"},
		"allowPartialManifests":                   {get("allowPartialManifests=true"), "not supported yet"},
		"includeAssociatedData _none and another": {get("includeAssociatedData=_none,LatestProvenanceResources"), "contradicts LatestProvenanceResources"},
		"includeAssociatedData server code":       {get("includeAssociatedData=_custom"), `includeAssociatedData "_custom" is not supported`},
		"Group id not a FHIR id":                  {getAt("/fhir/Group/a_b/$export"), "is not a FHIR id"},
		"unknown parameter":                       {get("_count=10"), "unknown parameter"},
		"POST not Parameters":                     {request{method: "POST", target: "/fhir/$export", header: postHeaders(), body: `{"resourceType":"Patient"}`}, "Parameters"},
		"until before since":                      {get("_since=2025-01-02T00:00:00Z&_until=2025-01-01T00:00:00Z"), "is not later than _since"},
		"outputFormat twice":                      {get("_outputFormat=ndjson&_outputFormat=ndjson"), "at most once"},
		"lenient still refuses a bad _since": {request{method: "GET", target: "/fhir/$export?_since=yesterday",
			header: http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async, handling=lenient"}}}, "is not a FHIR instant"},
	}
	for name, tt := range refused {
		t.Run(name, func(t *testing.T) {
			checkOutcome(t, serve(h, tt.req), http.StatusBadRequest, tt.diag)
		})
	}
	// The real manager's answer for a Group it does not hold.
	oo := checkOutcome(t, serve(h, getAt("/fhir/Group/no-such-group/$export")), http.StatusNotFound, "Group/no-such-group is not on this server")
	if oo.Issue[0].Code != "not-found" {
		t.Errorf("unknown Group: code %q, want not-found", oo.Issue[0].Code)
	}
}

// TestConformancePatientLevel: a Patient-level kick-off with
// organizeOutputBy=Patient, through the real manager, completes with a
// manifest echoing the request, saying outputOrganizedBy and giving its
// output items no type.
func TestConformancePatientLevel(t *testing.T) {
	h := conformanceServer(t)
	target := "/fhir/Patient/$export?organizeOutputBy=Patient"
	m := awaitManifest(t, h, kickoffOK(t, h, request{method: "GET", target: target, header: kickoffHeaders()}))
	if m.Request != testPublicURL+target || m.OutputOrganizedBy != "Patient" {
		t.Errorf("request %q outputOrganizedBy %q, want %q and Patient", m.Request, m.OutputOrganizedBy, testPublicURL+target)
	}
	var ids []string
	headers := 0
	for _, f := range m.Output {
		for _, line := range download(t, h, f.URL) {
			if line["resourceType"] == "Parameters" { // a block's header
				headers++
				continue
			}
			ids = append(ids, fmt.Sprint(line["resourceType"], "/", line["id"]))
		}
	}
	slices.Sort(ids)
	if want := []string{"Patient/p1", "Patient/p2"}; !slices.Equal(ids, want) || headers != 2 {
		t.Errorf("exported %q in %d blocks, want %q in 2 (the Observation is in no compartment)", ids, headers, want)
	}
}

// TestConformanceAssociatedData: includeAssociatedData's Provenance file,
// named in the manifest, can be downloaded, through the real manager.
func TestConformanceAssociatedData(t *testing.T) {
	h := realServer(t,
		change{"Patient", "p1", `{"resourceType":"Patient","id":"p1"}`},
		change{"Provenance", "v1", `{"resourceType":"Provenance","id":"v1","target":[{"reference":"Patient/p1"}],"recorded":"2026-01-01T00:00:00Z","agent":[{"who":{"display":"x"}}]}`},
	)
	m := awaitManifest(t, h, kickoffOK(t, h, request{method: "GET",
		target: "/fhir/Patient/$export?_type=Patient&includeAssociatedData=LatestProvenanceResources", header: kickoffHeaders()}))
	var got []string
	for _, f := range m.Output {
		for _, line := range download(t, h, f.URL) {
			got = append(got, fmt.Sprint(f.Type, ":", line["resourceType"], "/", line["id"]))
		}
	}
	slices.Sort(got)
	if want := []string{"Patient:Patient/p1", "Provenance:Provenance/v1"}; !slices.Equal(got, want) {
		t.Errorf("downloaded %q, want %q", got, want)
	}
}

// TestConformanceOrganizedDeletions: the deleted files of an
// organizeOutputBy=Patient _since export are listed and downloadable,
// through the real manager.
func TestConformanceOrganizedDeletions(t *testing.T) {
	h := realServer(t,
		change{"Patient", "p1", `{"resourceType":"Patient","id":"p1"}`},
		change{"Patient", "p2", `{"resourceType":"Patient","id":"p2"}`},
		change{"Patient", "p2", ""},
	)
	m := awaitManifest(t, h, kickoffOK(t, h, request{method: "GET",
		target: "/fhir/Patient/$export?organizeOutputBy=Patient&_since=2000-01-01T00:00:00Z", header: kickoffHeaders()}))
	var got []string
	for _, raw := range m.Deleted {
		var f struct{ URL string }
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		for _, line := range download(t, h, f.URL) {
			for _, e := range line["entry"].([]any) {
				got = append(got, e.(map[string]any)["request"].(map[string]any)["url"].(string))
			}
		}
	}
	if want := []string{"Patient/p2"}; !slices.Equal(got, want) {
		t.Errorf("deleted %q, want %q", got, want)
	}
}
