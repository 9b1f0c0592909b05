package httpapi

import (
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// routeUnmatched labels requests no route pattern matched (404, 405,
// redirects, automatic OPTIONS), so raw paths never become label values.
const routeUnmatched = "unmatched"

// routes registers every route in one place. Each handler is tagged with
// its pattern, which instrument uses as the metric and log label.
func (a *api) routes() *httprouter.Router {
	r := httprouter.New()
	r.HandleMethodNotAllowed = true
	r.NotFound = http.HandlerFunc(a.notFound)
	r.MethodNotAllowed = http.HandlerFunc(a.methodNotAllowed)
	r.GlobalOPTIONS = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent) // httprouter has set Allow
	})
	handle := func(method, pattern string, h http.HandlerFunc) {
		r.Handler(method, pattern, route(pattern, h))
	}

	if a.cfg.Metrics != nil {
		handle(http.MethodGet, "/metrics", a.cfg.Metrics.ServeHTTP)
	}
	handle(http.MethodGet, "/healthz", a.healthz)
	handle(http.MethodGet, "/readyz", a.readyz)

	if a.cfg.Jobs == nil {
		return r
	}
	b := a.cfg.BasePath
	handle(http.MethodGet, b+"/$export", a.kickoff)
	handle(http.MethodPost, b+"/$export", a.kickoff)
	handle(http.MethodGet, b+"/bulkstatus/:id", a.status)
	handle(http.MethodDelete, b+"/bulkstatus/:id", a.cancel)
	handle(http.MethodGet, b+"/bulkfiles/:id/:name", a.file)
	handle(http.MethodHead, b+"/bulkfiles/:id/:name", a.file)
	handle(http.MethodGet, b+"/metadata", a.metadata)
	handle(http.MethodGet, b+"/OperationDefinition/export", a.serveDoc(func() []byte { return a.docs.exportOp }))
	handle(http.MethodGet, b+"/OperationDefinition/bulk-export", a.serveDoc(func() []byte { return a.docs.bulkExportOp }))
	return r
}

// route tags the request's recorder with the matched pattern.
func route(pattern string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.route = pattern
		}
		h.ServeHTTP(w, r)
	})
}

func (a *api) notFound(w http.ResponseWriter, r *http.Request) {
	a.respondError(w, r, &httpError{status: http.StatusNotFound, code: "not-found",
		diag: "no route for " + r.Method + " " + r.URL.Path})
}

func (a *api) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	// httprouter has already set the Allow header.
	a.respondError(w, r, &httpError{status: http.StatusMethodNotAllowed, code: "not-supported",
		diag: "method " + r.Method + " is not allowed here; allowed: " + w.Header().Get("Allow")})
}
