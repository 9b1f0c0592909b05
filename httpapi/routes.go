package httpapi

import (
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/bulkstream/bulkstream/export"
)

// routeUnmatched labels requests no route pattern matched (404, 405,
// redirects, automatic OPTIONS), so raw paths never become label values.
const routeUnmatched = "unmatched"

// routes registers every route in one place. Each handler is tagged with
// its pattern, which instrument uses as the metric and log label, and gets
// its connection deadlines (timeouts.go).
func (a *api) routes() *httprouter.Router {
	r := a.newRouter()
	handle := func(method, pattern string, h http.HandlerFunc) {
		r.Handler(method, pattern, a.route(pattern, kindJSON, h))
	}
	// read registers a safe GET route and its HEAD (RFC 9110 9.1: a server
	// that supports GET supports HEAD; net/http drops the body). $export is
	// not one: a GET kick-off starts a job, which a HEAD must not do.
	read := func(pattern string, h http.HandlerFunc) {
		handle(http.MethodGet, pattern, h)
		handle(http.MethodHead, pattern, h)
	}

	if !a.cfg.SeparateOps {
		a.opsRoutes(read)
	}

	if a.cfg.Jobs == nil {
		return r
	}
	b := a.cfg.BasePath
	// Protected routes: requireToken is a no-op when auth is off.
	// Kick-off at the IG's three levels
	// (https://hl7.org/fhir/uv/bulkdata/export.html): one handler, the
	// same headers, parameters and manifest rules at each.
	for _, k := range []struct {
		pattern string
		level   export.Level
	}{
		{b + "/$export", export.LevelSystem},
		{b + "/Patient/$export", export.LevelPatient},
		{b + "/Group/:id/$export", export.LevelGroup},
	} {
		handle(http.MethodGet, k.pattern, a.requireToken(a.kickoffAt(k.level)))
		handle(http.MethodPost, k.pattern, a.requireToken(a.kickoffAt(k.level)))
	}
	read(b+"/bulkstatus/:id", a.requireToken(a.status))
	handle(http.MethodDelete, b+"/bulkstatus/:id", a.requireToken(a.cancel))
	// Downloads: a write deadline that moves forward as bytes go out.
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		pattern := b + "/bulkfiles/:id/:name"
		r.Handler(m, pattern, a.route(pattern, kindDownload, a.requireToken(a.file)))
	}
	// Public: metadata, OperationDefinitions and, with auth, discovery and
	// the token endpoint (SMART Backend Services,
	// https://hl7.org/fhir/smart-app-launch/backend-services.html).
	if a.cfg.Auth != nil {
		read(b+discoveryPath, a.smartDiscovery)
		handle(http.MethodPost, b+tokenPath, a.token)
	}
	read(b+"/metadata", a.metadata)
	read(b+"/OperationDefinition/export", a.serveDoc(func() []byte { return a.docs.exportOp }))
	read(b+"/OperationDefinition/bulk-export", a.serveDoc(func() []byte { return a.docs.bulkExportOp }))
	read(b+"/OperationDefinition/patient-export", a.serveDoc(func() []byte { return a.docs.patientExportOp }))
	read(b+"/OperationDefinition/group-export", a.serveDoc(func() []byte { return a.docs.groupExportOp }))
	return r
}

// opsRoutes registers the operational endpoints: on the API's router, or,
// with Config.SeparateOps, on NewOps's.
func (a *api) opsRoutes(read func(pattern string, h http.HandlerFunc)) {
	if a.cfg.Metrics != nil {
		read("/metrics", a.cfg.Metrics.ServeHTTP)
	}
	read("/healthz", a.healthz)
	read("/readyz", a.readyz)
}

// newRouter is an empty router with the API's matching rules and its
// OperationOutcome answers for 404, 405 and OPTIONS.
func (a *api) newRouter() *httprouter.Router {
	r := httprouter.New()
	r.HandleMethodNotAllowed = true
	// FHIR paths are case-sensitive ($export is not $Export) and a cleaned
	// path is a different URL: those get a 404 OperationOutcome instead of
	// a redirect to some other route. Only a trailing slash is redirected.
	r.RedirectFixedPath = false
	r.NotFound = a.route(routeUnmatched, kindJSON, http.HandlerFunc(a.notFound))
	r.MethodNotAllowed = a.route(routeUnmatched, kindJSON, http.HandlerFunc(a.methodNotAllowed))
	r.GlobalOPTIONS = a.route(routeUnmatched, kindJSON, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent) // httprouter has set Allow
	}))
	return r
}

// route tags the request's recorder with the matched pattern and sets the
// connection deadlines of kind.
func (a *api) route(pattern string, kind routeKind, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.route = pattern
		}
		a.withDeadlines(w, r, kind)
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
