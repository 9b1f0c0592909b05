package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/internal/fhir"
)

// kickoffAt serves GET and POST [base]/$export, [base]/Patient/$export
// and [base]/Group/[id]/$export (the IG's kick-off request,
// https://hl7.org/fhir/uv/bulkdata/export.html), level saying which.
func (a *api) kickoffAt(level export.Level) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { a.kickoff(w, r, level) }
}

func (a *api) kickoff(w http.ResponseWriter, r *http.Request, level export.Level) {
	var group string
	if level == export.LevelGroup {
		group = httprouter.ParamsFromContext(r.Context()).ByName("id")
		if !fhir.IsID(group) {
			a.respondError(w, r, badRequest("value", fmt.Sprintf("Group id %q in the path is not a FHIR id "+
				"(1 to 64 of A-Z a-z 0-9 - .): kick off a Group-level export at [base]/Group/[id]/$export", truncate(group, 100))))
			return
		}
	}
	k, err := a.readKickoff(w, r)
	if err != nil {
		a.respondError(w, r, err)
		return
	}
	k.Level, k.Group = level, group
	if p := principalFrom(r.Context()); p != nil {
		// export enforces what the token allows: the job's owner, the
		// types (403 for a _type outside them; without _type only these
		// are exported), the client's job quota and its own cap on
		// finished jobs kept for download (0: the server's default).
		k.Client, k.MaxJobs, k.MaxFinished = p.client.ID, p.client.MaxJobs, p.client.MaxFinished
		if !p.scopes.All() {
			k.AllowedTypes = p.scopes.Types()
			if len(k.AllowedTypes) == 0 {
				a.respondError(w, r, forbiddenTypes(r, []string{"*"}))
				return
			}
		}
	}
	id, err := a.cfg.Jobs.Kickoff(r.Context(), k)
	if err != nil {
		a.respondError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Location", a.fhirBase+"/bulkstatus/"+url.PathEscape(id))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
}

// readKickoff checks the headers and reads the parameters, in order.
func (a *api) readKickoff(w http.ResponseWriter, r *http.Request) (export.Kickoff, error) {
	if err := checkAccept(r.Header.Values("Accept")); err != nil {
		return export.Kickoff{}, err
	}
	async, lenient := parsePrefer(r.Header.Values("Prefer"))
	if !async {
		return export.Kickoff{}, &httpError{status: http.StatusBadRequest, code: "required",
			diag: "the Prefer header must contain respond-async: $export runs asynchronously"}
	}
	k := export.Kickoff{Lenient: lenient}
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") { // absolute-form request target
		uri = r.URL.EscapedPath()
		if r.URL.RawQuery != "" {
			uri += "?" + r.URL.RawQuery
		}
	}
	var err error
	switch r.Method {
	case http.MethodPost:
		if r.URL.RawQuery != "" {
			return k, badRequest("", "a POST kick-off takes its parameters from the Parameters body only; "+
				"remove the query string ("+truncate(r.URL.RawQuery, 100)+")")
		}
		// For POST the manifest's request is the URL without parameters
		// (the IG's complete status, https://hl7.org/fhir/uv/bulkdata/export.html).
		uri, _, _ = strings.Cut(uri, "?")
		k.Params, err = a.readParameters(w, r)
	default:
		k.Params, err = parseQuery(r.URL.RawQuery)
	}
	k.RequestURL = a.cfg.PublicURL + uri
	return k, err
}

