package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// Readiness reports whether a dependency is ready to serve; a non-nil error
// says why not.
type Readiness interface {
	Ready() error
}

// ReadinessFunc adapts a function to Readiness.
type ReadinessFunc func() error

// Ready calls f.
func (f ReadinessFunc) Ready() error { return f() }

// Config holds the handler's dependencies.
type Config struct {
	// Metrics serves /metrics; nil leaves the route out.
	Metrics http.Handler
	// Checks are evaluated, by name, on every /readyz request.
	Checks map[string]Readiness
	// Logger; nil discards.
	Logger *slog.Logger
}

// New returns the HTTP handler for bulkstream.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{cfg: cfg, log: cfg.Logger.With("component", "http")}
	r := httprouter.New()
	r.HandleMethodNotAllowed = true
	if cfg.Metrics != nil {
		r.Handler(http.MethodGet, "/metrics", cfg.Metrics)
	}
	r.HandlerFunc(http.MethodGet, "/healthz", a.healthz)
	r.HandlerFunc(http.MethodGet, "/readyz", a.readyz)
	return r
}

type api struct {
	cfg Config
	log *slog.Logger
}

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
	if len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reasons": reasons})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
