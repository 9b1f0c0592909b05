package export

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/fhir"
)

// Kick-off parameter names (case-sensitive, as FHIR search parameters are).
const (
	paramOutputFormat = "_outputFormat"
	paramSince        = "_since"
	paramUntil        = "_until"
	paramType         = "_type"
	paramElements     = "_elements"
	paramPatient      = "patient"
	paramAssociated   = "includeAssociatedData"
	paramOrganizeBy   = "organizeOutputBy"
)

// Limits of a kick-off, generous for real clients (R4 has 146 resource
// types, and a client asking for more than a thousand top-level elements
// wants whole resources): past one, ParseRequest refuses the request with
// a *RequestError naming the parameter and the limit, lenient or not. They
// bound the memory and CPU a kick-off and its job record can take.
const (
	// MaxTypeEntries caps the _type entries of a kick-off, all _type
	// parameters together, duplicates and skipped entries included.
	MaxTypeEntries = 500
	// MaxElementsEntries caps the _elements entries, counted the same way.
	MaxElementsEntries = 1000
	// MaxPatientEntries caps the patient entries (references), counted
	// the same way.
	MaxPatientEntries = 10000
	// MaxIgnored caps what a lenient kick-off may skip (ignored parameters
	// and skipped entries, each one line of the manifest's error file).
	MaxIgnored = 100
	// maxElementName bounds an element name: R4's longest are about 30
	// characters.
	maxElementName = 64
)

// ndjsonFormat is the only output format; every accepted _outputFormat
// spelling means it.
const ndjsonFormat = "application/fhir+ndjson"

// OperationOutcome issue codes used for kick-off errors.
const (
	codeInvalid      = "invalid"       // the request is malformed as a whole (cardinality, ordering)
	codeValue        = "value"         // a value is not of the parameter's type (instant, list entry)
	codeNotSupported = "not-supported" // well-formed but not something this server does
	codeTooCostly    = "too-costly"    // past a limit of this server
)

// unsupportedParams are the IG's kick-off parameters this server does not
// implement (yet), with the reason shown to the client. Without lenient
// handling they are refused; with it they are ignored and reported.
var unsupportedParams = map[string]string{
	"allowPartialManifests": "allowPartialManifests is not supported yet",
}

// includeAssociatedData codes (the IG's include-associated-data value set,
// https://hl7.org/fhir/uv/bulkdata/export.html).
const (
	associatedLatest   = "LatestProvenanceResources"
	associatedRelevant = "RelevantProvenanceResources"
	associatedNone     = "_none"
)

// knownParams is every parameter name ParseRequest understands, for the
// "did you mean" hint on a wrongly cased name.
var knownParams = []string{
	paramOutputFormat, paramSince, paramUntil, paramType, paramElements,
	paramPatient, paramAssociated, paramTypeFilter, paramOrganizeBy, "allowPartialManifests",
}

