package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"strings"
)

// Content negotiation of the FHIR JSON answers (RFC 9110 section 12.5.1,
// https://www.rfc-editor.org/rfc/rfc9110#section-12.5.1).

// mediaRange is one element of an Accept header.
type mediaRange struct {
	typ, sub string // lower case; "*" for a wildcard
	params   int    // media-type parameters besides the weight: more is more specific
	q        int    // weight in thousandths, 0..1000
}

// parseAccept reads the media ranges of every Accept line. present
// reports whether any non-empty element was sent at all. An element that
// is not type/subtype (or type/*, */*) is dropped, and so is */subtype,
// which the grammar does not allow. The weight is the first q parameter
// (1 when absent, 0 when malformed); the parameters before it, such as
// fhirVersion or charset, make a range more specific but never stop it
// matching (bulkstream serves R4 in UTF-8 only).
func parseAccept(values []string) (ranges []mediaRange, present bool) {
	for _, v := range values {
		for _, elem := range splitList(v) {
			present = true
			parts := splitQuoted(elem, ';')
			typ, sub, ok := strings.Cut(strings.ToLower(strings.TrimSpace(parts[0])), "/")
			typ, sub = strings.TrimSpace(typ), strings.TrimSpace(sub)
			if !ok || typ == "" || sub == "" || (typ == "*" && sub != "*") {
				continue
			}
			mr := mediaRange{typ: typ, sub: sub, q: 1000}
			for _, p := range parts[1:] {
				name, val, _ := strings.Cut(p, "=")
				if strings.EqualFold(strings.TrimSpace(name), "q") {
					mr.q = int(math.Round(qvalue(val) * 1000))
					break
				}
				if strings.TrimSpace(p) != "" {
					mr.params++
				}
			}
			ranges = append(ranges, mr)
		}
	}
	return ranges, present
}

// weightOf returns the weight ranges give the media type typ/sub (lower
// case): that of the most specific range matching it (type/subtype beats
// type/*, which beats */*; among exact matches, more parameters win), the
// highest of equally specific ones, and 0 when none matches. A weight of
// 0 means "not acceptable", even when a wildcard allows the rest.
func weightOf(ranges []mediaRange, typ, sub string) int {
	best, bestSpec := 0, -1
	for _, mr := range ranges {
		var spec int
		switch {
		case mr.typ == "*":
			spec = 0
		case mr.typ != typ:
			continue
		case mr.sub == "*":
			spec = 1
		case mr.sub != sub:
			continue
		default:
			spec = 2 + mr.params
		}
		if spec > bestSpec || (spec == bestSpec && mr.q > best) {
			best, bestSpec = mr.q, spec
		}
	}
	return best
}

// fhirJSONWeight is the weight ranges give FHIR JSON: that of
// application/fhir+json, or of application/json+fhir (the DSTU2 spelling
// some clients send) when that is named explicitly, so that a wildcard
// never overrides "application/fhir+json;q=0".
func fhirJSONWeight(ranges []mediaRange) int {
	w := weightOf(ranges, "application", "fhir+json")
	for _, mr := range ranges {
		if mr.typ == "application" && mr.sub == "json+fhir" {
			w = max(w, mr.q)
		}
	}
	return w
}

// fhirContentType is the Content-Type of a FHIR resource (an
// OperationOutcome, the CapabilityStatement, an OperationDefinition)
// answering r, and the one place it is decided: application/json when
// r's Accept gives application/json a higher weight than
// application/fhir+json (Accept: application/json, or
// "application/json, application/fhir+json;q=0.5"), otherwise
// application/fhir+json (no Accept, */*, application/*, a tie, or nothing
// JSON at all). The body is the same: both are FHIR JSON
// (https://hl7.org/fhir/R4/http.html#mime-type), and some clients parse
// only bodies labelled application/json.
func fhirContentType(r *http.Request) string {
	if r == nil {
		return contentTypeFHIR
	}
	ranges, _ := parseAccept(r.Header.Values("Accept"))
	if weightOf(ranges, "application", "json") > fhirJSONWeight(ranges) {
		return contentTypeJSON
	}
	return contentTypeFHIR
}

// setFHIRContentType sets the negotiated Content-Type of a FHIR resource
// answering r, with Vary: Accept (RFC 9110 section 12.5.5) since another
// Accept may get another one.
func setFHIRContentType(h http.Header, r *http.Request) {
	h.Set("Content-Type", fhirContentType(r))
	h.Add("Vary", "Accept")
}

// qvalue returns a weight (RFC 9110 section 12.4.2) in 0..1: the value of
// a q parameter, 0 when it is not a number in that range. Surrounding
// spaces are allowed.
func qvalue(s string) float64 {
	q, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(q >= 0 && q <= 1) { // also refuses NaN
		return 0
	}
	return q
}

// splitList splits a comma-separated header value, ignoring commas inside
// quoted strings, and drops empty elements.
func splitList(v string) []string {
	var out []string
	for _, s := range splitQuoted(v, ',') {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// splitQuoted splits v at every sep outside a quoted string (a backslash
// in one escapes the next byte). It always returns at least one element.
func splitQuoted(v string, sep byte) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	return append(out, v[start:])
}

// paramQ returns the weight in parameters (";q=0.5;..." after a coding or
// media range): 1 when there is no q, 0 when it is malformed.
func paramQ(params string) float64 {
	for _, p := range splitQuoted(params, ';') {
		name, val, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(name), "q") {
			return qvalue(val)
		}
	}
	return 1
}