// checkAccept checks the kick-off's Accept header. The IG's kick-off
// request (https://hl7.org/fhir/uv/bulkdata/export.html, "Headers")
// requires it and supports only application/fhir+json, the format of the
// OperationOutcome a kick-off may answer with: missing or empty is 400
// required, and one that does not accept application/fhir+json (q > 0,
// through */*, application/* or the type itself, also spelt
// application/json+fhir as in DSTU2) is 400 not-supported, naming the
// fix. Accept: application/json alone is refused: a client that can only
// read plain JSON asks for it alongside, as in
// "application/json, application/fhir+json;q=0.5". This is a header
// check, so Prefer: handling=lenient does not relax it.
func checkAccept(values []string) error {
	ranges, present := parseAccept(values)
	if !present {
		return &httpError{status: http.StatusBadRequest, code: "required",
			diag: "the Accept header is required; send Accept: application/fhir+json"}
	}
	if fhirJSONWeight(ranges) > 0 {
		return nil
	}
	return &httpError{status: http.StatusBadRequest, code: "not-supported",
		diag: "Accept " + truncate(strings.Join(values, ", "), 200) + " is not supported: a kick-off answers only in " +
			"application/fhir+json (Bulk Data IG); send Accept: application/fhir+json"}
}

// parsePrefer reads RFC 7240 preferences from every Prefer line: values are
// comma-separated, case-insensitive, with optional spaces around "=" and
// optional ";" parameters. For handling, the first occurrence wins.
func parsePrefer(values []string) (async, lenient bool) {
	handling := ""
	for _, v := range values {
		for _, pref := range splitList(v) {
			pref, _, _ = strings.Cut(pref, ";")
			name, val, _ := strings.Cut(pref, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			val = strings.ToLower(strings.Trim(strings.TrimSpace(val), `"`))
			switch name {
			case "respond-async":
				async = true
			case "handling":
				if handling == "" {
					handling = val
				}
			}
		}
	}
	return async, handling == "lenient"
}

// parseQuery returns the query's parameters in order, one Param per value.
// Commas are not split here (export.ParseRequest knows which parameters
// take lists); "+" is a space, as in every form-encoded query.
func parseQuery(raw string) ([]export.Param, error) {
	var params []export.Param
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return nil, badRequest("", fmt.Sprintf("bad escape in query parameter name %q", truncate(k, 100)))
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return nil, &httpError{status: http.StatusBadRequest, code: "invalid", param: name,
				diag: fmt.Sprintf("bad escape in the value of query parameter %s", truncate(name, 100))}
		}
		if name == "" {
			return nil, badRequest("", "query parameter with an empty name")
		}
		params = append(params, export.Param{Name: name, Value: value})
	}
	return params, nil
}

// parametersTypes are the Content-Types a POST kick-off body may have (the
// last one is the FHIR DSTU2 spelling).
var parametersTypes = map[string]bool{
	"application/fhir+json": true,
	"application/json":      true,
	"application/json+fhir": true,
}

// readParameters reads a POST kick-off's FHIR Parameters body (the IG's
// POST kick-off, https://hl7.org/fhir/uv/bulkdata/export.html) into Params,
// in entry order.
func (a *api) readParameters(w http.ResponseWriter, r *http.Request) ([]export.Param, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !parametersTypes[strings.ToLower(mt)] {
		return nil, &httpError{status: http.StatusUnsupportedMediaType, code: "not-supported",
			diag: fmt.Sprintf("Content-Type %q is not supported; a POST kick-off body is a FHIR Parameters resource "+
				"sent as application/fhir+json or application/json", truncate(ct, 100))}
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return nil, &httpError{status: http.StatusUnsupportedMediaType, code: "not-supported",
			diag: fmt.Sprintf("Content-Encoding %q is not supported on a kick-off body", truncate(ce, 100))}
	}
	tooLarge := &httpError{status: http.StatusRequestEntityTooLarge, code: "too-long",
		diag: fmt.Sprintf("the kick-off body is larger than the limit of %d bytes; "+
			"a Parameters resource naming every resource type fits well within it", a.cfg.MaxBodyBytes)}
	if r.ContentLength > a.cfg.MaxBodyBytes {
		return nil, tooLarge // refused before reading any of it
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, tooLarge
		}
		return nil, badRequest("incomplete", "reading the request body: "+err.Error())
	}
	return parseParameters(body)
}