// ParseRequest validates kick-off parameters ([base]/$export,
// [base]/Patient/$export or [base]/Group/[id]/$export, as opts.Level
// says; FHIR Bulk Data 2.0–3.0) and returns the request to run, or a
// *RequestError naming the parameter and saying what is wrong with it.
//
// Rules (the IG's kick-off request, query parameters and lenient handling,
// https://hl7.org/fhir/uv/bulkdata/export.html):
//
//   - Parameter names are case-sensitive. Params carry one value each, in
//     request order; _type, _elements, patient and includeAssociatedData
//     values are comma lists and may also be repeated (A,B&_type=C ≡
//     A,B,C); list entries are trimmed and deduplicated in order.
//     _outputFormat, _since, _until and organizeOutputBy have cardinality
//     0..1: a second occurrence is refused, even with the same value and
//     even when lenient.
//   - _outputFormat: application/fhir+ndjson (default), application/ndjson
//     or ndjson, case-insensitively; a space in place of the "+" (an
//     unencoded "+" in a query string) is accepted. Anything else is
//     refused even when lenient: writing NDJSON for a client that asked
//     for another format is not "safely ignoring" the parameter.
//   - _since and _until: FHIR instants only (seconds and a zone are
//     required, https://hl7.org/fhir/R4/datatypes.html#instant; dates and
//     zone-less dateTimes are refused). A space in place of the "+" of the
//     zone offset (an unencoded "+" in a query string) is read as "+".
//     Malformed, in the future (after opts.Now), _until not after
//     _since, or a window with no whole microsecond in it: refused, even
//     when lenient (ignoring them would export a different data set).
//   - _since is exclusive ("changed after"; transactionTime is inclusive,
//     so chained exports neither miss nor repeat a change): Since is the
//     instant rounded down to the microsecond, so t > Since ⟺ t > _since
//     for every commit time t. _until is exclusive too ("changed before"):
//     Until (inclusive, see Request) is the last whole microsecond before
//     _until. A _since at or before the Unix epoch is Since 0 with
//     HasSince set: every resource, and every deletion, is after it.
//   - _type: each entry must be an R4 resource type. An unknown or empty
//     entry is refused; when lenient it is skipped and reported in
//     Ignored, unless that leaves no type at all, which is refused
//     (exporting every type is not what the client asked for).
//   - _elements: entries are "element" (every type) or "Type.element",
//     element a top-level name ([a-z][A-Za-z0-9]*). Nested paths, unknown
//     types, bad names and empty entries are refused; when lenient they
//     are skipped and reported (if none is left, resources are exported
//     whole, which the IG allows: a server may return more than asked).
//   - patient, at Patient and Group level (the IG has it in POST bodies;
//     it is taken from a query string too): each entry is a Patient
//     reference, Patient/[id], Patient/[id]/_history/[version], or an
//     http(s) URL ending in one of those; ids and versions are FHIR ids
//     ([A-Za-z0-9-.]{1,64}). Patients holds the ids. An empty, malformed
//     or non-Patient entry is refused (code value); when lenient it is
//     skipped and reported, unless none is left, which is refused
//     (exporting every patient is not what the client asked for). At
//     system level patient is refused (not-supported); when lenient it is
//     ignored and reported.
//   - includeAssociatedData, at every level: LatestProvenanceResources,
//     RelevantProvenanceResources or _none. The least restrictive wins
//     (Relevant over Latest); _none alone is ProvenanceNone; _none with
//     another code is a contradiction, refused (invalid), and when lenient
//     the other code wins and _none is reported. Any other code (other
//     "_" server codes included) or an empty entry is refused
//     (not-supported, or value for an empty one); when lenient it is
//     skipped and reported.
//   - organizeOutputBy: Patient, at Patient and Group level. Refused: at
//     system level and any value but Patient (not-supported), an empty
//     value (value); when lenient, ignored and reported (files are then
//     by resource type).
//   - _typeFilter, at every level: each value is one FHIR search query
//     Type?name=value&..., or several joined by commas where a comma is
//     followed by Type? (Bulk Data 2.0); they may be repeated. Queries for
//     one type are ORed, the parameters of one are ANDed, and a type with
//     none is exported whole; a query for a type outside _type, or (at
//     Patient and Group level) outside the patient compartment, has no
//     effect. internal/search says which queries are evaluated; any other
//     (unknown or unsupported parameter or modifier, result parameter,
//     chain, malformed value, no Type?) is refused (not-supported), and
//     when lenient it is reported and its type is exported with no
//     _typeFilter at all, a superset of what was asked, never a subset.
//     More than MaxTypeFilters queries are refused (too-costly).
//   - allowPartialManifests and unknown parameters are refused
//     (not-supported); when lenient they are ignored and reported.
//   - More than MaxTypeEntries _type entries, MaxElementsEntries
//     _elements entries, MaxPatientEntries patient entries or MaxIgnored
//     ignored items are refused (code too-costly), lenient or not.
//     Deduplication uses sets, so parsing is linear in the size of the
//     request.
//
// The first problem found, in parameter order, is the error; checks that
// involve several parameters (_since/_until order, no type or patient
// left, _none with another includeAssociatedData code) come after.
func ParseRequest(params []Param, opts ParseOptions) (Request, error) {
	p := requestParser{
		opts: opts,
		req: Request{
			Until:        index.Unbounded,
			OutputFormat: ndjsonFormat,
			Lenient:      opts.Lenient,
		},
	}
	for _, prm := range params {
		if err := p.param(prm); err != nil {
			return Request{}, err
		}
	}
	if err := p.finish(); err != nil {
		return Request{}, err
	}
	return p.req, nil
}

