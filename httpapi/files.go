package httpapi

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/julienschmidt/httprouter"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/internal/fhir"
)

// file serves GET and HEAD [base]/bulkfiles/:id/:name (the IG's file
// request, https://hl7.org/fhir/uv/bulkdata/export.html): identity
// through http.ServeContent (Range, If-Range, conditional requests), or,
// when the client accepts gzip and asks for no range, a gzip stream.
func (a *api) file(w http.ResponseWriter, r *http.Request) {
	ps := httprouter.ParamsFromContext(r.Context())
	id, name := ps.ByName("id"), ps.ByName("name")
	if !validFileName(name) || id == "" {
		a.respondError(w, r, export.ErrNotFound)
		return
	}
	typ, ok := fileType(name)
	if !ok {
		// Not a name export ever writes: never in a manifest.
		a.respondError(w, r, export.ErrNotFound)
		return
	}
	if p := principalFrom(r.Context()); p != nil && typ != "" && !p.scopes.Allows(typ) {
		// Decided from the name alone, before the job is looked up, so
		// the answer says nothing about whether the job or file exists.
		a.respondError(w, r, forbiddenFile(r, typ))
		return
	}
	f, err := a.cfg.Jobs.OpenFile(clientID(r), id, name)
	if err != nil {
		a.respondError(w, r, err)
		return
	}
	defer f.Close()

	h := w.Header()
	h.Set("Content-Type", contentTypeNDJSON)
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept-Encoding")
	digest := f.Digest()
	if r.Header.Get("Range") == "" && acceptsGzip(r.Header.Values("Accept-Encoding")) {
		a.serveGzip(w, r, f, digest)
	} else {
		// The SHA-256 recorded when the file was written identifies its
		// bytes: a strong validator for If-Range and If-None-Match, and a
		// client can check a download against it. (Without a recorded
		// digest: the file never changes once listed in a manifest, so
		// name, size and time identify its bytes too.)
		if digest != "" {
			h.Set("ETag", `"`+digest+`"`)
		} else {
			h.Set("ETag", etag(id, name, f))
		}
		ei := &errorIntercept{ResponseWriter: w}
		http.ServeContent(ei, r, name, f.ModTime(), f)
		if ei.status != 0 {
			// ServeContent's own errors (416, 412, a failed Seek) come as
			// text; answer them as OperationOutcomes too.
			diag := strings.TrimSpace(ei.msg.String())
			if diag == "" {
				diag = http.StatusText(ei.status)
			}
			h.Del("ETag")
			h.Del("Last-Modified")
			a.respondError(w, r, &httpError{status: ei.status, code: issueCodeFor(ei.status), diag: diag})
		}
	}
	if status, n := written(w); r.Method == http.MethodGet && (status == http.StatusOK || status == http.StatusPartialContent) {
		a.metrics.filesServed.Inc()
		a.metrics.fileBytes.Add(float64(n))
	}
}

