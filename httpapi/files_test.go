package httpapi

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkstream/bulkstream/export"
)

func fileFixture(t *testing.T) (*fakeJobs, http.Handler, []byte) {
	t.Helper()
	var content bytes.Buffer
	for i := range 2000 {
		fmt.Fprintf(&content, `{"resourceType":"Patient","id":"p%d","active":true}`+"\n", i)
	}
	jobs := newFakeJobs()
	jobs.files["job-1/Patient-1.ndjson"] = content.Bytes()
	return jobs, newTestHandler(t, jobs, nil), content.Bytes()
}

const fileTarget = "/fhir/bulkfiles/job-1/Patient-1.ndjson"

func TestFilePlain(t *testing.T) {
	_, h, content := fileFixture(t)
	rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Accept": {"application/fhir+ndjson"}}})
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	for k, want := range map[string]string{
		"Content-Type":     "application/fhir+ndjson",
		"Content-Length":   fmt.Sprint(len(content)),
		"Content-Encoding": "",
		"Vary":             "Accept-Encoding",
		"Accept-Ranges":    "bytes",
		"Last-Modified":    "Thu, 26 Nov 2026 17:58:41 GMT",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !bytes.Equal(rec.Body.Bytes(), content) {
		t.Error("body differs from the file")
	}
	// gzip;q=0 and identity-only clients get the plain bytes too.
	for _, ae := range []string{"gzip;q=0", "identity", "br, deflate", "*;q=0", "gzip;q=0, *"} {
		rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Accept-Encoding": {ae}}})
		if rec.Header().Get("Content-Encoding") != "" || !bytes.Equal(rec.Body.Bytes(), content) {
			t.Errorf("Accept-Encoding %q: got Content-Encoding %q, want identity", ae, rec.Header().Get("Content-Encoding"))
		}
	}
}

func TestFileRangeResume(t *testing.T) {
	_, h, content := fileFixture(t)
	first := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Range": {"bytes=0-9999"}}})
	if first.Code != http.StatusPartialContent {
		t.Fatalf("status = %d, want 206", first.Code)
	}
	if got, want := first.Header().Get("Content-Range"), fmt.Sprintf("bytes 0-9999/%d", len(content)); got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}
	etag := first.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on the identity response")
	}
	// Resume with If-Range (gzip accepted, but a range means identity).
	rest := serve(h, request{method: "GET", target: fileTarget, header: http.Header{
		"Range": {"bytes=10000-"}, "If-Range": {etag}, "Accept-Encoding": {"gzip"}}})
	if rest.Code != http.StatusPartialContent || rest.Header().Get("Content-Encoding") != "" {
		t.Fatalf("resume = %d %q, want 206 identity", rest.Code, rest.Header().Get("Content-Encoding"))
	}
	if got := append(first.Body.Bytes(), rest.Body.Bytes()...); !bytes.Equal(got, content) {
		t.Errorf("the two ranges concatenated (%d bytes) differ from the file (%d bytes)", len(got), len(content))
	}
	// A stale validator gets the whole file.
	stale := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Range": {"bytes=10000-"}, "If-Range": {`"other"`}}})
	if stale.Code != http.StatusOK || !bytes.Equal(stale.Body.Bytes(), content) {
		t.Errorf("stale If-Range = %d, want 200 and the whole file", stale.Code)
	}
}

func TestFileGzip(t *testing.T) {
	_, h, content := fileFixture(t)
	for _, ae := range []string{"gzip", "deflate, gzip;q=0.5", "x-gzip", "*"} {
		rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Accept-Encoding": {ae}}})
		if rec.Code != http.StatusOK {
			t.Fatalf("%q: status = %d, want 200", ae, rec.Code)
		}
		for k, want := range map[string]string{"Content-Encoding": "gzip", "Vary": "Accept-Encoding",
			"Content-Type": "application/fhir+ndjson", "Content-Length": ""} {
			if got := rec.Header().Get(k); got != want {
				t.Errorf("%q: %s = %q, want %q", ae, k, got, want)
			}
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%q: decompressed body differs from the file", ae)
		}
		if rec.Body.Len() >= len(content) {
			t.Errorf("%q: compressed %d bytes to %d", ae, len(content), rec.Body.Len())
		}
	}
}