type requestParser struct {
	opts ParseOptions
	req  Request

	// seen holds the first value of each single-valued parameter.
	seen map[string]string

	since, until       instant
	hasSince, hasUntil bool

	hasType     bool     // some _type parameter was given
	typeSkipped []string // lenient: the _type entries skipped, for the "no type left" error

	hasPatient     bool     // some patient parameter was given (Patient or Group level)
	patientSkipped []string // lenient: the first patient entries skipped, for the "no patient left" error
	skippedCount   int      // lenient: how many patient entries were skipped

	// _typeFilter queries seen (deduplicated), their count, and the types
	// to export unfiltered (lenient: one of their queries was ignored).
	filters       []typedQuery
	filterSet     map[string]struct{}
	filterEntries int
	unfiltered    map[string]bool

	// includeAssociatedData codes seen.
	assocLatest, assocRelevant, assocNone bool

	// Entry counts, for the limits, and sets for O(1) deduplication.
	typeEntries, elementEntries, patientEntries int
	typeSet, patientSet                         map[string]struct{}
	elementSet                                  map[Element]struct{}
	ignoredSet                                  map[string]struct{}
	// probes counts the membership checks of deduplication: one per entry,
	// whatever the request size (tests check it stays linear).
	probes int
}

func (p *requestParser) param(prm Param) error {
	switch prm.Name {
	case paramOutputFormat:
		if err := p.once(prm); err != nil {
			return err
		}
		if !isNDJSON(prm.Value) {
			return &RequestError{Param: prm.Name, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
				"_outputFormat %s is not supported; use application/fhir+ndjson (or application/ndjson, ndjson)",
				quote(prm.Value))}
		}
	case paramSince, paramUntil:
		if err := p.once(prm); err != nil {
			return err
		}
		t, err := p.instantParam(prm)
		if err != nil {
			return err
		}
		if prm.Name == paramSince {
			p.since, p.hasSince = t, true
		} else {
			p.until, p.hasUntil = t, true
		}
	case paramType:
		p.hasType = true
		return p.types(prm)
	case paramElements:
		return p.elements(prm)
	case paramPatient:
		if p.opts.Level == LevelSystem {
			return p.ignore(&RequestError{Param: prm.Name, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
				"patient is for [base]/Patient/$export and [base]/Group/[id]/$export, not the system-level [base]/$export (got patient=%s)",
				quote(prm.Value))})
		}
		p.hasPatient = true
		return p.patients(prm)
	case paramAssociated:
		return p.associated(prm)
	case paramTypeFilter:
		return p.typeFilter(prm)
	case paramOrganizeBy:
		if err := p.once(prm); err != nil {
			return err
		}
		return p.organizeBy(prm)
	default:
		if why, ok := unsupportedParams[prm.Name]; ok {
			return p.ignore(&RequestError{Param: prm.Name, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
				"%s (got %s=%s)", why, prm.Name, quote(prm.Value))})
		}
		diag := fmt.Sprintf("unknown parameter %s (value %s)", quote(prm.Name), quote(prm.Value))
		for _, k := range knownParams {
			if strings.EqualFold(k, prm.Name) {
				diag += fmt.Sprintf(" (parameter names are case-sensitive: did you mean %s?)", k)
				break
			}
		}
		return p.ignore(&RequestError{Param: prm.Name, Code: codeNotSupported, Diagnostics: diag})
	}
	return nil
}

// once refuses a second occurrence of a 0..1 parameter.
func (p *requestParser) once(prm Param) error {
	if first, ok := p.seen[prm.Name]; ok {
		return &RequestError{Param: prm.Name, Code: codeInvalid, Diagnostics: fmt.Sprintf(
			"%s may be given at most once, but was given more than once (%s and %s)",
			prm.Name, quote(first), quote(prm.Value))}
	}
	if p.seen == nil {
		p.seen = make(map[string]string, 3)
	}
	p.seen[prm.Name] = prm.Value
	return nil
}

