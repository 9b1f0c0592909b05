package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkstream/bulkstream/export"
)

// Jobs is what the FHIR routes need from the export job manager
// (*export.Manager satisfies it). Errors are the export package's:
// *export.RequestError, *export.TooManyJobsError, *export.UnavailableError,
// *export.ForbiddenError, export.ErrNotFound and export.ErrClosed; anything
// else is a 500.
//
// client is the authenticated client id ("" when auth is off): a job
// belongs to the client that started it (Kickoff.Client), and Status,
// Cancel and OpenFile answer export.ErrNotFound for another client's job,
// exactly as for a job that does not exist.
type Jobs interface {
	// Kickoff validates and queues an export, returning the job id.
	Kickoff(ctx context.Context, k export.Kickoff) (id string, err error)
	// Status reports a job; export.ErrNotFound when unknown, expired,
	// cancelled or another client's.
	Status(client, id string) (export.Status, error)
	// Cancel stops a job and removes its files.
	Cancel(client, id string) error
	// OpenFile opens one of a completed job's files; the caller closes it.
	OpenFile(client, id, name string) (export.File, error)
}

// Readiness reports whether a dependency is ready to serve; a non-nil error
// says why not.
type Readiness interface {
	Ready() error
}

// ReadinessFunc adapts a function to Readiness.
type ReadinessFunc func() error

// Ready calls f.
func (f ReadinessFunc) Ready() error { return f() }

// Defaults for Config fields left zero.
const (
	DefaultBasePath = "/fhir"
	// DefaultMaxBodyBytes caps a POST kick-off body: a Parameters
	// resource naming every R4 type is under 16 KiB, and even the largest
	// request export's limits admit (export.MaxTypeEntries _type,
	// export.MaxElementsEntries _elements of the longest names and
	// export.MaxIgnored ignored entries, one parameter each, indented by
	// four spaces) fits, at 247 KiB.
	DefaultMaxBodyBytes = 256 << 10
)

// Config holds the handler's dependencies.
type Config struct {
	// Metrics serves /metrics; nil leaves the route out.
	Metrics http.Handler
	// Checks are evaluated, by name, on every /readyz request.
	Checks map[string]Readiness
	// ReadyInfo, if set, adds members to every /readyz answer, ready or
	// not (serve: the replica and how far ingest lags the stream). It
	// must not block.
	ReadyInfo func() map[string]any
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the HTTP metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer

	// Jobs runs exports; nil leaves every FHIR route out (404).
	Jobs Jobs
	// PublicURL is the scheme, host and optional path prefix clients use to
	// reach this server ("https://fhir.example.org"). Every absolute URL
	// the API hands out (Content-Location, manifest file URLs, the
	// manifest's request, the CapabilityStatement's implementation.url)
	// starts with it; the request's Host header is never used. Required
	// when Jobs is set.
	PublicURL string
	// BasePath is where the FHIR endpoints live; "" means DefaultBasePath
	// and "/" the root.
	BasePath string
	// Version is reported as CapabilityStatement.software.version.
	Version string
	// MaxBodyBytes caps a POST kick-off body (413 past it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// Auth, when set, turns on SMART Backend Services authorization:
	// discovery and the token endpoint are served, and kick-off, status,
	// cancel and file requests need an access token. nil: no
	// authorization (cmd allows that only on loopback or with
	// --insecure). Requires Jobs.
	Auth *Auth

	// SeparateOps leaves /metrics, /healthz and /readyz out of New's
	// handler (404 there), for NewOps to serve on another listener.
	SeparateOps bool
	// Connection deadlines of every routed request (timeouts.go); zero
	// sets none. ReadBodyTimeout: a request body must arrive whole within
	// it. WriteTimeout: the answer of every route but file downloads must
	// be written within it. DownloadStallTimeout: a download is cut off
	// when its client takes no bytes (less than 128 KiB) for that long.
	ReadBodyTimeout      time.Duration
	WriteTimeout         time.Duration
	DownloadStallTimeout time.Duration
}

// FHIRBase returns the absolute base URL of the FHIR endpoints:
// PublicURL + BasePath, normalized.
func (c Config) FHIRBase() string {
	c = c.withDefaults()
	return c.PublicURL + c.BasePath
}

