package index

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// errBadResource is returned for a resource body that is not a JSON object
// the stamper can rewrite. ingest validates bodies before they get here, so
// this is a second line of defence, not the validator.
var errBadResource = errors.New("index: resource is not a JSON object with an object meta")

// stamp returns the stored form of an upsert: body with meta.versionId and
// meta.lastUpdated set to the store's version and the commit time, and every
// other byte kept as published (member order, number literals, string
// escapes). meta's other members follow versionId and lastUpdated; a body
// without meta gets one right after "id" (where FHIR JSON puts it), or first
// if there is no id.
//
// body must be a compact JSON object (no whitespace between tokens); the
// result is appended to dst and is compact too, ready to be one NDJSON line.
func stamp(dst, body []byte, version, commitTime uint64) ([]byte, error) {
	members, err := objectMembers(body)
	if err != nil {
		return nil, err
	}
	metaAt, idAt := -1, -1
	for i, m := range members {
		switch m.key {
		case "meta":
			metaAt = i
		case "id":
			idAt = i
		}
	}
	dst = append(dst, '{')
	writeMeta := func(old []byte) ([]byte, error) {
		dst = append(dst, `"meta":{"versionId":"`...)
		dst = strconv.AppendUint(dst, version, 10)
		dst = append(dst, `","lastUpdated":"`...)
		dst = append(dst, FormatInstant(commitTime)...)
		dst = append(dst, '"')
		if old != nil {
			inner, err := objectMembers(old)
			if err != nil {
				return nil, err
			}
			for _, m := range inner {
				if m.key == "versionId" || m.key == "lastUpdated" {
					continue
				}
				dst = append(dst, ',')
				dst = append(dst, m.raw...)
			}
		}
		return append(dst, '}'), nil
	}
	first := true
	sep := func() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
	}
	if metaAt < 0 && idAt < 0 {
		sep()
		if dst, err = writeMeta(nil); err != nil {
			return nil, err
		}
	}
	for i, m := range members {
		if m.key == "meta" && i != metaAt {
			continue // a duplicate: the last one wins, as in encoding/json
		}
		sep()
		if i == metaAt {
			if dst, err = writeMeta(m.value); err != nil {
				return nil, err
			}
			continue
		}
		dst = append(dst, m.raw...)
		if i == idAt && metaAt < 0 {
			sep()
			if dst, err = writeMeta(nil); err != nil {
				return nil, err
			}
		}
	}
	return append(dst, '}'), nil
}

// member is one "key":value pair of a JSON object; raw spans both.
type member struct {
	key   string // the key, unescaped
	raw   []byte
	value []byte
}

// objectMembers splits a compact JSON object into its members without
// decoding the values. Keys are unescaped (so "me\u0074a" is meta, as for
// every JSON decoder); raw keeps the published bytes.
func objectMembers(b []byte) ([]member, error) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, errBadResource
	}
	var out []member
	i := 1
	if b[i] == '}' {
		if i+1 != len(b) {
			return nil, errBadResource
		}
		return out, nil
	}
	for {
		start := i
		if i >= len(b) || b[i] != '"' {
			return nil, errBadResource
		}
		end, err := skipString(b, i)
		if err != nil {
			return nil, err
		}
		key := string(b[i+1 : end-1])
		if strings.IndexByte(key, '\\') >= 0 {
			key = ""
			if err := json.Unmarshal(b[i:end], &key); err != nil {
				return nil, errBadResource
			}
		}
		i = end
		if i >= len(b) || b[i] != ':' {
			return nil, errBadResource
		}
		i++
		vstart := i
		if i, err = skipValue(b, i); err != nil {
			return nil, err
		}
		out = append(out, member{key: key, raw: b[start:i], value: b[vstart:i]})
		if i >= len(b) {
			return nil, errBadResource
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			if i+1 != len(b) {
				return nil, errBadResource
			}
			return out, nil
		default:
			return nil, errBadResource
		}
	}
}

// skipString returns the index just past the JSON string starting at b[i].
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, errBadResource
}

// skipValue returns the index just past the compact JSON value at b[i]. It
// trusts that scalars are valid JSON (ingest checks with json.Valid) and
// only tracks strings and nesting, rejecting what it can see is broken:
// empty values, unbalanced or mismatched brackets, unterminated strings.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errBadResource
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		var buf [32]byte
		stack := buf[:0] // expected closers
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{':
				stack = append(stack, '}')
			case '[':
				stack = append(stack, ']')
			case '}', ']':
				if len(stack) == 0 || stack[len(stack)-1] != b[i] {
					return 0, errBadResource
				}
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, errBadResource
	default:
		start := i
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', '{', '[', '"', ':':
				if i == start {
					return 0, errBadResource
				}
				return i, nil
			}
		}
		return i, nil
	}
}