func TestFileHEAD(t *testing.T) {
	_, h, content := fileFixture(t)
	rec := serve(h, request{method: "HEAD", target: fileTarget})
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Fatalf("HEAD = %d with %d body bytes, want 200 and none", rec.Code, rec.Body.Len())
	}
	if got, want := rec.Header().Get("Content-Length"), fmt.Sprint(len(content)); got != want {
		t.Errorf("Content-Length = %q, want %q", got, want)
	}
	rec = serve(h, request{method: "HEAD", target: fileTarget, header: http.Header{"Accept-Encoding": {"gzip"}}})
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("gzip HEAD = %d %q with %d body bytes", rec.Code, rec.Header().Get("Content-Encoding"), rec.Body.Len())
	}
}

func TestFileConditional(t *testing.T) {
	_, h, _ := fileFixture(t)
	etag := serve(h, request{method: "GET", target: fileTarget}).Header().Get("ETag")
	rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"If-None-Match": {etag}}})
	if rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match = %d, want 304", rec.Code)
	}
	rec = serve(h, request{method: "GET", target: fileTarget, header: http.Header{"If-Match": {`"nope"`}}})
	checkOutcome(t, rec, http.StatusPreconditionFailed, "Precondition Failed")
	if rec.Header().Get("ETag") != "" {
		t.Error("error response carries the file's ETag")
	}
}

func TestValidFileName(t *testing.T) {
	for name, want := range map[string]bool{
		"Patient-1.ndjson": true, "deleted-1.ndjson": true,
		"": false, ".": false, "..": false, "../x": false, "a/b": false, `a\b`: false, "a..b": false, "a\x00": false,
	} {
		if got := validFileName(name); got != want {
			t.Errorf("validFileName(%q) = %v, want %v", name, got, want)
		}
	}
	if strings.Contains(fileTarget, "..") {
		t.Fatal("fixture broken")
	}
}

// TestFileDigestETag: a file with a recorded digest is served with it as
// the strong ETag (identity: If-None-Match, If-Range work on it) and as
// the weak W/"<digest>" on a gzip response, which honours If-None-Match
// by weak comparison.
func TestFileDigestETag(t *testing.T) {
	jobs, h, content := fileFixture(t)
	sum := sha256.Sum256(content)
	digest := hex.EncodeToString(sum[:])
	jobs.digests["job-1/Patient-1.ndjson"] = digest
	strong, weak := `"`+digest+`"`, `W/"`+digest+`"`

	plain := serve(h, request{method: "GET", target: fileTarget})
	if got := plain.Header().Get("ETag"); got != strong {
		t.Fatalf("identity ETag = %q, want the digest %q", got, strong)
	}
	if rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"If-None-Match": {strong}}}); rec.Code != http.StatusNotModified {
		t.Errorf("identity If-None-Match digest = %d, want 304", rec.Code)
	}
	rest := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Range": {"bytes=100-"}, "If-Range": {strong}}})
	if rest.Code != http.StatusPartialContent || !bytes.Equal(rest.Body.Bytes(), content[100:]) {
		t.Errorf("If-Range digest = %d, want 206 and the rest", rest.Code)
	}
	// A weak validator never satisfies If-Range (strong comparison).
	if rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Range": {"bytes=100-"}, "If-Range": {weak}}}); rec.Code != http.StatusOK {
		t.Errorf("If-Range weak = %d, want 200 (the whole file)", rec.Code)
	}

	gz := http.Header{"Accept-Encoding": {"gzip"}}
	rec := serve(h, request{method: "GET", target: fileTarget, header: gz})
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip = %d %q", rec.Code, rec.Header().Get("Content-Encoding"))
	}
	if got := rec.Header().Get("ETag"); got != weak {
		t.Errorf("gzip ETag = %q, want the weak %q", got, weak)
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != digest {
		t.Error("the decompressed body does not match the ETag's digest")
	}
	for _, inm := range []string{weak, strong, `"other", ` + weak, "*"} {
		h304 := gz.Clone()
		h304.Set("If-None-Match", inm)
		rec := serve(h, request{method: "GET", target: fileTarget, header: h304})
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("gzip If-None-Match %s = %d with %d bytes, want 304 and none", inm, rec.Code, rec.Body.Len())
		}
		if rec.Header().Get("ETag") != weak || rec.Header().Get("Content-Encoding") != "" {
			t.Errorf("gzip 304 headers: %v", rec.Header())
		}
	}
	h200 := gz.Clone()
	h200.Set("If-None-Match", `W/"other"`)
	if rec := serve(h, request{method: "GET", target: fileTarget, header: h200}); rec.Code != http.StatusOK {
		t.Errorf("gzip If-None-Match other = %d, want 200", rec.Code)
	}

	// Without a recorded digest: today's validator, and none on gzip.
	delete(jobs.digests, "job-1/Patient-1.ndjson")
	if got := serve(h, request{method: "GET", target: fileTarget}).Header().Get("ETag"); got == "" || got == strong {
		t.Errorf("identity ETag without a digest = %q, want the fallback", got)
	}
	if got := serve(h, request{method: "GET", target: fileTarget, header: gz}).Header().Get("ETag"); got != "" {
		t.Errorf("gzip ETag without a digest = %q, want none", got)
	}
}