// ignore reports e as the error, or when lenient records it in Ignored
// (once) and carries on; past MaxIgnored distinct items it refuses the
// request.
func (p *requestParser) ignore(e *RequestError) error {
	if !p.opts.Lenient {
		return e
	}
	d := "ignored (lenient handling): " + e.Diagnostics
	if !addOnce(&p.ignoredSet, d, &p.probes) {
		return nil
	}
	if len(p.req.Ignored) >= MaxIgnored {
		return &RequestError{Param: e.Param, Code: codeTooCostly, Diagnostics: fmt.Sprintf(
			"more than %d parameters or entries would be ignored (lenient handling); this one is %s: remove the ones this server does not support",
			MaxIgnored, quote(e.Param))}
	}
	p.req.Ignored = append(p.req.Ignored, d)
	return nil
}

// addOnce adds k to the set *set (created on first use) and reports
// whether it was new; probes counts the lookup.
func addOnce[K comparable](set *map[K]struct{}, k K, probes *int) bool {
	*probes++
	if *set == nil {
		*set = map[K]struct{}{}
	}
	if _, dup := (*set)[k]; dup {
		return false
	}
	(*set)[k] = struct{}{}
	return true
}

// tooMany is the error of a list parameter past its limit.
func tooMany(param string, limit int) *RequestError {
	return &RequestError{Param: param, Code: codeTooCostly, Diagnostics: fmt.Sprintf(
		"%s has more than %d entries (all %s parameters together); this server accepts at most %d",
		param, limit, param, limit)}
}

func (p *requestParser) instantParam(prm Param) (instant, error) {
	t, problem := parseInstant(prm.Value)
	if problem != "" {
		return instant{}, &RequestError{Param: prm.Name, Code: codeValue, Diagnostics: fmt.Sprintf(
			"%s %s is not a FHIR instant (YYYY-MM-DDThh:mm:ss[.fraction] then Z or ±hh:mm, e.g. 2026-01-02T03:04:05Z): %s",
			prm.Name, quote(prm.Value), problem)}
	}
	if t.after(p.opts.Now) {
		return instant{}, &RequestError{Param: prm.Name, Code: codeValue, Diagnostics: fmt.Sprintf(
			"%s %s is in the future (the server's time is %s)",
			prm.Name, quote(prm.Value), index.FormatInstant(p.opts.Now))}
	}
	return t, nil
}

func (p *requestParser) types(prm Param) error {
	for entry := range strings.SplitSeq(prm.Value, ",") {
		if p.typeEntries++; p.typeEntries > MaxTypeEntries {
			return tooMany(paramType, MaxTypeEntries)
		}
		typ := strings.TrimSpace(entry)
		var e *RequestError
		switch {
		case typ == "":
			e = &RequestError{Param: paramType, Code: codeValue, Diagnostics: fmt.Sprintf(
				"_type %s has an empty entry; expected comma-separated resource types, e.g. Patient,Observation",
				quote(prm.Value))}
		case !fhir.IsResourceType(typ):
			e = &RequestError{Param: paramType, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
				"_type %s is not a FHIR R4 resource type%s", quote(typ), typeHint(typ))}
		default:
			if addOnce(&p.typeSet, typ, &p.probes) {
				p.req.Types = append(p.req.Types, strings.Clone(typ))
			}
			continue
		}
		if err := p.ignore(e); err != nil {
			return err
		}
		p.typeSkipped = append(p.typeSkipped, quote(typ))
	}
	return nil
}

