package export

import (
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/index"
)

// appendDeletedBundle appends the deleted-file line for one deletion: a
// transaction Bundle with a single DELETE entry, its meta.lastUpdated the
// deletion's commit time (the manifest's deleted files,
// https://hl7.org/fhir/uv/bulkdata/export.html):
//
//	{"resourceType":"Bundle","meta":{"lastUpdated":"…"},"type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/123"}}]}
//
// One deletion a line keeps the manifest count equal to the number of
// deleted resources, carries each deletion's time, keeps lines small and
// lets a client apply any line on its own.
func appendDeletedBundle(dst []byte, typ, id string, commitTime uint64) []byte {
	dst = append(dst, `{"resourceType":"Bundle","meta":{"lastUpdated":"`...)
	dst = append(dst, index.FormatInstant(commitTime)...)
	dst = append(dst, `"},"type":"transaction","entry":[{"request":{"method":"DELETE","url":`...)
	dst = appendJSONString(dst, typ+"/"+id)
	return append(dst, `}}]}`...)
}

// appendOutcome appends an OperationOutcome line with one issue.
func appendOutcome(dst []byte, severity, code, diagnostics string) []byte {
	dst = append(dst, `{"resourceType":"OperationOutcome","issue":[{"severity":`...)
	dst = appendJSONString(dst, severity)
	dst = append(dst, `,"code":`...)
	dst = appendJSONString(dst, code)
	dst = append(dst, `,"diagnostics":`...)
	dst = appendJSONString(dst, diagnostics)
	return append(dst, `}]}`...)
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD; <, > and & are not escaped (FHIR JSON need not be HTML-safe).
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}
