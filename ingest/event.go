package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/bulkstream/bulkstream/index"
	"github.com/nats-io/nats.go"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// Headers of change events.
const (
	// HeaderOp is the operation header: "delete", or "upsert" (the same
	// as no header).
	HeaderOp = "Fhir-Op"
	// OpUpsert and OpDelete are the values of HeaderOp.
	OpUpsert = "upsert"
	OpDelete = "delete"
)

// Limits of Decode.
const (
	// DefaultMaxEventBytes is the largest message body accepted (1 MiB).
	DefaultMaxEventBytes = 1 << 20
	// MaxDepth is the deepest nesting of objects and arrays accepted in a
	// resource; the resource object itself is depth 1.
	MaxDepth = 64
)

// Reasons a change event is rejected. They are subject tokens of the dead
// letter subject and values of the reason metric label, so the set is
// fixed and small.
const (
	ReasonBadSubject   = "bad_subject"   // not <prefix>.<Type>.<id>, or bad escape
	ReasonTooLarge     = "too_large"     // body larger than the configured limit
	ReasonBadOp        = "bad_op"        // Fhir-Op is neither upsert nor delete
	ReasonInvalidUTF8  = "invalid_utf8"  // body is not UTF-8
	ReasonNotJSON      = "not_json"      // body is empty or not JSON
	ReasonNotObject    = "not_object"    // body is JSON but not an object
	ReasonTooDeep      = "too_deep"      // nesting deeper than MaxDepth
	ReasonDuplicateKey = "duplicate_key" // a top-level member appears twice
	ReasonUnknownType  = "unknown_type"  // resourceType (or the subject's type) is not an R4 resource type
	ReasonBadID        = "bad_id"        // id (or the subject's id) is not a FHIR id
	ReasonTypeMismatch = "type_mismatch" // body resourceType differs from the subject's
	ReasonIDMismatch   = "id_mismatch"   // body id differs from the subject's
	ReasonMissingType  = "missing_type"  // no resourceType member
	ReasonMissingID    = "missing_id"    // no id member
	ReasonBadMeta      = "bad_meta"      // meta, or a member of it bulkstream edits, has the wrong shape
)

// Reasons lists every rejection reason.
var Reasons = []string{
	ReasonBadSubject, ReasonTooLarge, ReasonBadOp, ReasonInvalidUTF8,
	ReasonNotJSON, ReasonNotObject, ReasonTooDeep, ReasonDuplicateKey,
	ReasonUnknownType, ReasonBadID, ReasonTypeMismatch, ReasonIDMismatch,
	ReasonMissingType, ReasonMissingID, ReasonBadMeta,
}

// RejectError is the error Decode returns for an event that can never be
// applied. Reason is one of the Reason constants; Detail is for humans.
type RejectError struct {
	Reason string
	Detail string
}

func (e *RejectError) Error() string {
	return "ingest: rejected event: " + e.Reason + ": " + e.Detail
}

func reject(reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Decode validates one change event and returns the change to apply. Seq
// and Time are left zero for the caller to fill from the message metadata.
// maxBytes <= 0 means DefaultMaxEventBytes. Every error is a *RejectError.
//
// An upsert's Body is the published JSON, compacted (whitespace between
// tokens removed, nothing else changed: member order, number literals and
// string escapes are kept byte for byte), sharing data when it already is
// compact. A delete has a nil Body.
func Decode(subject string, hdr nats.Header, data []byte, maxBytes int) (index.Change, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxEventBytes
	}
	typ, id, err := ParseSubject(subject)
	if err != nil {
		return index.Change{}, reject(ReasonBadSubject, "%v", err)
	}
	if len(data) > maxBytes {
		return index.Change{}, reject(ReasonTooLarge, "%d bytes, limit %d", len(data), maxBytes)
	}
	var del bool
	switch op := headerOp(hdr); op {
	case "", OpUpsert:
	case OpDelete:
		del = true
	default:
		return index.Change{}, reject(ReasonBadOp, "%s header %s, want %q or %q", HeaderOp, quote(op), OpUpsert, OpDelete)
	}
	if !fhir.IsResourceType(typ) {
		return index.Change{}, reject(ReasonUnknownType, "subject type %s is not a FHIR R4 resource type", quote(typ))
	}
	if !fhir.IsID(id) {
		return index.Change{}, reject(ReasonBadID, "subject id %s is not a FHIR id", quote(id))
	}
	if del {
		return index.Change{Type: typ, ID: id, Delete: true}, nil
	}
	if body, st := scanBody(data, typ, id); st == scanOK {
		return index.Change{Type: typ, ID: id, Body: body}, nil
	}
	// Rejected, or not the plain case: the general path decides and
	// explains.
	r, rerr := scanResource(data)
	if rerr != nil {
		return index.Change{}, rerr
	}
	if r.typ != typ {
		return index.Change{}, reject(ReasonTypeMismatch, "body resourceType %s, subject type %s", quote(r.typ), quote(typ))
	}
	if r.id != id {
		return index.Change{}, reject(ReasonIDMismatch, "body id %s, subject id %s", quote(r.id), quote(id))
	}
	return index.Change{Type: typ, ID: id, Body: r.body}, nil
}

// headerOp returns the Fhir-Op header. NATS headers are case-sensitive;
// the name is matched case-insensitively because HTTP-minded publishers
// write it in any case. The value is matched exactly.
func headerOp(hdr nats.Header) string {
	if v, ok := hdr[HeaderOp]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range hdr {
		if len(v) > 0 && strings.EqualFold(k, HeaderOp) {
			return v[0]
		}
	}
	return ""
}

// resource is what scanResource found at the top level of a body.
type resource struct {
	typ, id string
	body    []byte // compact
}

