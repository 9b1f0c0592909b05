package search

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// Limits of one query, so that a client cannot make the cost of the scan
// that evaluates it explode.
const (
	// MaxQueryBytes is the longest query ParseQuery accepts.
	MaxQueryBytes = 8 << 10
	// MaxQueryValues is the most values (a :missing counts as one) that
	// the parameters of one query may have together.
	MaxQueryValues = 64
)

// Error is a _typeFilter query ParseQuery refuses. Its message is fit for
// an OperationOutcome's diagnostics.
type Error struct {
	// Query is the query as given.
	Query string
	// Param is the offending parameter as written, modifier included;
	// "" when the query itself is bad (no '?', unknown type, empty, too
	// long).
	Param string
	// Msg says what is wrong; it names the parameter when Param is set.
	Msg string
}

// maxErrorQuery is how much of the query Error's message quotes.
const maxErrorQuery = 200

func (e *Error) Error() string {
	q, more := e.Query, ""
	if len(q) > maxErrorQuery {
		n := maxErrorQuery
		for n > 0 && !utf8.RuneStart(q[n]) {
			n--
		}
		q, more = q[:n], "…"
	}
	if strings.ContainsFunc(q, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		q = strconv.Quote(q)
	}
	return "_typeFilter " + q + more + ": " + e.Msg
}

// SplitTypeFilter splits one _typeFilter value into its queries. Bulk
// Data 2.0 allowed several queries in one value, comma-joined
// (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#_typefilter-query-parameter);
// a comma separates two queries only where what follows it is a
// resource type and '?' (the pattern [A-Z][A-Za-z]*\?), and is not
// escaped (\,). Any other comma stays in its query: in a search value it
// is a value-level OR (status=active,completed). Empty pieces are
// dropped; the pieces are substrings of v, in order.
//
// v is the value after the outer query string's decoding (or a POST
// Parameters valueString).
func SplitTypeFilter(v string) []string {
	var out []string
	start := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++ // an escape: the next byte is not a separator
		case ',':
			if startsQuery(v[i+1:]) {
				if i > start {
					out = append(out, v[start:i])
				}
				start = i + 1
			}
		}
	}
	if start < len(v) {
		out = append(out, v[start:])
	}
	return out
}

// startsQuery reports whether s starts with [A-Z][A-Za-z]*\?.
func startsQuery(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '?':
			return true
		case 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z':
		default:
			return false
		}
	}
	return false
}

// notAllowed are the search result and control parameters
// (https://hl7.org/fhir/R4/search.html#return), which shape a search's
// answer rather than select resources: meaningless in a filter.
var notAllowed = map[string]bool{
	"_sort": true, "_count": true, "_include": true, "_revinclude": true,
	"_elements": true, "_summary": true, "_total": true, "_contained": true,
	"_containedType": true, "_format": true, "_pretty": true, "_type": true,
}

// notSupported are selecting parameters bulkstream does not evaluate:
// reverse chains, the filter and named-query languages, lists and
// full-text search.
var notSupported = map[string]bool{
	"_has": true, "_filter": true, "_query": true, "_list": true,
	"_text": true, "_content": true,
}