// TokenURL returns the token endpoint's absolute URL, [base]/auth/token:
// the token_endpoint of discovery and the aud client assertions must
// name.
func (c Config) TokenURL() string { return c.FHIRBase() + tokenPath }

// withDefaults returns a copy of c with zero fields filled in and URLs
// normalized (no trailing slash).
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch c.BasePath {
	case "":
		c.BasePath = DefaultBasePath
	case "/":
		c.BasePath = ""
	default:
		c.BasePath = strings.TrimSuffix(c.BasePath, "/")
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Version == "" {
		c.Version = "unknown"
	}
	return c
}

// Validate reports, naming the field, what New would refuse. Callers that
// take these values from flags should call it first: New panics on an
// invalid Config.
func (c Config) Validate() error {
	c = c.withDefaults()
	if !strings.HasPrefix(c.BasePath, "/") && c.BasePath != "" {
		return fmt.Errorf("httpapi: BasePath %q must start with /", c.BasePath)
	}
	if strings.ContainsAny(c.BasePath, ":*?#") {
		return fmt.Errorf("httpapi: BasePath %q must be a plain path", c.BasePath)
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("httpapi: MaxBodyBytes %d must not be negative", c.MaxBodyBytes)
	}
	if c.Jobs == nil {
		if c.Auth != nil {
			return errors.New("httpapi: Auth needs Jobs: only the FHIR routes are protected")
		}
		return nil
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	if c.PublicURL == "" {
		return errors.New("httpapi: PublicURL is required to serve $export (absolute status and file URLs)")
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil {
		return fmt.Errorf("httpapi: PublicURL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("httpapi: PublicURL %q must be an absolute http(s) URL without query, fragment or user info", c.PublicURL)
	}
	return nil
}

// New returns the HTTP handler for bulkstream. It panics when cfg does not
// pass Validate.
func New(cfg Config) http.Handler {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	a := &api{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "http"),
		metrics: newMetrics(cfg.Registerer),
	}
	if cfg.Jobs != nil {
		a.fhirBase = cfg.PublicURL + cfg.BasePath
		tokenURL := ""
		if cfg.Auth != nil {
			tokenURL = cfg.TokenURL()
		}
		docs, err := loadConformance(a.fhirBase, cfg.Version, tokenURL)
		if err != nil {
			panic(err) // the embedded documents are broken: a build problem
		}
		a.docs = docs
		if cfg.Auth != nil {
			a.tokenURL = cfg.TokenURL()
			a.discovery = smartConfiguration(a.tokenURL)
		}
	}
	a.router = a.routes()
	a.limited = http.HandlerFunc(a.limitURL)
	return a
}

type api struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	router   *httprouter.Router
	limited  http.Handler // limitURL, then router: built once, not per request
	fhirBase string       // PublicURL + BasePath
	docs     conformance

	tokenURL  string // [base]/auth/token, absolute; "" when auth is off
	discovery []byte // the .well-known/smart-configuration document
}

// ServeHTTP instruments, logs and guards every request, routed or not.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.instrument(w, r, a.limited)
}

// MaxURLBytes caps a request target (path and query): longer ones are 414
// OperationOutcomes. 8 KiB is the request line most proxies and servers
// pass (nginx's default large_client_header_buffers, Apache's
// LimitRequestLine), so a client that works through them never hits it; a
// GET kick-off naming all 146 R4 types is 2.3 KiB, and longer
// requests can use POST. It also bounds the manifest's request, which a
// finished job keeps in memory.
const MaxURLBytes = 8 << 10

func (a *api) limitURL(w http.ResponseWriter, r *http.Request) {
	if len(r.RequestURI) > MaxURLBytes {
		a.withDeadlines(w, r, kindJSON) // no route sets them on this path
		a.respondError(w, r, &httpError{status: http.StatusRequestURITooLong, code: "too-long",
			diag: fmt.Sprintf("request URL of %d bytes is longer than %d; use POST $export for long requests", len(r.RequestURI), MaxURLBytes)})
		return
	}
	a.router.ServeHTTP(w, r)
}
