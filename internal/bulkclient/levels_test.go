package bulkclient

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// kickoffSeen is what a test server saw of one kick-off.
type kickoffSeen struct {
	method, path, rawPath, query, contentType, body string
}

// kickoffServer answers every kick-off 202 and records it.
func kickoffServer(t *testing.T) (*httptest.Server, func() kickoffSeen) {
	t.Helper()
	var mu sync.Mutex
	var last kickoffSeen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = kickoffSeen{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), string(b)}
		mu.Unlock()
		w.Header().Set("Content-Location", "/fhir/status/1")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv, func() kickoffSeen {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// TestKickoffLevels: each level and parameter combination goes to the
// level's path, with the method and body the IG asks for: patient only in
// a POST Parameters body (so it forces POST), includeAssociatedData as a
// comma list on GET and one valueCode per value on POST.
func TestKickoffLevels(t *testing.T) {
	srv, last := kickoffServer(t)
	c := newTestClient(t, srv.URL+"/fhir/")
	for _, tc := range []struct {
		name string
		req  Request
		want kickoffSeen
	}{
		{"system GET", Request{Types: []string{"Patient"}},
			kickoffSeen{method: "GET", path: "/fhir/$export", query: "_type=Patient"}},
		{"group GET", Request{Group: "NeighborhoodHealthPlan", Types: []string{"Patient", "Observation"}, Since: "2026-01-01T00:00:00Z"},
			kickoffSeen{method: "GET", path: "/fhir/Group/NeighborhoodHealthPlan/$export", query: "_since=2026-01-01T00%3A00%3A00Z&_type=Patient%2CObservation"}},
		{"group id escaped", Request{Group: "a/b c?d"},
			kickoffSeen{method: "GET", path: "/fhir/Group/a/b c?d/$export", rawPath: "/fhir/Group/a%2Fb%20c%3Fd/$export"}},
		{"patient level GET", Request{PatientLevel: true, IncludeAssociatedData: []string{"LatestProvenanceResources", "RelevantProvenanceResources"}},
			kickoffSeen{method: "GET", path: "/fhir/Patient/$export", query: "includeAssociatedData=LatestProvenanceResources%2CRelevantProvenanceResources"}},
		{"patient level POST", Request{PatientLevel: true, Post: true, Types: []string{"Observation"}, IncludeAssociatedData: []string{"LatestProvenanceResources", "_none"}},
			kickoffSeen{method: "POST", path: "/fhir/Patient/$export", contentType: "application/fhir+json",
				body: `{"parameter":[{"name":"_type","valueString":"Observation"},{"name":"includeAssociatedData","valueCode":"LatestProvenanceResources"},{"name":"includeAssociatedData","valueCode":"_none"}],"resourceType":"Parameters"}`}},
		{"patients force POST", Request{PatientLevel: true, Patients: []string{"p1", "Patient/p2"}},
			kickoffSeen{method: "POST", path: "/fhir/Patient/$export", contentType: "application/fhir+json",
				body: `{"parameter":[{"name":"patient","valueReference":{"reference":"Patient/p1"}},{"name":"patient","valueReference":{"reference":"Patient/p2"}}],"resourceType":"Parameters"}`}},
		{"group patients", Request{Group: "g1", Patients: []string{"Patient/p3"}, Since: "2026-01-01T00:00:00Z", IncludeAssociatedData: []string{"RelevantProvenanceResources"}},
			kickoffSeen{method: "POST", path: "/fhir/Group/g1/$export", contentType: "application/fhir+json",
				body: `{"parameter":[{"name":"_since","valueInstant":"2026-01-01T00:00:00Z"},{"name":"patient","valueReference":{"reference":"Patient/p3"}},{"name":"includeAssociatedData","valueCode":"RelevantProvenanceResources"}],"resourceType":"Parameters"}`}},
		// _typeFilter: repeated, never comma-joined (a comma inside a
		// query is the query's own value OR), one valueString each on POST.
		{"type filters GET", Request{Types: []string{"Observation", "Condition"}, TypeFilters: []string{
			"Observation?category=laboratory", "Condition?clinical-status=active,recurrence&onset-date=ge2015"}},
			kickoffSeen{method: "GET", path: "/fhir/$export", query: "_type=Observation%2CCondition" +
				"&_typeFilter=Observation%3Fcategory%3Dlaboratory&_typeFilter=Condition%3Fclinical-status%3Dactive%2Crecurrence%26onset-date%3Dge2015"}},
		{"type filters POST", Request{Group: "g1", Post: true, TypeFilters: []string{"Condition?clinical-status=active", "Condition?onset-date=ge2015"}},
			kickoffSeen{method: "POST", path: "/fhir/Group/g1/$export", contentType: "application/fhir+json",
				body: `{"parameter":[{"name":"_typeFilter","valueString":"Condition?clinical-status=active"},{"name":"_typeFilter","valueString":"Condition?onset-date=ge2015"}],"resourceType":"Parameters"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Kickoff(t.Context(), tc.req); err != nil {
				t.Fatal(err)
			}
			got := last()
			if tc.want.rawPath == "" {
				tc.want.rawPath = tc.want.path
			}
			if got != tc.want {
				t.Errorf("kick-off\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestKickoffLevelErrors: contradictory levels and misplaced or malformed
// patients are refused before any request, by an error naming the field.
func TestKickoffLevelErrors(t *testing.T) {
	srv, last := kickoffServer(t)
	c := newTestClient(t, srv.URL+"/fhir")
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Group: "g", PatientLevel: true}, "Request.Group \"g\" and Request.PatientLevel exclude each other"},
		{Request{Patients: []string{"p1"}}, "Request.Patients needs Request.Group or Request.PatientLevel"},
		{Request{PatientLevel: true, Patients: []string{"p1", "Patient/"}}, "Request.Patients[1]: \"Patient/\" names no patient id"},
		{Request{Group: "g", Patients: []string{"Group/g2"}}, "Request.Patients[0]: \"Group/g2\" is neither a patient id nor Patient/<id>"},
		{Request{PatientLevel: true, IncludeAssociatedData: []string{"a,b"}}, "Request.IncludeAssociatedData[0] \"a,b\" is not one code"},
		{Request{TypeFilters: []string{"Observation?category=laboratory", "category=laboratory"}},
			"Request.TypeFilters[1] \"category=laboratory\" is not a search query <Type>?<param>=<value>"},
		{Request{TypeFilters: []string{"Observation?"}}, "Request.TypeFilters[0] \"Observation?\" is not a search query"},
		{Request{TypeFilters: []string{"Observation,Condition?code=x"}}, "Request.TypeFilters[0]"},
	} {
		_, err := c.Kickoff(t.Context(), tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.req, err, tc.want)
		}
	}
	if got := last(); got != (kickoffSeen{}) {
		t.Errorf("a refused request reached the server: %+v", got)
	}
}

// TestManifestOutputOrganizedBy: the manifest field of organizeOutputBy
// is read, and absent from a manifest that had none.
func TestManifestOutputOrganizedBy(t *testing.T) {
	var m Manifest
	if err := json.Unmarshal([]byte(`{"transactionTime":"t","request":"r","outputOrganizedBy":"Patient","output":[{"url":"u"}]}`), &m); err != nil {
		t.Fatal(err)
	}
	if m.OutputOrganizedBy != "Patient" || m.Output[0].Type != "" {
		t.Errorf("manifest %+v", m)
	}
	b, err := json.Marshal(Manifest{TransactionTime: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "outputOrganizedBy") {
		t.Errorf("empty outputOrganizedBy marshalled: %s", b)
	}
}

// TestRequestStateKey: system-level keys are what StateKey always gave
// (state files stay valid); each level, Group, patient list and
// _typeFilter set has its own key.
func TestRequestStateKey(t *testing.T) {
	base := "https://bulk.example.org/fhir/"
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{}, "https://bulk.example.org/fhir"},
		{Request{Types: []string{"Patient", "Condition"}}, "https://bulk.example.org/fhir?_type=Condition,Patient"},
		{Request{Group: "g 1"}, "https://bulk.example.org/fhir/Group/g%201/$export"},
		{Request{Group: "g2", Types: []string{"Observation"}}, "https://bulk.example.org/fhir/Group/g2/$export?_type=Observation"},
		{Request{PatientLevel: true}, "https://bulk.example.org/fhir/Patient/$export"},
		{Request{PatientLevel: true, Types: []string{"Observation"}, Patients: []string{"b", "Patient/a", "Patient/b"}},
			"https://bulk.example.org/fhir/Patient/$export?_type=Observation&patient=Patient/a,Patient/b"},
		{Request{Group: "g2", Patients: []string{"a"}}, "https://bulk.example.org/fhir/Group/g2/$export?patient=Patient/a"},
		{Request{TypeFilters: []string{"Observation?code=a&date=ge2020", "Condition?x=1", "Observation?code=a&date=ge2020"}},
			"https://bulk.example.org/fhir?_typeFilter=Condition%3Fx%3D1&_typeFilter=Observation%3Fcode%3Da%26date%3Dge2020"},
		{Request{Group: "g2", Types: []string{"Observation"}, Patients: []string{"a"}, TypeFilters: []string{"Observation?category=laboratory"}},
			"https://bulk.example.org/fhir/Group/g2/$export?_type=Observation&patient=Patient/a&_typeFilter=Observation%3Fcategory%3Dlaboratory"},
	} {
		if got := RequestStateKey(base, tc.req); got != tc.want {
			t.Errorf("%+v: key %q, want %q", tc.req, got, tc.want)
		}
	}
}
