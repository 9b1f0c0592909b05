package ingest

import "github.com/bulkstream/bulkstream/internal/jsonobj"

// The fast path of Decode: one pass of a jsonobj.Scanner over an upsert
// body that checks everything utf8.Valid and json.Valid check (the JSON
// grammar with its number and literal syntax, string escapes, control
// characters, UTF-8 inside strings, encoding/json's nesting limit) and
// reads the top level on the way. It accepts only the plain case: a
// compact or compactable object whose resourceType and id equal the
// subject's, without escaped or duplicate top-level names, nested at most
// MaxDepth deep, with an object meta if any whose members pass checkMeta.
// Everything else it leaves to scanResource, which decides (and explains)
// as before, so Decode's answers and reasons do not depend on which path
// ran.

// scanStatus is the outcome of scanBody.
type scanStatus int

const (
	scanOK      scanStatus = iota // accepted
	scanInvalid                   // not UTF-8 or not JSON: rejected
	scanUnsure                    // valid JSON (if an object), but not the plain case
)

// scanBody validates data, the body of an upsert of typ/id (both already
// checked), and returns its compact form.
func scanBody(data []byte, typ, id string) (body []byte, st scanStatus) {
	s := jsonobj.Scanner{UTF8: true, MaxDepth: MaxDepth}
	n := len(data)
	i := s.SkipSpace(data, 0)
	if i >= n || data[i] != '{' {
		return nil, scanUnsure // empty, or not an object: scanResource says which
	}
	var keyBuf [64][]byte
	keys := keyBuf[:0]
	var haveType, haveID, unsure bool
	var meta []byte
	it := s.Object(data, i, 1)
	for it.Next() {
		if it.Escaped || len(keys) == cap(keys) {
			unsure = true // scanResource unescapes and compares
			continue
		}
		key := data[it.KeyStart+1 : it.KeyEnd-1]
		for _, k := range keys {
			if string(k) == string(key) {
				unsure = true // duplicate
				break
			}
		}
		keys = append(keys, key)
		v := data[it.ValueStart:it.ValueEnd]
		switch string(key) {
		case "resourceType":
			haveType = true
			unsure = unsure || !plainStringIs(v, typ)
		case "id":
			haveID = true
			unsure = unsure || !plainStringIs(v, id)
		case "meta":
			unsure = unsure || v[0] != '{'
			meta = v
		}
	}
	if i = it.End(); i < 0 || it.SkipSpace(data, i) != n {
		return nil, scanInvalid
	}
	if unsure || it.Deep || !haveType || !haveID {
		return nil, scanUnsure
	}
	if meta != nil && checkMeta(meta) != nil {
		return nil, scanUnsure // scanResource explains
	}
	if it.Space {
		return compactJSON(make([]byte, 0, n), data), scanOK
	}
	return data, scanOK
}

// plainStringIs reports whether the JSON value v is a string literal
// without escapes whose content is want.
func plainStringIs(v []byte, want string) bool {
	return len(v) == len(want)+2 && v[0] == '"' && string(v[1:len(v)-1]) == want
}

// compactJSON appends valid JSON b to dst without the whitespace between
// tokens, as json.Compact does.
func compactJSON(dst, b []byte) []byte {
	start := 0
	inStr := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case ' ', '\t', '\n', '\r':
			dst = append(dst, b[start:i]...)
			start = i + 1
		}
	}
	return append(dst, b[start:]...)
}