func (p *requestParser) patients(prm Param) error {
	for entry := range strings.SplitSeq(prm.Value, ",") {
		if p.patientEntries++; p.patientEntries > MaxPatientEntries {
			return tooMany(paramPatient, MaxPatientEntries)
		}
		entry = strings.TrimSpace(entry)
		id, problem := parsePatientRef(entry)
		if problem == "" {
			if addOnce(&p.patientSet, id, &p.probes) {
				p.req.Patients = append(p.req.Patients, strings.Clone(id))
			}
			continue
		}
		d := fmt.Sprintf("patient %s is not a Patient reference (Patient/[id], Patient/[id]/_history/[version] "+
			"or an http(s) URL ending in one of those): %s", quote(entry), problem)
		if entry == "" {
			d = fmt.Sprintf("patient %s has an empty entry; expected comma-separated Patient references, e.g. Patient/123",
				quote(prm.Value))
		}
		if err := p.ignore(&RequestError{Param: paramPatient, Code: codeValue, Diagnostics: d}); err != nil {
			return err
		}
		if p.skippedCount++; len(p.patientSkipped) < 5 {
			p.patientSkipped = append(p.patientSkipped, quote(entry))
		}
	}
	return nil
}

// parsePatientRef returns the id of a Patient reference (Patient/[id],
// Patient/[id]/_history/[version], or an http(s) URL ending in one of
// those), or says what is wrong with it.
func parsePatientRef(ref string) (id, problem string) {
	if ref == "" {
		return "", "it is empty"
	}
	if scheme, rest, abs := strings.Cut(ref, "://"); abs {
		if !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
			return "", "an absolute reference must be an http or https URL"
		}
		if strings.ContainsAny(rest, "?#") {
			return "", "a reference has no query or fragment"
		}
		_, path, ok := strings.Cut(rest, "/")
		if !ok {
			return "", "the URL has no path"
		}
		// Keep the last two segments, or four with _history.
		segs := strings.Split(path, "/")
		keep := 2
		if n := len(segs); n >= 4 && segs[n-2] == "_history" {
			keep = 4
		}
		if len(segs) < keep {
			return "", "the URL does not end in Patient/[id]"
		}
		ref = strings.Join(segs[len(segs)-keep:], "/")
	}
	segs := strings.Split(ref, "/")
	switch {
	case len(segs) == 1:
		if fhir.IsID(ref) {
			return "", "a bare id is not a reference; write Patient/" + ref
		}
		return "", "it is not of the form Patient/[id]"
	case len(segs) != 2 && (len(segs) != 4 || segs[2] != "_history"):
		return "", "it is not of the form Patient/[id] or Patient/[id]/_history/[version]"
	case segs[0] != "Patient":
		if fhir.IsResourceType(segs[0]) {
			return "", "it refers to a " + segs[0] + ", not a Patient"
		}
		if strings.EqualFold(segs[0], "Patient") {
			return "", "resource types are case-sensitive: write Patient/" + segs[1]
		}
		return "", "it is not of the form Patient/[id]"
	case !fhir.IsID(segs[1]):
		return "", "the id " + quote(segs[1]) + " is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)"
	case len(segs) == 4 && !fhir.IsID(segs[3]):
		return "", "the version " + quote(segs[3]) + " is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)"
	}
	return segs[1], ""
}

func (p *requestParser) associated(prm Param) error {
	for entry := range strings.SplitSeq(prm.Value, ",") {
		entry = strings.TrimSpace(entry)
		var e *RequestError
		switch entry {
		case associatedLatest:
			p.assocLatest = true
			continue
		case associatedRelevant:
			p.assocRelevant = true
			continue
		case associatedNone:
			p.assocNone = true
			continue
		case "":
			e = &RequestError{Param: paramAssociated, Code: codeValue, Diagnostics: fmt.Sprintf(
				"includeAssociatedData %s has an empty entry; expected comma-separated codes, e.g. LatestProvenanceResources",
				quote(prm.Value))}
		default:
			hint := ""
			for _, c := range []string{associatedLatest, associatedRelevant, associatedNone} {
				if strings.EqualFold(c, entry) {
					hint = " (codes are case-sensitive: did you mean " + c + "?)"
				}
			}
			e = &RequestError{Param: paramAssociated, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
				"includeAssociatedData %s is not supported%s; supported: LatestProvenanceResources, RelevantProvenanceResources, _none",
				quote(entry), hint)}
		}
		if err := p.ignore(e); err != nil {
			return err
		}
	}
	return nil
}