// fileType returns the resource type whose data a file holds, from the
// names export writes (see export's package doc, "Files"):
// <Type>-<n>.ndjson (resources of Type), <Type>-deleted-<n>.ndjson
// (deletions of Type: reading them needs the same scope as reading
// Type), Provenance-associated-<n>.ndjson (includeAssociatedData:
// Provenance), error-<n>.ndjson ("": OperationOutcomes about the request
// itself, which its owner may always read) and Patient-blocks-<n>.ndjson
// and Patient-blocks-deleted-<n>.ndjson ("": organizeOutputBy=Patient
// blocks, and their deletions, mix the job's types, which its kick-off
// already limited to what the owner's token granted). ok is
// false for any other name.
func fileType(name string) (typ string, ok bool) {
	base, found := strings.CutSuffix(name, ".ndjson")
	if !found {
		return "", false
	}
	i := strings.LastIndexByte(base, '-')
	if i < 0 || !allDigits(base[i+1:]) {
		return "", false
	}
	switch base[:i] {
	case "error", "Patient-blocks", "Patient-blocks-deleted":
		return "", true
	case "Provenance-associated":
		return "Provenance", true
	}
	typ = strings.TrimSuffix(base[:i], "-deleted")
	if !fhir.IsResourceType(typ) {
		return "", false
	}
	return typ, true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validFileName rejects anything that could step out of the job's
// directory; such names never appear in a manifest, so they are 404.
func validFileName(name string) bool {
	return name != "" && name != "." && !strings.ContainsAny(name, "/\\\x00") && !strings.Contains(name, "..")
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

// serveGzip streams f compressed. BestSpeed: the files are large NDJSON,
// which compresses well even at level 1, and CPU is the limit here. There
// is no Content-Length (it is unknown until the end) and no Range.
//
// The ETag, when the file has a recorded digest, is the identity one made
// weak, W/"<digest>" (what nginx does when it compresses): RFC 9110
// section 8.8.3 wants a strong validator to change with the content
// coding, and the compressed bytes depend on the compressor, so no strong
// one can be promised; a weak validator only claims semantic equivalence
// (section 8.8.1), which the gzip and identity representations of one
// file have. It serves If-None-Match (weak comparison, section 13.1.2:
// 304) and lets a client check the decompressed bytes against the
// digest; Range and If-Range, which need a strong validator, are served
// by the identity path only.
func (a *api) serveGzip(w http.ResponseWriter, r *http.Request, f export.File, digest string) {
	h := w.Header()
	if mt := f.ModTime(); !mt.IsZero() {
		h.Set("Last-Modified", mt.UTC().Format(http.TimeFormat))
	}
	if digest != "" {
		tag := `W/"` + digest + `"`
		h.Set("ETag", tag)
		if inm := r.Header.Get("If-None-Match"); inm != "" && weakMatch(inm, digest) {
			h.Del("Content-Type") // as http.ServeContent's 304
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h.Set("Content-Encoding", "gzip")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(w)
	buf := make([]byte, 64<<10)
	_, err := io.CopyBuffer(zw, ctxReader{r.Context(), f}, buf)
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		// The status line is gone; the client sees a truncated gzip
		// stream, which fails its CRC check.
		a.log.Debug("gzip download interrupted", "job", httprouter.ParamsFromContext(r.Context()).ByName("id"), "error", err)
		zw.Reset(io.Discard)
		return
	}
	_ = http.NewResponseController(w).Flush()
}

// weakMatch reports whether an If-None-Match value matches the entity tag
// with opaque-tag digest under weak comparison (RFC 9110 section 8.8.3.2:
// W/ prefixes ignored): "*" or any listed tag.
func weakMatch(ifNoneMatch, digest string) bool {
	for _, t := range splitList(ifNoneMatch) {
		if t == "*" || strings.TrimPrefix(t, "W/") == `"`+digest+`"` {
			return true
		}
	}
	return false
}

// ctxReader stops a copy once the request's context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// acceptsGzip reports whether Accept-Encoding allows gzip: "gzip" or
// "x-gzip" with q > 0, or "*" with q > 0 when gzip is not listed.
func acceptsGzip(values []string) bool {
	gz, star := -1.0, -1.0
	for _, v := range values {
		for _, c := range splitList(v) {
			coding, params, _ := strings.Cut(c, ";")
			switch strings.ToLower(strings.TrimSpace(coding)) {
			case "gzip", "x-gzip":
				gz = paramQ(params)
			case "*":
				star = paramQ(params)
			}
		}
	}
	if gz >= 0 {
		return gz > 0
	}
	return star > 0
}

func etag(id, name string, f export.File) string {
	h := fnv.New64a()
	io.WriteString(h, id)
	io.WriteString(h, "/")
	io.WriteString(h, name)
	return `"` + hex.EncodeToString(h.Sum(nil)) + "-" + strconv.FormatInt(f.Size(), 36) + "-" +
		strconv.FormatInt(f.ModTime().UnixNano(), 36) + `"`
}

// errorIntercept swallows an error status and text that http.ServeContent
// writes, so the handler can answer with an OperationOutcome instead.
type errorIntercept struct {
	http.ResponseWriter
	status int
	msg    strings.Builder
}

func (e *errorIntercept) WriteHeader(code int) {
	if code >= 400 && e.status == 0 {
		e.status = code
		h := e.Header()
		h.Del("Content-Type") // http.Error's text/plain
		h.Del("X-Content-Type-Options")
		return
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *errorIntercept) Write(p []byte) (int, error) {
	if e.status != 0 {
		if e.msg.Len() < 512 {
			e.msg.Write(p)
		}
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

// ReadFrom keeps sendfile for the identity path.
func (e *errorIntercept) ReadFrom(src io.Reader) (int64, error) {
	if e.status != 0 {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := e.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{e.ResponseWriter}, src)
}

func (e *errorIntercept) Unwrap() http.ResponseWriter { return e.ResponseWriter }

func issueCodeFor(status int) string {
	switch status {
	case http.StatusRequestedRangeNotSatisfiable:
		return "value"
	case http.StatusPreconditionFailed:
		return "conflict"
	case http.StatusNotFound:
		return "not-found"
	}
	if status >= 500 {
		return "exception"
	}
	return "invalid"
}
