package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/bulkstream/bulkstream/export"
)

const (
	contentTypeFHIR   = "application/fhir+json"
	contentTypeJSON   = "application/json"
	contentTypeNDJSON = "application/fhir+ndjson"

	// statusClientClosed is recorded (never sent) when the client went
	// away before the answer was ready, as nginx logs it.
	statusClientClosed = 499

	// closedRetryAfter is the Retry-After sent while the job manager is
	// shutting down.
	closedRetryAfter = 5 * time.Second
)

// outcome is a FHIR OperationOutcome.
type outcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []issue `json:"issue"`
}

type issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// httpError is a refusal decided in this package (headers, body shape,
// routing), carrying its status and OperationOutcome issue code.
type httpError struct {
	status int
	code   string
	diag   string
	param  string // the offending kick-off parameter, for issue.expression
}

func (e *httpError) Error() string { return e.diag }

// badRequest is a 400 with issue code "invalid" (or code, when given).
func badRequest(code, diag string) *httpError {
	if code == "" {
		code = "invalid"
	}
	return &httpError{status: http.StatusBadRequest, code: code, diag: diag}
}

// respondError is the one place an error becomes a status code and an
// OperationOutcome:
//
//	*httpError                  its own status and code
//	*export.RequestError        400, its Code ("invalid" when empty), expression [Param]
//	*authError                  401 or 403 with WWW-Authenticate: Bearer (login, unknown, forbidden)
//	*export.ForbiddenError      403 forbidden, WWW-Authenticate: Bearer error="insufficient_scope"
//	*export.TooManyJobsError    429 throttled, Retry-After; the text names the client quota or the server limit
//	*export.UnavailableError    503 transient, Retry-After
//	export.ErrClosed            503 transient, Retry-After
//	export.ErrNotFound          404 not-found
//	*export.NotFoundError       404 not-found: the Group of Group/[id]/$export is not on this server
//	export.ErrFileDamaged       500 exception: the file no longer matches its recorded digest (logged at ERROR)
//	context.Canceled/DeadlineExceeded after the client left: nothing written (logged as 499)
//	anything else               500 exception, generic text; the error is logged
func (a *api) respondError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		he  *httpError
		ae  *authError
		fe  *export.ForbiddenError
		re  *export.RequestError
		nfe *export.NotFoundError
		tmj *export.TooManyJobsError
		ue  *export.UnavailableError
		iss = issue{Severity: "error"}
	)
	if errors.As(err, &fe) {
		err = forbiddenTypes(r, fe.Types)
	}
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &he):
		status, iss.Code, iss.Diagnostics = he.status, he.code, he.diag
		if he.param != "" {
			iss.Expression = []string{he.param}
		}
	case errors.As(err, &ae):
		status, iss.Code, iss.Diagnostics = ae.status, ae.issueCode(), ae.diag
		w.Header().Set("WWW-Authenticate", ae.challenge())
	case errors.As(err, &re):
		status, iss.Code, iss.Diagnostics = http.StatusBadRequest, re.Code, re.Diagnostics
		if iss.Code == "" {
			iss.Code = "invalid"
		}
		if re.Param != "" {
			iss.Expression = []string{re.Param}
		}
	case errors.As(err, &tmj):
		status, iss.Code, iss.Diagnostics = http.StatusTooManyRequests, "throttled", "too many concurrent export jobs; retry later"
		if tmj.Reason == export.ReasonClientQuota {
			iss.Diagnostics = fmt.Sprintf("this client already has %d export jobs queued or running, its quota; "+
				"retry when one finishes, or cancel one", tmj.Limit)
		}
		w.Header().Set("Retry-After", retryAfter(tmj.RetryAfter))
	case errors.As(err, &ue):
		status, iss.Code, iss.Diagnostics = http.StatusServiceUnavailable, "transient", "service unavailable: "+ue.Reason
		w.Header().Set("Retry-After", retryAfter(ue.RetryAfter))
	case errors.Is(err, export.ErrClosed):
		status, iss.Code, iss.Diagnostics = http.StatusServiceUnavailable, "transient", "server is shutting down; retry later"
		w.Header().Set("Retry-After", retryAfter(closedRetryAfter))
	case errors.Is(err, export.ErrFileDamaged):
		iss.Code = "exception"
		iss.Diagnostics = "this export file is damaged on the server (it no longer matches the size and digest " +
			"recorded when it was written) and cannot be served; run the export again"
		a.log.Error("export file damaged", "method", r.Method, "path", r.URL.Path, "error", err)
	case errors.As(err, &nfe):
		status, iss.Code, iss.Diagnostics = http.StatusNotFound, "not-found", nfe.Type+"/"+nfe.ID+" is not on this server"
	case errors.Is(err, export.ErrNotFound):
		status, iss.Code, iss.Diagnostics = http.StatusNotFound, "not-found", "no such export job or file (unknown, expired or cancelled)"
	case (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && r.Context().Err() != nil:
		if rec, ok := w.(*recorder); ok {
			rec.status = statusClientClosed
		}
		a.log.Debug("client went away", "method", r.Method, "path", r.URL.Path, "error", err)
		return
	default:
		iss.Code, iss.Diagnostics = "exception", "internal server error"
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeOutcome(w, r, status, iss)
}

// writeOutcome writes an OperationOutcome with one issue, as
// application/fhir+json or, when r's Accept prefers it, application/json
// (fhirContentType).
func writeOutcome(w http.ResponseWriter, r *http.Request, status int, iss issue) {
	setFHIRContentType(w.Header(), r)
	writeBody(w, status, outcome{ResourceType: "OperationOutcome", Issue: []issue{iss}})
}

// writeJSON writes v as application/json whatever Accept says: the
// completion manifest (the IG's complete status is application/json,
// https://hl7.org/fhir/uv/bulkdata/export.html), the OAuth answers and the
// operational endpoints, none of which is a FHIR resource.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", contentTypeJSON)
	writeBody(w, status, v)
}

// writeBody writes v as JSON under the Content-Type already set. Encoding
// errors can only be programming errors here (plain structs), and write
// errors mean the client left, so neither is reported.
func writeBody(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // URLs keep their & (not \u0026)
	_ = enc.Encode(v)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// retryAfter formats d as Retry-After delay-seconds: whole seconds,
// rounded up, at least 1. Integer seconds only: BDT's check of the
// HTTP-date form is broken and Inferno reads the value as an integer.
func retryAfter(d time.Duration) string {
	s := math.Ceil(d.Seconds())
	if s < 1 || math.IsNaN(s) {
		s = 1
	}
	if s > 86400 {
		s = 86400
	}
	return strconv.Itoa(int(s))
}