// parseParameters decodes a FHIR Parameters resource. Each parameter entry
// becomes one Param; an entry must have a name and exactly one value[x] of
// a supported type (part and resource are not supported). No entries, or
// no parameter array at all, means a full export.
func parseParameters(body []byte) ([]export.Param, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil || doc == nil {
		return nil, badRequest("structure", "the request body must be a JSON FHIR Parameters resource")
	}
	var rt string
	if err := json.Unmarshal(doc["resourceType"], &rt); err != nil || rt != "Parameters" {
		return nil, badRequest("invalid", "the request body must be a FHIR Parameters resource (resourceType \"Parameters\")")
	}
	var entries []json.RawMessage
	if raw, ok := doc["parameter"]; ok {
		if err := json.Unmarshal(raw, &entries); err != nil {
			return nil, badRequest("structure", "Parameters.parameter must be an array")
		}
	}
	params := make([]export.Param, 0, len(entries))
	for i, raw := range entries {
		p, err := parseParameter(i, raw)
		if err != nil {
			return nil, err
		}
		params = append(params, p)
	}
	return params, nil
}

func parseParameter(i int, raw json.RawMessage) (export.Param, error) {
	where := fmt.Sprintf("Parameters.parameter[%d]", i)
	var entry map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entry); err != nil || entry == nil {
		return export.Param{}, badRequest("structure", where+" must be a JSON object")
	}
	var name string
	if err := json.Unmarshal(entry["name"], &name); err != nil || name == "" {
		return export.Param{}, badRequest("required", where+" needs a non-empty string name")
	}
	fail := func(code, format string, args ...any) (export.Param, error) {
		return export.Param{}, &httpError{status: http.StatusBadRequest, code: code, param: truncate(name, 100),
			diag: fmt.Sprintf("%s (%s): ", where, truncate(name, 100)) + fmt.Sprintf(format, args...)}
	}
	valueKey := ""
	for _, key := range slices.Sorted(maps.Keys(entry)) {
		switch {
		case key == "name", key == "id", key == "extension":
		case strings.HasPrefix(key, "value"):
			if valueKey != "" {
				return fail("invalid", "has more than one value[x]")
			}
			valueKey = key
		case key == "part", key == "resource":
			return fail("not-supported", "%s is not supported; give the value as value[x]", key)
		default:
			return fail("structure", "unknown element %q", truncate(key, 50))
		}
	}
	if valueKey == "" {
		return fail("required", "has no value[x]")
	}
	v, err := parameterValue(valueKey, entry[valueKey])
	if err != nil {
		return fail("invalid", "%s %v", valueKey, err)
	}
	return export.Param{Name: name, Value: v}, nil
}

// parameterValue stringifies a value[x] of a type kick-off parameters use.
func parameterValue(key string, raw json.RawMessage) (string, error) {
	if string(raw) == "null" {
		return "", errors.New("must not be null")
	}
	switch key {
	case "valueString", "valueCode", "valueId", "valueUri", "valueUrl", "valueCanonical",
		"valueInstant", "valueDateTime", "valueDate":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errors.New("must be a JSON string")
		}
		return s, nil
	case "valueBoolean":
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", errors.New("must be true or false")
		}
		return strconv.FormatBool(b), nil
	case "valueInteger", "valuePositiveInt", "valueUnsignedInt":
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return "", errors.New("must be a JSON integer")
		}
		return strconv.FormatInt(n, 10), nil
	case "valueReference":
		var ref struct {
			Reference *string `json:"reference"`
		}
		if err := json.Unmarshal(raw, &ref); err != nil || ref.Reference == nil || *ref.Reference == "" {
			return "", errors.New("must be an object with a non-empty reference")
		}
		return *ref.Reference, nil
	case "valueCoding":
		var c struct {
			Code *string `json:"code"`
		}
		if err := json.Unmarshal(raw, &c); err != nil || c.Code == nil || *c.Code == "" {
			return "", errors.New("must be an object with a non-empty code")
		}
		return *c.Code, nil
	}
	return "", errors.New("is not a supported value type (use valueString, valueCode, valueInstant, valueDateTime, " +
		"valueUri, valueBoolean, valueInteger, valueReference or valueCoding)")
}

// truncate shortens s to at most n bytes (on a rune boundary) for echoing
// client input in diagnostics.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
