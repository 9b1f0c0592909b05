package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"
)

// recorder remembers what a handler answered, for logs and metrics.
type recorder struct {
	http.ResponseWriter
	route       string // pattern of the matched route, set by route()
	client      string // authenticated client id, set by requireToken and token
	status      int
	bytes       int64
	wroteHeader bool
}

func (rec *recorder) WriteHeader(code int) {
	if !rec.wroteHeader {
		rec.status = code
		rec.wroteHeader = code >= 200 // 1xx are interim
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(p []byte) (int, error) {
	if !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK)
	}
	n, err := rec.ResponseWriter.Write(p)
	rec.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's fast path (sendfile) for
// http.ServeContent.
func (rec *recorder) ReadFrom(src io.Reader) (int64, error) {
	if !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := rec.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{rec.ResponseWriter}, src)
	}
	rec.bytes += n
	return n, err
}

// Flush lets handlers flush through the wrapper; ResponseController finds
// the rest (deadlines) through Unwrap.
func (rec *recorder) Flush() {
	_ = http.NewResponseController(rec.ResponseWriter).Flush()
}

// Unwrap is for http.ResponseController.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// written returns the recorder behind w, if any.
func written(w http.ResponseWriter) (status int, bytes int64) {
	if rec, ok := w.(*recorder); ok {
		return rec.status, rec.bytes
	}
	return 0, 0
}

// setClient records the authenticated client id for the request's log
// line.
func setClient(w http.ResponseWriter, client string) {
	if rec, ok := w.(*recorder); ok {
		rec.client = client
	}
}

// quietRoutes are logged at debug level: probes and scrapes would drown
// the API's lines.
var quietRoutes = map[string]bool{"/metrics": true, "/healthz": true, "/readyz": true}

// instrument serves r with h, recovering panics (500 OperationOutcome),
// then writes one log line and the request metrics, labelled by route
// pattern.
func (a *api) instrument(w http.ResponseWriter, r *http.Request, h http.Handler) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, route: routeUnmatched}
	var abort any
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				abort = v
				if !rec.wroteHeader {
					rec.status = statusClientClosed
				}
			} else {
				a.log.Error("panic serving request", "route", rec.route, "method", r.Method,
					"panic", v, "stack", string(debug.Stack()))
				if !rec.wroteHeader {
					writeOutcome(rec, r, http.StatusInternalServerError,
						issue{Severity: "error", Code: "exception", Diagnostics: "internal server error"})
				}
				rec.status = http.StatusInternalServerError
			}
		}
		if rec.status == 0 {
			rec.status = http.StatusOK // nothing written: net/http sends 200
		}
		d := time.Since(start)
		method := r.Method
		if rec.route == routeUnmatched && !knownMethod(method) {
			method = "other" // bounded label values
		}
		code := strconv.Itoa(rec.status)
		a.metrics.requests.WithLabelValues(rec.route, method, code).Inc()
		a.metrics.duration.WithLabelValues(rec.route).Observe(d.Seconds())
		level := slog.LevelInfo
		if quietRoutes[rec.route] {
			level = slog.LevelDebug
		}
		attrs := append(make([]slog.Attr, 0, 6), // room for client: no allocation
			slog.String("route", rec.route), slog.String("method", r.Method),
			slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", d))
		if rec.client != "" {
			attrs = append(attrs, slog.String("client", rec.client))
		}
		a.log.LogAttrs(r.Context(), level, "http request", attrs...)
		if abort != nil {
			panic(abort) // net/http aborts the response quietly
		}
	}()
	h.ServeHTTP(rec, r)
}

func knownMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return true
	}
	return false
}
