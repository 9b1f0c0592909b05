package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/bulkstream/bulkstream/export"
)

// maxProgress bounds X-Progress: the Bulk Data IG wants fewer than 100
// characters (in-progress status,
// https://hl7.org/fhir/uv/bulkdata/export.html).
const maxProgress = 99

// Waiter is implemented by a Jobs that can hold a status request until
// the job finishes (*export.Manager does): see export.Manager.Wait.
type Waiter interface {
	Wait(ctx context.Context, client, id string, d time.Duration) (export.Status, error)
}

// status serves GET [base]/bulkstatus/:id (the IG's status request,
// https://hl7.org/fhir/uv/bulkdata/export.html). With Prefer: wait=N
// (https://www.rfc-editor.org/rfc/rfc7240#section-4.3) the request is held
// until the job finishes or N seconds (at most export.MaxWait, and half
// the write timeout) pass.
func (a *api) status(w http.ResponseWriter, r *http.Request) {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	var st export.Status
	var err error
	wt, ok := a.cfg.Jobs.(Waiter)
	d := preferWait(r.Header.Values("Prefer"))
	if wd := a.cfg.WriteTimeout; wd > 0 {
		d = min(d, wd/2)
	}
	if ok && d > 0 {
		st, err = wt.Wait(r.Context(), clientID(r), id, d)
	} else {
		st, err = a.cfg.Jobs.Status(clientID(r), id)
	}
	if err != nil {
		a.respondError(w, r, err)
		return
	}
	h := w.Header()
	switch st.State {
	case export.Queued, export.Running:
		if p := headerText(st.Progress, maxProgress); p != "" {
			h.Set("X-Progress", p)
		}
		h.Set("Retry-After", retryAfter(st.RetryAfter))
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusAccepted)
	case export.Completed:
		if st.Manifest == nil {
			a.respondError(w, r, fmt.Errorf("job %s completed without a manifest", id))
			return
		}
		if !st.Expires.IsZero() {
			h.Set("Expires", st.Expires.UTC().Format(http.TimeFormat))
		}
		writeJSON(w, http.StatusOK, a.manifest(id, st.Manifest))
	case export.Failed:
		diag := st.Error
		if diag == "" {
			diag = "the export job failed"
		}
		// "processing", not "exception": exception belongs to the
		// transient family, which tells a client that the poll failed and
		// should be retried (as the IG asks for a failed poll), whereas a failed
		// job is final.
		writeOutcome(w, r, http.StatusInternalServerError, issue{Severity: "error", Code: "processing",
			Diagnostics: diag + "; start a new export"})
	default:
		a.respondError(w, r, fmt.Errorf("job %s in unknown state %q", id, st.State))
	}
}

// preferWait returns the wait preference of the Prefer lines
// (RFC 7240: comma-separated, case-insensitive, optional ";" parameters;
// the first occurrence wins), capped at export.MaxWait; 0 when absent,
// not a positive integer, or the cap is not positive.
func preferWait(values []string) time.Duration {
	for _, v := range values {
		for _, pref := range splitList(v) {
			pref, _, _ = strings.Cut(pref, ";")
			name, val, _ := strings.Cut(pref, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
			if err != nil || n <= 0 {
				return 0
			}
			return min(time.Duration(min(n, 3600))*time.Second, export.MaxWait)
		}
	}
	return 0
}

// cancel serves DELETE [base]/bulkstatus/:id (the IG's delete request,
// https://hl7.org/fhir/uv/bulkdata/export.html).
func (a *api) cancel(w http.ResponseWriter, r *http.Request) {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	if err := a.cfg.Jobs.Cancel(clientID(r), id); err != nil {
		a.respondError(w, r, err)
		return
	}
	writeOutcome(w, r, http.StatusAccepted, issue{Severity: "information", Code: "informational",
		Diagnostics: "export job cancelled; its status and files are gone"})
}

// manifestJSON is the completion manifest as clients see it (the IG's
// complete status, https://hl7.org/fhir/uv/bulkdata/export.html):
// spec fields only, absolute URLs, error always present, deleted only when
// there is something in it. With organizeOutputBy, outputOrganizedBy names
// it and the output items have no type (Bulk Data 3.0: it SHALL NOT be
// present then).
type manifestJSON struct {
	TransactionTime     string     `json:"transactionTime"`
	Request             string     `json:"request"`
	RequiresAccessToken bool       `json:"requiresAccessToken"`
	OutputOrganizedBy   string     `json:"outputOrganizedBy,omitempty"`
	Output              []fileJSON `json:"output"`
	Deleted             []fileJSON `json:"deleted,omitempty"`
	Error               []fileJSON `json:"error"`
}

type fileJSON struct {
	Type  string `json:"type,omitempty"` // empty only in output organized by patient`
	URL   string `json:"url"`
	Count int64  `json:"count,omitempty"` // BDT: when present, > 0
}

func (a *api) manifest(id string, m *export.Manifest) manifestJSON {
	files := func(in []export.FileInfo) []fileJSON {
		out := make([]fileJSON, 0, len(in))
		for _, f := range in {
			out = append(out, fileJSON{Type: f.Type, URL: a.fileURL(id, f.Name), Count: f.Count})
		}
		return out
	}
	mj := manifestJSON{
		TransactionTime:     m.TransactionTime,
		Request:             m.Request,
		RequiresAccessToken: m.RequiresAccessToken,
		OutputOrganizedBy:   m.OutputOrganizedBy,
		Output:              files(m.Output),
		Error:               files(m.Error),
	}
	if m.OutputOrganizedBy != "" {
		for i := range mj.Output {
			mj.Output[i].Type = ""
		}
	}
	if len(m.Deleted) > 0 {
		mj.Deleted = files(m.Deleted)
	}
	return mj
}

func (a *api) fileURL(id, name string) string {
	return a.fhirBase + "/bulkfiles/" + url.PathEscape(id) + "/" + url.PathEscape(name)
}

// headerText makes s safe as a header value: control characters become
// spaces, surrounding space and quotes go, and it is cut to at most n
// bytes on a rune boundary.
func headerText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if len(s) > n {
		for n > 0 && !utf8RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return strings.TrimSpace(s)
}
