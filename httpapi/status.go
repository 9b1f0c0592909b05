package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/bulkstream/bulkstream/export"
)

// maxProgress bounds X-Progress: the Bulk Data IG wants fewer than 100
// characters (in-progress status,
// https://hl7.org/fhir/uv/bulkdata/export.html).
const maxProgress = 99

// status serves GET [base]/bulkstatus/:id (the IG's status request,
// https://hl7.org/fhir/uv/bulkdata/export.html).
func (a *api) status(w http.ResponseWriter, r *http.Request) {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	st, err := a.cfg.Jobs.Status(clientID(r), id)
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
		writeOutcome(w, http.StatusInternalServerError, issue{Severity: "error", Code: "processing",
			Diagnostics: diag + "; start a new export"})
	default:
		a.respondError(w, r, fmt.Errorf("job %s in unknown state %q", id, st.State))
	}
}

// cancel serves DELETE [base]/bulkstatus/:id (the IG's delete request,
// https://hl7.org/fhir/uv/bulkdata/export.html).
func (a *api) cancel(w http.ResponseWriter, r *http.Request) {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	if err := a.cfg.Jobs.Cancel(clientID(r), id); err != nil {
		a.respondError(w, r, err)
		return
	}
	writeOutcome(w, http.StatusAccepted, issue{Severity: "information", Code: "informational",
		Diagnostics: "export job cancelled; its status and files are gone"})
}

// manifestJSON is the completion manifest as clients see it (the IG's
// complete status, https://hl7.org/fhir/uv/bulkdata/export.html):
// spec fields only, absolute URLs, error always present, deleted only when
// there is something in it.
type manifestJSON struct {
	TransactionTime     string     `json:"transactionTime"`
	Request             string     `json:"request"`
	RequiresAccessToken bool       `json:"requiresAccessToken"`
	Output              []fileJSON `json:"output"`
	Deleted             []fileJSON `json:"deleted,omitempty"`
	Error               []fileJSON `json:"error"`
}

type fileJSON struct {
	Type  string `json:"type"`
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
		Output:              files(m.Output),
		Error:               files(m.Error),
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
