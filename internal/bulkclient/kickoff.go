package bulkclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Request is what to export. Instants are passed to the server verbatim.
//
// The level is the system ([base]/$export) unless Group or PatientLevel
// says otherwise (https://hl7.org/fhir/uv/bulkdata/export.html).
type Request struct {
	Types    []string // _type
	Since    string   // _since, a FHIR instant
	Until    string   // _until
	Elements []string // _elements
	Post     bool     // POST a Parameters resource instead of a GET

	// Group kicks off [base]/Group/<Group>/$export, the Group's members.
	Group string
	// PatientLevel kicks off [base]/Patient/$export, every patient; not
	// with Group.
	PatientLevel bool
	// Patients is the patient parameter: patient ids or Patient/<id>
	// references, only with Group or PatientLevel. The IG defines it for
	// POST only, so it makes the kick-off a POST whatever Post says.
	Patients []string
	// IncludeAssociatedData is includeAssociatedData, e.g.
	// LatestProvenanceResources (a comma list on GET, one valueCode per
	// value on POST).
	IncludeAssociatedData []string
	// TypeFilters are _typeFilter values, each one FHIR search query
	// "<Type>?<param>=<value>[&...]" as it would appear in a URL (its
	// values percent-encoded): repeated query parameters on GET, one
	// valueString each on POST (https://hl7.org/fhir/uv/bulkdata/export.html).
	// The server ORs the queries of one type and ANDs the parameters of
	// one query.
	TypeFilters []string
}

// Validate checks the request's level and patient parameters; Kickoff
// calls it. Its errors name the field.
func (r Request) Validate() error {
	if r.Group != "" && r.PatientLevel {
		return fmt.Errorf("Request.Group %q and Request.PatientLevel exclude each other (a kick-off has one level)", r.Group)
	}
	if len(r.Patients) > 0 && r.Group == "" && !r.PatientLevel {
		return errors.New("Request.Patients needs Request.Group or Request.PatientLevel (patient is not a system-level parameter)")
	}
	for i, p := range r.Patients {
		if _, err := PatientReference(p); err != nil {
			return fmt.Errorf("Request.Patients[%d]: %w", i, err)
		}
	}
	for i, v := range r.IncludeAssociatedData {
		if strings.TrimSpace(v) == "" || strings.Contains(v, ",") {
			return fmt.Errorf("Request.IncludeAssociatedData[%d] %q is not one code", i, v)
		}
	}
	for i, f := range r.TypeFilters {
		typ, q, ok := strings.Cut(f, "?")
		if !ok || typ == "" || q == "" || strings.ContainsAny(typ, "/,&= \t") {
			return fmt.Errorf("Request.TypeFilters[%d] %q is not a search query <Type>?<param>=<value>", i, f)
		}
	}
	return nil
}

// PatientReference turns a patient id or Patient/<id> reference, as
// Request.Patients takes them, into the reference Patient/<id>.
func PatientReference(p string) (string, error) {
	id := strings.TrimPrefix(p, "Patient/")
	switch {
	case id == "":
		return "", fmt.Errorf("%q names no patient id", p)
	case strings.ContainsAny(id, "/?# \t"):
		return "", fmt.Errorf("%q is neither a patient id nor Patient/<id>", p)
	}
	return "Patient/" + id, nil
}

// path is the kick-off path below the base for the request's level.
func (r Request) path() string {
	switch {
	case r.Group != "":
		return "/Group/" + url.PathEscape(r.Group) + "/$export"
	case r.PatientLevel:
		return "/Patient/$export"
	}
	return "/$export"
}

// post reports whether the kick-off is a POST.
func (r Request) post() bool { return r.Post || len(r.Patients) > 0 }

// Manifest is a completed job's manifest (the IG's complete status,
// https://hl7.org/fhir/uv/bulkdata/export.html).
type Manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []File `json:"output"`
	Deleted             []File `json:"deleted"`
	Error               []File `json:"error"`
	// OutputOrganizedBy is "Patient" when the output is patient blocks
	// (organizeOutputBy, Bulk Data 3.0); "" for files of one type each.
	OutputOrganizedBy string `json:"outputOrganizedBy,omitempty"`
	// Raw is the manifest as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// File is one output, deleted or error item of a manifest.
type File struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count *int64 `json:"count,omitempty"` // nil when the server gave none
}

// Job is a kicked-off export.
type Job struct {
	// StatusURL is the Content-Location of the kick-off answer.
	StatusURL string
	c         *Client
	start     time.Time
}

