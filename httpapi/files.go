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
)

// file serves GET and HEAD [base]/bulkfiles/:id/:name (SPEC 6): identity
// through http.ServeContent (Range, If-Range, conditional requests), or,
// when the client accepts gzip and asks for no range, a gzip stream.
func (a *api) file(w http.ResponseWriter, r *http.Request) {
	ps := httprouter.ParamsFromContext(r.Context())
	id, name := ps.ByName("id"), ps.ByName("name")
	if !validFileName(name) || id == "" {
		a.respondError(w, r, export.ErrNotFound)
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
	if r.Header.Get("Range") == "" && acceptsGzip(r.Header.Values("Accept-Encoding")) {
		a.serveGzip(w, r, f)
	} else {
		// The file never changes once listed in a manifest, so name,
		// size and time identify its bytes: a strong validator for
		// If-Range and If-None-Match.
		h.Set("ETag", etag(id, name, f))
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
// is no Content-Length (it is unknown until the end), no ETag (the bytes
// differ from the identity representation's) and no Range.
func (a *api) serveGzip(w http.ResponseWriter, r *http.Request, f export.File) {
	h := w.Header()
	h.Set("Content-Encoding", "gzip")
	h.Del("Content-Length")
	if mt := f.ModTime(); !mt.IsZero() {
		h.Set("Last-Modified", mt.UTC().Format(http.TimeFormat))
	}
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
				gz = qvalue(params)
			case "*":
				star = qvalue(params)
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