func (p *requestParser) organizeBy(prm Param) error {
	var e *RequestError
	switch {
	case prm.Value == "":
		e = &RequestError{Param: paramOrganizeBy, Code: codeValue, Diagnostics: "organizeOutputBy is empty; the supported value is Patient"}
	case prm.Value != "Patient":
		hint := ""
		if strings.EqualFold(prm.Value, "Patient") {
			hint = " (resource types are case-sensitive: did you mean Patient?)"
		}
		e = &RequestError{Param: paramOrganizeBy, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
			"organizeOutputBy %s is not supported%s; the supported value is Patient", quote(prm.Value), hint)}
	case p.opts.Level == LevelSystem:
		e = &RequestError{Param: paramOrganizeBy, Code: codeNotSupported, Diagnostics: "organizeOutputBy=Patient is supported " +
			"at Patient and Group level ([base]/Patient/$export, [base]/Group/[id]/$export), not at system level"}
	default:
		p.req.OrganizeBy = "Patient"
		return nil
	}
	return p.ignore(e)
}

func (p *requestParser) elements(prm Param) error {
	for entry := range strings.SplitSeq(prm.Value, ",") {
		if p.elementEntries++; p.elementEntries > MaxElementsEntries {
			return tooMany(paramElements, MaxElementsEntries)
		}
		entry = strings.TrimSpace(entry)
		el, e := parseElement(entry, prm.Value)
		if e != nil {
			if err := p.ignore(e); err != nil {
				return err
			}
			continue
		}
		if addOnce(&p.elementSet, el, &p.probes) {
			// Copies, so the job does not pin the whole parameter value.
			p.req.Elements = append(p.req.Elements, Element{Type: strings.Clone(el.Type), Name: strings.Clone(el.Name)})
		}
	}
	return nil
}

// parseElement parses one _elements entry (trimmed); value is the whole
// parameter value, for the diagnostics.
func parseElement(entry, value string) (Element, *RequestError) {
	bad := func(code, format string, args ...any) (Element, *RequestError) {
		return Element{}, &RequestError{Param: paramElements, Code: code, Diagnostics: fmt.Sprintf(format, args...)}
	}
	if entry == "" {
		return bad(codeValue, "_elements %s has an empty entry; expected comma-separated element names, e.g. id,Patient.birthDate",
			quote(value))
	}
	typ, name, dotted := strings.Cut(entry, ".")
	if !dotted {
		typ, name = "", entry
	} else if typ == "" || typ[0] < 'A' || typ[0] > 'Z' {
		// "name.given", ".id": a path below a top-level element.
		return bad(codeNotSupported, "_elements %s: only top-level elements (element or Type.element) are supported", quote(entry))
	} else if !fhir.IsResourceType(typ) {
		return bad(codeNotSupported, "_elements %s: %s is not a FHIR R4 resource type%s", quote(entry), quote(typ), typeHint(typ))
	} else if strings.Contains(name, ".") {
		return bad(codeNotSupported, "_elements %s: only top-level elements (element or Type.element) are supported", quote(entry))
	}
	if !isElementName(name) {
		hint := ""
		if strings.HasSuffix(name, "[x]") {
			hint = " (name the element as it appears in JSON, e.g. valueQuantity for value[x])"
		}
		return bad(codeValue, "_elements %s: %s is not an element name (a lower-case letter, then letters and digits, at most 64)%s",
			quote(entry), quote(name), hint)
	}
	return Element{Type: typ, Name: name}, nil
}

