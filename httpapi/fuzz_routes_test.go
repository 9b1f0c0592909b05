package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// fuzzJobServer is a handler over a real export.Manager and index holding
// one completed job; it returns the job's id and one of its file names.
func fuzzJobServer(f *testing.F) (h http.Handler, jobID, fileName string) {
	x := indextest.Open(f)
	at := time.Now().Add(-time.Hour).UTC()
	changes := []index.Change{
		{Seq: 1, Time: at, Type: "Patient", ID: "p1", Body: []byte(`{"resourceType":"Patient","id":"p1"}`)},
		{Seq: 2, Time: at.Add(time.Millisecond), Type: "Observation", ID: "o1", Body: []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}}`)},
		{Seq: 3, Time: at.Add(2 * time.Millisecond), Type: "Patient", ID: "p2", Delete: true},
	}
	if _, err := x.Apply(f.Context(), changes, 0); err != nil {
		f.Fatal(err)
	}
	m := startManager(f, x, len(changes))
	h = New(Config{Jobs: m, PublicURL: testPublicURL, Version: "test"})
	statusURL := kickoffOK(f, h, request{method: "GET", target: "/fhir/$export?_since=2000-01-01T00:00:00Z", header: kickoffHeaders()})
	man := awaitManifest(f, h, statusURL)
	if len(man.Output) == 0 {
		f.Fatal("the seed job has no output")
	}
	jobID = strings.TrimPrefix(local(f, statusURL), "/fhir/bulkstatus/")
	u := local(f, man.Output[0].URL)
	fileName = u[strings.LastIndexByte(u, '/')+1:]
	return h, jobID, fileName
}

// FuzzJobRoutes throws paths, methods and headers at the status, cancel
// and file routes of a real manager with one completed job: never a
// panic, never a 5xx, and every refusal is an OperationOutcome.
func FuzzJobRoutes(f *testing.F) {
	h, jobID, name := fuzzJobServer(f)
	methods := []string{"GET", "HEAD", "DELETE", "POST", "PUT", "OPTIONS", "PATCH", "get", "X\x00"}
	for _, s := range []struct {
		method            uint8
		files             bool
		id, name          string
		accept, rng, cond string
		enc               string
	}{
		{0, false, jobID, "", "application/json", "", "", ""},
		{1, false, jobID, "", "", "", "", ""},
		{0, false, "no-such-job", "", "application/json", "", "", ""},
		{2, false, "../../etc", "", "", "", "", ""},
		{0, true, jobID, name, "", "", "", "gzip"},
		{0, true, jobID, name, "", "bytes=0-3", "", ""},
		{0, true, jobID, name, "", "bytes=10000-", "", ""},
		{0, true, jobID, name, "", "bytes=-5,0-1,3-2", `"x"`, ""},
		{1, true, jobID, name, "", "", `W/"*"`, "gzip;q=0, identity"},
		{0, true, jobID, "..%2f" + name, "", "", "", ""},
		{0, true, jobID, name + "/", "", "", "", ""},
		{0, true, jobID + "\x00", "\\x", "", "bytes=0-0", "*", "*"},
		{3, true, jobID, name, "", "", "", ""},
		{5, false, "", "", "", "", "", ""},
		{8, false, jobID, "", "", "", "", ""},
	} {
		f.Add(s.method, s.files, s.id, s.name, s.accept, s.rng, s.cond, s.enc)
	}
	f.Fuzz(func(t *testing.T, mi uint8, files bool, id, fname, accept, rng, cond, enc string) {
		method := methods[int(mi)%len(methods)]
		if method == "DELETE" && id == jobID {
			id += "x" // keep the seed job for the rest of this worker's inputs
		}
		path := "/fhir/bulkstatus/" + id
		if files {
			path = "/fhir/bulkfiles/" + id + "/" + fname
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Method = method
		// The server unescapes the target: any bytes can reach Path.
		r.URL = &url.URL{Path: path}
		r.RequestURI = r.URL.EscapedPath()
		for k, v := range map[string]string{"Accept": accept, "Range": rng, "If-None-Match": cond, "If-Range": cond, "Accept-Encoding": enc} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		code := rec.Code
		if code >= 500 {
			t.Fatalf("%s %q: status %d: %s", method, path, code, rec.Body)
		}
		if code < 400 || method == "HEAD" {
			return
		}
		if ct := rec.Header().Get("Content-Type"); !outcomeTypeOK(ct, accept) {
			t.Fatalf("%s %q: status %d with Content-Type %q for Accept %q: %s", method, path, code, ct, accept, rec.Body)
		}
		var oo outcome
		dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 ||
			oo.Issue[0].Severity == "" || oo.Issue[0].Code == "" || oo.Issue[0].Diagnostics == "" {
			t.Fatalf("%s %q: status %d body is not an OperationOutcome (%v): %s", method, path, code, err, rec.Body)
		}
	})
}