// Kickoff starts an export and returns the job.
func (c *Client) Kickoff(ctx context.Context, r Request) (*Job, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("kick-off: %w", err)
	}
	u := c.base + r.path()
	method, target := http.MethodGet, u
	var body []byte
	if r.post() {
		b, err := json.Marshal(r.parameters())
		if err != nil {
			return nil, fmt.Errorf("kick-off: %w", err)
		}
		method, body = http.MethodPost, b
	} else if q := r.query().Encode(); q != "" {
		target += "?" + q
	}
	resp, err := c.do(ctx, true, func(ctx context.Context) (*http.Request, error) {
		// A nil body gives a GET without one (http.NoBody).
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if method == http.MethodPost {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Prefer", "respond-async")
		return req, nil
	})
	if err != nil {
		return nil, fmt.Errorf("kick-off: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("kick-off: %s %s: %s, want 202 Accepted", resp.Request.Method, u, resp.Status)
	}
	loc := resp.Header.Get("Content-Location")
	if loc == "" {
		return nil, errors.New("kick-off: 202 without Content-Location")
	}
	// Resolve a relative location, which some servers send despite the IG.
	su, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("kick-off: Content-Location %q: %w", loc, err)
	}
	return &Job{StatusURL: su.String(), c: c, start: time.Now()}, nil
}

// Resume returns the Job for a status URL of an earlier kick-off.
func (c *Client) Resume(statusURL string) *Job {
	return &Job{StatusURL: statusURL, c: c, start: time.Now()}
}

func (r Request) query() url.Values {
	q := url.Values{}
	if len(r.Types) > 0 {
		q.Set("_type", strings.Join(r.Types, ","))
	}
	if r.Since != "" {
		q.Set("_since", r.Since)
	}
	if r.Until != "" {
		q.Set("_until", r.Until)
	}
	if len(r.Elements) > 0 {
		q.Set("_elements", strings.Join(r.Elements, ","))
	}
	if len(r.IncludeAssociatedData) > 0 {
		q.Set("includeAssociatedData", strings.Join(r.IncludeAssociatedData, ","))
	}
	// Repeated, never comma-joined: a comma inside a query is a value
	// comma (status=active,completed).
	for _, f := range r.TypeFilters {
		q.Add("_typeFilter", f)
	}
	return q
}

// parameters is the POST body: one entry per value, as the IG asks of
// repeated parameters (https://hl7.org/fhir/uv/bulkdata/export.html).
func (r Request) parameters() map[string]any {
	ps := []map[string]any{}
	for _, t := range r.Types {
		ps = append(ps, map[string]any{"name": "_type", "valueString": t})
	}
	if r.Since != "" {
		ps = append(ps, map[string]any{"name": "_since", "valueInstant": r.Since})
	}
	if r.Until != "" {
		ps = append(ps, map[string]any{"name": "_until", "valueInstant": r.Until})
	}
	for _, e := range r.Elements {
		ps = append(ps, map[string]any{"name": "_elements", "valueString": e})
	}
	for _, p := range r.Patients {
		ref, _ := PatientReference(p) // checked by Validate
		ps = append(ps, map[string]any{"name": "patient", "valueReference": map[string]any{"reference": ref}})
	}
	for _, v := range r.IncludeAssociatedData {
		ps = append(ps, map[string]any{"name": "includeAssociatedData", "valueCode": v})
	}
	for _, f := range r.TypeFilters {
		ps = append(ps, map[string]any{"name": "_typeFilter", "valueString": f})
	}
	return map[string]any{"resourceType": "Parameters", "parameter": ps}
}

// StatusWait is the Prefer: wait a status poll sends
// (https://www.rfc-editor.org/rfc/rfc7240#section-4.3): a server that
// supports it answers as soon as the job finishes, within this; one that
// does not answers at once, and its Retry-After is honoured.
const StatusWait = 10 * time.Second

// Wait polls the status URL until the job completes and returns its
// manifest. A failed job is an *OutcomeError.
func (j *Job) Wait(ctx context.Context) (*Manifest, error) {
	c := j.c
	wait := c.cfg.PollMin
	for {
		resp, err := c.do(ctx, true, func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.StatusURL, nil)
			if err == nil {
				req.Header.Set("Accept", "application/json")
				req.Header.Set("Prefer", "wait="+strconv.Itoa(int(StatusWait/time.Second)))
			}
			return req, err
		})
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			var m Manifest
			raw, err := readJSON(resp, &m)
			if err != nil {
				return nil, fmt.Errorf("manifest: %w", err)
			}
			m.Raw = raw
			if m.TransactionTime == "" {
				return nil, fmt.Errorf("manifest: no transactionTime in %.200s", raw)
			}
			return &m, nil
		case http.StatusAccepted:
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if c.cfg.OnProgress != nil {
				c.cfg.OnProgress(resp.Header.Get("X-Progress"), time.Since(j.start))
			}
			if ra := retryAfter(resp.Header, time.Now()); ra > 0 {
				wait = ra
			}
			wait = min(max(wait, c.cfg.PollMin), c.cfg.PollMax)
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			wait += wait / 2
		default:
			resp.Body.Close()
			return nil, fmt.Errorf("status: %s %s: unexpected %s", resp.Request.Method, j.StatusURL, resp.Status)
		}
	}
}

// Cancel sends DELETE to the status URL: the server cancels a running
// job, or deletes a finished job's files. A 404 (already gone) is no error.
func (j *Job) Cancel(ctx context.Context) error {
	resp, err := j.c.do(ctx, true, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, j.StatusURL, nil)
		if err == nil {
			req.Header.Set("Accept", "application/fhir+json")
		}
		return req, err
	})
	var oe *OutcomeError
	if errors.As(err, &oe) && oe.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return nil
}