// isElementName reports whether s is a top-level element name as FHIR JSON
// spells it: [a-z][A-Za-z0-9]*, at most maxElementName characters.
func isElementName(s string) bool {
	if s == "" || len(s) > maxElementName || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// typeHint suggests the right spelling of a wrongly cased resource type.
func typeHint(s string) string {
	for _, t := range fhir.ResourceTypes() {
		if strings.EqualFold(t, s) {
			return " (resource types are case-sensitive: did you mean " + t + "?)"
		}
	}
	return ""
}

// finish runs the checks that involve several parameters and converts the
// instants.
func (p *requestParser) finish() error {
	if p.hasType && len(p.req.Types) == 0 {
		// Only reachable when lenient: strict parsing failed on the first bad entry.
		return &RequestError{Param: paramType, Code: codeNotSupported, Diagnostics: fmt.Sprintf(
			"_type names no exportable resource type (skipped: %s); refusing rather than exporting every type",
			strings.Join(p.typeSkipped, ", "))}
	}
	if p.hasPatient && len(p.req.Patients) == 0 {
		// Only reachable when lenient, as for _type.
		skipped := strings.Join(p.patientSkipped, ", ")
		if more := p.skippedCount - len(p.patientSkipped); more > 0 {
			skipped += fmt.Sprintf(" and %d more", more)
		}
		return &RequestError{Param: paramPatient, Code: codeValue, Diagnostics: fmt.Sprintf(
			"patient names no valid Patient reference (skipped: %s); refusing rather than exporting every patient", skipped)}
	}
	if err := p.provenance(); err != nil {
		return err
	}
	p.finishTypeFilters()
	if p.hasSince {
		p.req.Since, p.req.HasSince = p.since.sinceBound(), true
	}
	if p.hasUntil {
		if p.hasSince && p.until.cmp(p.since) <= 0 {
			return &RequestError{Param: paramUntil, Code: codeInvalid, Diagnostics: fmt.Sprintf(
				"_until %s is not later than _since %s", quote(p.seen[paramUntil]), quote(p.seen[paramSince]))}
		}
		until, ok := p.until.untilBound()
		if !ok || until <= p.req.Since {
			d := fmt.Sprintf("_until %s leaves no whole microsecond after ", quote(p.seen[paramUntil]))
			if p.hasSince {
				d += fmt.Sprintf("_since %s", quote(p.seen[paramSince]))
			} else {
				d += "the Unix epoch"
			}
			return &RequestError{Param: paramUntil, Code: codeInvalid, Diagnostics: d +
				"; commit times have microsecond precision, so no resource could match"}
		}
		p.req.Until = until
	}
	return nil
}

// provenance resolves the includeAssociatedData codes seen: the least
// restrictive wins, and _none with another code is a contradiction.
func (p *requestParser) provenance() error {
	mode, code := ProvenanceNone, ""
	switch {
	case p.assocRelevant:
		mode, code = ProvenanceRelevant, associatedRelevant
	case p.assocLatest:
		mode, code = ProvenanceLatest, associatedLatest
	}
	if p.assocNone && mode != ProvenanceNone {
		if !p.opts.Lenient {
			return &RequestError{Param: paramAssociated, Code: codeInvalid, Diagnostics: fmt.Sprintf(
				"includeAssociatedData _none (no associated data) contradicts %s, also given; send one or the other", code)}
		}
		if err := p.ignore(&RequestError{Param: paramAssociated, Code: codeInvalid, Diagnostics: fmt.Sprintf(
			"includeAssociatedData _none contradicts %s, also given; %s is kept (the least restrictive)", code, code)}); err != nil {
			return err
		}
	}
	p.req.Provenance = mode
	return nil
}

// isNDJSON reports whether v is one of the accepted _outputFormat spellings
// (the three the IG requires a server to accept,
// https://hl7.org/fhir/uv/bulkdata/export.html), case-insensitively, with a
// space standing for an unencoded "+".
func isNDJSON(v string) bool {
	return strings.EqualFold(v, "application/fhir+ndjson") ||
		strings.EqualFold(v, "application/fhir ndjson") ||
		strings.EqualFold(v, "application/ndjson") ||
		strings.EqualFold(v, "ndjson")
}

// quote quotes a client-supplied value for diagnostics, cut to a sane
// length.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// instant is a parsed FHIR instant: us, the microseconds since the Unix
// epoch rounded down (negative before the epoch), and sub, the fraction
// digits past the sixth without trailing zeros ("" when the instant is a
// whole microsecond).
type instant struct {
	us  int64
	sub string
}

// cmp orders instants exactly (fraction digit strings without trailing
// zeros compare like the fractions).
func (t instant) cmp(u instant) int {
	if t.us != u.us {
		if t.us < u.us {
			return -1
		}
		return 1
	}
	return strings.Compare(t.sub, u.sub)
}

// after reports whether t is strictly after the commit time now.
func (t instant) after(now uint64) bool {
	if now > math.MaxInt64 {
		return false
	}
	return t.us > int64(now) || t.us == int64(now) && t.sub != ""
}

// sinceBound is Request.Since for _since=t: commit times (whole µs) after
// t are exactly those after t rounded down.
func (t instant) sinceBound() uint64 {
	return uint64(max(t.us, 0))
}

// untilBound is Request.Until for _until=t: the last whole microsecond
// strictly before t (t rounded up, minus 1µs). ok is false when there is
// none at or after the epoch.
func (t instant) untilBound() (uint64, bool) {
	last := t.us - 1
	if t.sub != "" {
		last = t.us
	}
	if last < 0 {
		return 0, false
	}
	return uint64(last), true
}

// parseInstant parses a FHIR R4 instant,
// YYYY-MM-DDThh:mm:ss[.f+](Z|(+|-)hh:mm), strictly: the date must exist,
// the year is 0001–9999, the offset at most ±14:00. A space where the
// offset's sign should be is read as "+" (an unencoded "+" in a query
// string). Leap seconds (:60) are refused. problem says what is wrong.
func parseInstant(s string) (t instant, problem string) {
	// Fixed-width head: 2006-01-02T15:04:05
	const head = len("2006-01-02T15:04:05")
	if len(s) < len("2006-01-02") || !digits(s[:4]) || s[4] != '-' || !digits(s[5:7]) || s[7] != '-' || !digits(s[8:10]) {
		return t, "it does not start with a date YYYY-MM-DD"
	}
	if len(s) == len("2006-01-02") {
		return t, "a date is not enough: an instant needs a time with seconds and a timezone"
	}
	if s[10] != 'T' {
		return t, "the date must be followed by T and the time"
	}
	if len(s) < head || !digits(s[11:13]) || s[13] != ':' || !digits(s[14:16]) || s[16] != ':' || !digits(s[17:19]) {
		return t, "the time must be hh:mm:ss (seconds are required)"
	}
	year, month, day := atoi(s[:4]), atoi(s[5:7]), atoi(s[8:10])
	hour, minute, sec := atoi(s[11:13]), atoi(s[14:16]), atoi(s[17:19])
	switch {
	case year == 0:
		return t, "year 0000 does not exist"
	case month < 1 || month > 12:
		return t, "month " + s[5:7] + " does not exist"
	case day < 1 || day > fhir.DaysIn(year, month):
		return t, "day " + s[8:10] + " does not exist in " + s[:7]
	case hour > 23:
		return t, "hour " + s[11:13] + " does not exist"
	case minute > 59:
		return t, "minute " + s[14:16] + " does not exist"
	case sec == 60:
		return t, "leap seconds are not supported"
	case sec > 59:
		return t, "second " + s[17:19] + " does not exist"
	}
	rest := s[head:]
	var frac string
	if rest != "" && rest[0] == '.' {
		n := 1
		for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return t, "the fraction of a second after '.' has no digits"
		}
		frac, rest = rest[1:n], rest[n:]
	}
	var offset int // seconds east of UTC
	switch {
	case rest == "":
		return t, "a timezone (Z or ±hh:mm) is required"
	case rest == "Z":
	case len(rest) == len("+hh:mm") && (rest[0] == '+' || rest[0] == '-' || rest[0] == ' ') &&
		digits(rest[1:3]) && rest[3] == ':' && digits(rest[4:6]):
		oh, om := atoi(rest[1:3]), atoi(rest[4:6])
		if om > 59 || oh > 14 || oh == 14 && om != 0 {
			return t, "the timezone offset " + rest + " is out of range (at most ±14:00)"
		}
		offset = oh*3600 + om*60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return t, "it must end with a timezone, Z or ±hh:mm, after the seconds"
	}
	secs := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC).Unix() - int64(offset)
	var us int64
	for i := range 6 {
		us *= 10
		if i < len(frac) {
			us += int64(frac[i] - '0')
		}
	}
	if len(frac) > 6 {
		t.sub = strings.TrimRight(frac[6:], "0")
	}
	t.us = secs*1_000_000 + us
	return t, ""
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// atoi converts a short string of ASCII digits (checked by digits).
func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}