// scanResource validates an upsert body and reads its resourceType and
// id without decoding the rest. It is the general path of Decode, for the
// bodies scanBody does not accept.
func scanResource(data []byte) (resource, *RejectError) {
	if len(bytes.TrimSpace(data)) == 0 {
		return resource{}, reject(ReasonNotJSON, "empty body")
	}
	if !utf8.Valid(data) {
		return resource{}, reject(ReasonInvalidUTF8, "body is not valid UTF-8")
	}
	if !json.Valid(data) {
		// Find the syntax error for the detail, off the hot path.
		var v any
		err := json.Unmarshal(data, &v)
		return resource{}, reject(ReasonNotJSON, "%v", err)
	}
	s := jsonobj.Scanner{MaxDepth: MaxDepth}
	i := s.SkipSpace(data, 0)
	if data[i] != '{' {
		return resource{}, reject(ReasonNotObject, "body is a JSON %s, not an object", jsonKind(data[i]))
	}
	var r resource
	var haveType, haveID bool
	var keyBuf [32][]byte
	keys := keyBuf[:0] // top-level keys, for the duplicate check
	var keySet map[string]struct{}
	it := s.Object(data, i, 1)
	for it.Next() {
		key := it.Key()
		if keySet != nil {
			if _, dup := keySet[string(key)]; dup {
				return resource{}, reject(ReasonDuplicateKey, "member %s appears twice", quote(string(key)))
			}
			keySet[string(key)] = struct{}{}
		} else {
			for _, k := range keys {
				if bytes.Equal(k, key) {
					return resource{}, reject(ReasonDuplicateKey, "member %s appears twice", quote(string(key)))
				}
			}
			keys = append(keys, key)
			if len(keys) == cap(keyBuf) {
				keySet = make(map[string]struct{}, 2*len(keys))
				for _, k := range keys {
					keySet[string(k)] = struct{}{}
				}
			}
		}
		if it.Deep {
			return resource{}, reject(ReasonTooDeep, "nesting deeper than %d", MaxDepth)
		}
		v := data[it.ValueStart:it.ValueEnd]
		switch string(key) {
		case "resourceType":
			haveType = true
			if v[0] != '"' {
				return resource{}, reject(ReasonUnknownType, "resourceType is a JSON %s, not a string", jsonKind(v[0]))
			}
			r.typ = rawString(v)
			if !fhir.IsResourceType(r.typ) {
				return resource{}, reject(ReasonUnknownType, "resourceType %s is not a FHIR R4 resource type", quote(r.typ))
			}
		case "id":
			haveID = true
			if v[0] != '"' {
				return resource{}, reject(ReasonBadID, "id is a JSON %s, not a string", jsonKind(v[0]))
			}
			r.id = rawString(v)
			if !fhir.IsID(r.id) {
				return resource{}, reject(ReasonBadID, "id %s is not a FHIR id ([A-Za-z0-9-.]{1,64})", quote(r.id))
			}
		case "meta":
			if it.Escaped {
				// index's stamper matches member names unescaped.
				return resource{}, reject(ReasonBadMeta, "the meta member name must not be escaped")
			}
			if v[0] != '{' {
				return resource{}, reject(ReasonBadMeta, "meta is a JSON %s, not an object", jsonKind(v[0]))
			}
			if rej := checkMeta(v); rej != nil {
				return resource{}, rej
			}
		}
	}
	// json.Valid passed, so the object ends the body but for whitespace.
	compact := !it.Space && it.End() == len(data)
	if !haveType {
		return resource{}, reject(ReasonMissingType, "no resourceType member")
	}
	if !haveID {
		return resource{}, reject(ReasonMissingID, "no id member")
	}
	if compact {
		r.body = data
		return r, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	if err := json.Compact(&buf, data); err != nil {
		return resource{}, reject(ReasonNotJSON, "%v", err) // unreachable: json.Valid passed
	}
	r.body = buf.Bytes()
	return r, nil
}

// checkMeta checks the members of meta (a valid JSON object, whitespace
// allowed) that bulkstream itself rewrites: versionId and lastUpdated,
// which the index replaces whatever their value, and tag, to which an
// _elements export adds its SUBSETTED coding. Each may appear once, and
// tag must be an array of objects (Codings). Other members are not
// looked at.
func checkMeta(meta []byte) *RejectError {
	const (
		seenTag = 1 << iota
		seenVersionID
		seenLastUpdated
	)
	var seen int
	var s jsonobj.Scanner
	it := s.Object(meta, 0, 1)
	for it.Next() {
		key := it.Key()
		var bit int
		switch string(key) {
		case "tag":
			bit = seenTag
			if c := meta[it.ValueStart]; c != '[' {
				return reject(ReasonBadMeta, "meta.tag is a JSON %s, not an array", jsonKind(c))
			}
			codings := s.Array(meta, it.ValueStart, 2)
			for codings.Next() {
				if c := meta[codings.ValueStart]; c != '{' {
					return reject(ReasonBadMeta, "meta.tag holds a JSON %s, not a Coding object", jsonKind(c))
				}
			}
		case "versionId":
			bit = seenVersionID
		case "lastUpdated":
			bit = seenLastUpdated
		}
		if seen&bit != 0 {
			return reject(ReasonBadMeta, "meta.%s appears twice", key)
		}
		seen |= bit
	}
	return nil
}

// rawString returns the value of the JSON string literal s (quotes
// included). Literals without escapes, which is every FHIR name and id,
// are sliced without decoding.
func rawString(s []byte) string {
	inner := s[1 : len(s)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner)
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil {
		return string(inner)
	}
	return out
}

func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
