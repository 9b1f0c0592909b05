package httpapi

import (
	"maps"
	"net/http"
)

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	reasons := map[string]string{}
	for name, c := range a.cfg.Checks {
		if err := c.Ready(); err != nil {
			reasons[name] = err.Error()
		}
	}
	body := map[string]any{}
	if a.cfg.ReadyInfo != nil {
		maps.Copy(body, a.cfg.ReadyInfo())
	}
	if len(reasons) > 0 {
		body["status"], body["reasons"] = "not ready", reasons
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ready"
	writeJSON(w, http.StatusOK, body)
}

// NewOps returns the handler of the operational endpoints alone
// (/metrics, /healthz, /readyz; everything else is a 404
// OperationOutcome), for a listener of their own: set
// Config.SeparateOps so that New leaves them out. It uses Metrics,
// Checks, Logger, Registerer (the HTTP request metrics are shared with
// New's handler on the same registry) and the timeouts of cfg.
func NewOps(cfg Config) http.Handler {
	cfg = cfg.withDefaults()
	a := &api{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "http", "listener", "ops"),
		metrics: newMetrics(cfg.Registerer),
	}
	r := a.newRouter()
	a.opsRoutes(func(pattern string, h http.HandlerFunc) {
		r.Handler(http.MethodGet, pattern, a.route(pattern, kindJSON, h))
		r.Handler(http.MethodHead, pattern, a.route(pattern, kindJSON, h))
	})
	a.router = r
	a.limited = http.HandlerFunc(a.limitURL)
	return a
}