// datePrefixes are the comparison prefixes of a date value
// (https://hl7.org/fhir/R4/search.html#prefix).
var datePrefixes = []string{"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}

// ParseQuery parses one _typeFilter query, Type?name=value&name=value...
// (the search subset is described in the package documentation). Type
// must be an R4 resource type. The part after '?' is a query string: it
// is split on '&', each piece on its first '=', and name and value are
// then percent-decoded as url.QueryUnescape does ('+' is a space, %2C a
// comma that separates values, %26 an '&' inside a value), except that in
// a date value a space where the time zone's sign belongs is read as '+'
// (a '+' that was not percent-encoded). A repeated name gives one Param
// per occurrence (ANDed). A refused query is an *Error that names the
// offending parameter.
func ParseQuery(q string) (Query, error) {
	fail := func(param, format string, args ...any) (Query, error) {
		return Query{}, &Error{Query: q, Param: param, Msg: fmt.Sprintf(format, args...)}
	}
	if len(q) > MaxQueryBytes {
		return fail("", "query too long: %d bytes, at most %d", len(q), MaxQueryBytes)
	}
	if q == "" {
		return fail("", "empty query (want Type?name=value)")
	}
	typ, rest, ok := strings.Cut(q, "?")
	if !ok {
		if strings.Contains(strings.ToUpper(q), "%3F") {
			return fail("", "no '?' (want Type?name=value; the query seems percent-encoded twice)")
		}
		return fail("", "no '?' (want Type?name=value)")
	}
	if !fhir.IsResourceType(typ) {
		return fail("", "%s is not an R4 resource type", show(typ))
	}
	query := Query{Type: typ, Raw: q}
	nvalues := 0
	for piece := range strings.SplitSeq(rest, "&") {
		if piece == "" {
			continue
		}
		rawName, rawValue, hasValue := strings.Cut(piece, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return fail(rawName, "parameter %s: bad percent-encoding", show(rawName))
		}
		if !utf8.ValidString(name) {
			return fail(name, "parameter %s is not valid UTF-8", show(name))
		}
		if name == "" {
			return fail("", "a parameter without a name (=%s)", show(rawValue))
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return fail(name, "%s: bad percent-encoding in %s", show(name), show(rawValue))
		}
		if !utf8.ValidString(value) {
			return fail(name, "%s: value is not valid UTF-8", show(name))
		}
		p, msg := parseParam(typ, name, value, hasValue)
		if msg != "" {
			return fail(name, "%s", msg)
		}
		if p.Modifier == "missing" {
			nvalues++
		} else {
			nvalues += len(p.Values)
		}
		if nvalues > MaxQueryValues {
			return fail(name, "too many values: more than %d in one query (at %s)", MaxQueryValues, show(name))
		}
		query.Params = append(query.Params, p)
	}
	if len(query.Params) == 0 {
		return fail("", "no search parameter after '?'")
	}
	query.plan = newFastPlan(&query)
	return query, nil
}

// parseParam parses one decoded name=value of a query for resource type
// typ. A refusal is a message that names the parameter.
func parseParam(typ, name, value string, hasValue bool) (Param, string) {
	code, modifier, hasModifier := strings.Cut(name, ":")
	sname := show(name)
	switch {
	case code == "":
		return Param{}, fmt.Sprintf("parameter %s has no name before ':'", sname)
	case notAllowed[code]:
		return Param{}, fmt.Sprintf("%s is not allowed in _typeFilter (a search result parameter, not a filter)", sname)
	case notSupported[code]:
		return Param{}, fmt.Sprintf("%s is not supported in _typeFilter", sname)
	case strings.Contains(name, "."):
		return Param{}, fmt.Sprintf("%s: chained parameters are not supported", sname)
	case hasModifier && fhir.IsResourceType(modifier):
		return Param{}, fmt.Sprintf("%s: chained and type-restricted references (:%s) are not supported; use %s=%s/id", sname, modifier, show(code), modifier)
	}
	def, ok := fhirdefs.LookupSearchParam(typ, code)
	if !ok {
		return Param{}, fmt.Sprintf("%s has no search parameter %s", typ, show(code))
	}
	if def.Unsupported != "" {
		return Param{}, fmt.Sprintf("%s is not supported: %s", sname, def.Unsupported)
	}
	switch def.Type {
	case "token", "date", "reference", "string", "uri":
	default:
		return Param{}, fmt.Sprintf("%s is not supported: %s parameters are not evaluated", sname, def.Type)
	}
	p := Param{Name: name, Def: def, Modifier: modifier}
	switch {
	case !hasModifier:
	case modifier == "missing":
	case modifier == "not" && def.Type == "token":
	case (modifier == "exact" || modifier == "contains") && def.Type == "string":
	case modifier == "":
		return Param{}, fmt.Sprintf("%s: empty modifier", sname)
	default:
		return Param{}, fmt.Sprintf("%s: modifier :%s is not supported on a %s parameter (supported: :missing; :not on token; :exact and :contains on string)", sname, show(modifier), def.Type)
	}
	if !hasValue || value == "" {
		return Param{}, fmt.Sprintf("%s has no value", sname)
	}
	if modifier == "missing" {
		switch value {
		case "true":
			p.Missing = true
		case "false":
		default:
			return Param{}, fmt.Sprintf("%s: value %s is neither true nor false", sname, show(value))
		}
		return p, ""
	}
	for raw := range splitUnescaped(value, ',') {
		if len(p.Values) == MaxQueryValues {
			return Param{}, fmt.Sprintf("too many values: more than %d in one query (at %s)", MaxQueryValues, sname)
		}
		if raw == "" {
			return Param{}, fmt.Sprintf("%s: empty value in %s", sname, show(value))
		}
		v, msg := parseValue(def, modifier, raw)
		if msg != "" {
			return Param{}, sname + ": " + msg
		}
		p.Values = append(p.Values, v)
	}
	return p, ""
}

// parseValue parses one value (escapes still in) of search parameter
// def. A refusal is a message about the value.
func parseValue(def *fhirdefs.SearchParam, modifier, raw string) (Value, string) {
	v := Value{Raw: raw}
	switch def.Type {
	case "token":
		var parts []string
		for part := range splitUnescaped(raw, '|') {
			parts = append(parts, part)
		}
		switch len(parts) {
		case 1:
			v.Code = unescape(parts[0])
		case 2:
			v.HasSystem = true
			v.System, v.Code = unescape(parts[0]), unescape(parts[1])
			if v.System == "" && v.Code == "" {
				return Value{}, fmt.Sprintf("token %s has neither a system nor a code", show(raw))
			}
		default:
			return Value{}, fmt.Sprintf("token %s has more than one '|' (want code, system|code, |code or system|; a literal '|' is \\|)", show(raw))
		}
		if booleanOnly(def) && (v.HasSystem || v.Code != "true" && v.Code != "false") {
			return Value{}, fmt.Sprintf("value %s is neither true nor false", show(raw))
		}
	case "date":
		s := unescape(raw)
		v.Prefix = "eq"
		if len(s) >= 2 && 'a' <= s[0] && s[0] <= 'z' {
			for _, pre := range datePrefixes {
				if s[:2] == pre {
					v.Prefix, s = pre, s[2:]
					break
				}
			}
		}
		// An unencoded '+' of the time zone came through the query
		// string's decoding as a space.
		if n := len(s); n >= 6 && s[n-6] == ' ' && s[n-3] == ':' {
			s = s[:n-6] + "+" + s[n-5:]
		}
		lo, hi, ok := dateRange(s)
		if !ok {
			return Value{}, fmt.Sprintf("%s is not a date (want an optional prefix eq, ne, gt, lt, ge, le, sa, eb or ap, then YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm])", show(raw))
		}
		v.Lo, v.Hi = lo, hi
	case "reference":
		s := unescape(raw)
		switch {
		case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
			_, after, _ := strings.Cut(s, "://")
			if after == "" || strings.ContainsAny(s, " \t\r\n") {
				return Value{}, fmt.Sprintf("%s is not a reference URL", show(raw))
			}
			v.URL = s
			if typ, id, ok := fhir.ParseReference([]byte(s)); ok {
				v.RefType, v.RefID = string(typ), string(id)
			}
		case fhir.IsID(s):
			v.RefID = s
		default:
			typ, id, ok := strings.Cut(s, "/")
			if !ok || !fhir.IsResourceType(typ) || !fhir.IsID(id) {
				return Value{}, fmt.Sprintf("%s is not a reference (want id, Type/id or an http(s) URL)", show(raw))
			}
			v.RefType, v.RefID = typ, id
		}
	case "string":
		v.Text = unescape(raw)
		if modifier != "exact" {
			v.Text = Fold(v.Text)
		}
	case "uri":
		v.Text = unescape(raw)
	}
	return v, ""
}

// booleanOnly reports whether every path of def reaches a boolean: a
// token parameter whose values can only be true or false.
func booleanOnly(def *fhirdefs.SearchParam) bool {
	for _, p := range def.Paths {
		if p.Type != "boolean" {
			return false
		}
	}
	return len(def.Paths) > 0
}

// dateRange is fhir.DateRange widened to the forms FHIR search dates may
// take besides it (https://hl7.org/fhir/R4/search.html#date): a time
// without seconds (it covers its minute) and a time without a time zone
// (read as UTC).
func dateRange(s string) (lo, hi int64, ok bool) {
	if lo, hi, ok = fhir.DateRange(s); ok {
		return lo, hi, true
	}
	if len(s) < 16 || s[10] != 'T' || s[13] != ':' {
		return 0, 0, false
	}
	if len(s) == 16 || s[16] == 'Z' || s[16] == '+' || s[16] == '-' {
		// Minute precision: hh:mm, then a zone or none.
		zone := s[16:]
		if zone == "" {
			zone = "Z"
		}
		lo, _, ok = fhir.DateRange(s[:16] + ":00" + zone)
		if !ok {
			return 0, 0, false
		}
		return lo, lo + 60_000_000 - 1, true
	}
	// Seconds, perhaps a fraction, and no zone.
	return fhir.DateRange(s + "Z")
}

// splitUnescaped yields the pieces of s between the bytes sep that no
// backslash escapes (https://hl7.org/fhir/R4/search.html#escaping),
// escapes kept.
func splitUnescaped(s string, sep byte) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		start := 0
		for i := 0; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case sep:
				if !yield(s[start:i]) {
					return
				}
				start = i + 1
			}
		}
		yield(s[start:])
	}
}

// unescape decodes the search escapes \, \| \$ and \\ of s; a backslash
// before any other byte, or at the end, is kept as written.
func unescape(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case ',', '|', '$', '\\':
				i++
				c = s[i]
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// show returns s as is when it is short printable ASCII without spaces,
// else quoted, so that a message never carries control characters or a
// huge name.
func show(s string) string {
	const max = 100
	if len(s) > max {
		n := max
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return strconv.Quote(s[:n]) + "…"
	}
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}
