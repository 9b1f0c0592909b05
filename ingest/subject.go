package ingest

import (
	"errors"
	"strconv"
	"strings"
)

// DefaultSubjectPrefix is the first token of change-event subjects.
const DefaultSubjectPrefix = "fhir"

// errSubject is wrapped by every ParseSubject error.
var errSubject = errors.New("ingest: bad subject")

// EncodeSubject returns the change-event subject <prefix>.<typ>.<id>. The
// id is escaped so that it is one subject token: '%' is written "%25",
// '.' "%2E", and the bytes NATS gives a meaning to or that split a
// protocol line ('*', '>', space and ASCII control characters) as %XX.
// A valid FHIR id ([A-Za-z0-9\-.]{1,64}) only ever needs "%2E".
// typ and prefix are used as they are.
func EncodeSubject(prefix, typ, id string) string {
	n := 0
	for i := 0; i < len(id); i++ {
		if needsEscape(id[i]) {
			n++
		}
	}
	var b strings.Builder
	b.Grow(len(prefix) + len(typ) + len(id) + 2 + 2*n)
	b.WriteString(prefix)
	b.WriteByte('.')
	b.WriteString(typ)
	b.WriteByte('.')
	if n == 0 {
		b.WriteString(id)
		return b.String()
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(id); i++ {
		c := id[i]
		if needsEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func needsEscape(c byte) bool {
	return c == '%' || c == '.' || c == '*' || c == '>' || c <= ' ' || c == 0x7F
}

// ParseSubject splits a change-event subject <prefix>.<Type>.<id> and
// unescapes the id (the inverse of EncodeSubject). It checks the shape
// only: exactly three non-empty tokens, no wildcards, no whitespace or
// control characters, well-formed %XX escapes. Whether Type is a FHIR
// resource type and id a valid FHIR id is Decode's business. The prefix
// token is not compared: the stream's subject filter already fixed it.
func ParseSubject(subject string) (typ, id string, err error) {
	first := strings.IndexByte(subject, '.')
	if first < 0 {
		return "", "", subjectError(subject, "want 3 tokens")
	}
	second := strings.IndexByte(subject[first+1:], '.')
	if second < 0 {
		return "", "", subjectError(subject, "want 3 tokens")
	}
	second += first + 1
	prefix, typ, raw := subject[:first], subject[first+1:second], subject[second+1:]
	if strings.IndexByte(raw, '.') >= 0 {
		return "", "", subjectError(subject, "want 3 tokens")
	}
	for _, tok := range [...]string{prefix, typ, raw} {
		if tok == "" {
			return "", "", subjectError(subject, "empty token")
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c == '*' || c == '>' || c <= ' ' || c == 0x7F {
				return "", "", subjectError(subject, "wildcard, whitespace or control character")
			}
		}
	}
	if strings.IndexByte(typ, '%') >= 0 {
		return "", "", subjectError(subject, "escape in type token")
	}
	if strings.IndexByte(raw, '%') < 0 {
		return typ, raw, nil
	}
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(raw) {
			return "", "", subjectError(subject, "truncated escape")
		}
		hi, ok1 := unhex(raw[i+1])
		lo, ok2 := unhex(raw[i+2])
		if !ok1 || !ok2 {
			return "", "", subjectError(subject, "bad escape")
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return typ, string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func subjectError(subject, why string) error {
	return &subjectErr{subject: subject, why: why}
}

type subjectErr struct{ subject, why string }

func (e *subjectErr) Error() string {
	return "ingest: bad subject " + quote(e.subject) + ": " + e.why
}

func (e *subjectErr) Unwrap() error { return errSubject }

// quote is strconv.Quote capped at 200 bytes of input, for error details
// that may echo untrusted input.
func quote(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