// TestFileDamaged: a file that no longer matches its recorded digest is
// never served: 500 with an OperationOutcome telling to export again,
// logged at ERROR.
func TestFileDamaged(t *testing.T) {
	jobs := newFakeJobs()
	jobs.files["job-1/Patient-1.ndjson"] = []byte("{}\n")
	jobs.openErr = fmt.Errorf("job job-1 file Patient-1.ndjson: size 1, want 3: %w", export.ErrFileDamaged)
	var logs bytes.Buffer
	h := New(Config{Jobs: jobs, PublicURL: testPublicURL, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for _, ae := range []string{"", "gzip"} {
		rec := serve(h, request{method: "GET", target: fileTarget, header: http.Header{"Accept-Encoding": {ae}}})
		oo := checkOutcome(t, rec, http.StatusInternalServerError, "damaged")
		if iss := oo.Issue[0]; iss.Code != "exception" || !strings.Contains(iss.Diagnostics, "run the export again") {
			t.Errorf("issue = %+v, want exception telling to run the export again", iss)
		}
		if rec.Header().Get("ETag") != "" {
			t.Error("a damaged file's answer carries an ETag")
		}
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"export file damaged\"") || !strings.Contains(logs.String(), "size 1, want 3") {
		t.Errorf("log = %s, want an ERROR line with the cause", logs.String())
	}
}

func TestFileType(t *testing.T) {
	for name, want := range map[string]string{
		"Patient-1.ndjson": "Patient", "Observation-12.ndjson": "Observation",
		"Patient-deleted-1.ndjson": "Patient", "error-1.ndjson": "", "error-30.ndjson": "",
		// includeAssociatedData's Provenance, and organizeOutputBy=Patient
		// blocks (the job's types, limited at kick-off).
		"Provenance-associated-1.ndjson": "Provenance", "Patient-blocks-2.ndjson": "", "Patient-blocks-deleted-3.ndjson": "",
	} {
		if got, ok := fileType(name); !ok || got != want {
			t.Errorf("fileType(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"", "Patient.ndjson", "Patient-1.json", "Patient-x.ndjson", "Patient-.ndjson",
		"NotAType-1.ndjson", "error-deleted-1.ndjson", "deleted-1.ndjson", "Patient-deleted-deleted-1.ndjson",
		"Patient-1.ndjson.tmp", "patient-1.ndjson", "-1.ndjson", "Patient-1-1.ndjson",
		"Patient-blocks-x.ndjson", "Observation-blocks-1.ndjson", "Patient-associated-1.ndjson", "Provenance-associated-deleted-1.ndjson"} {
		if got, ok := fileType(name); ok {
			t.Errorf("fileType(%q) = %q, ok; want not a file name", name, got)
		}
	}
}
