package index

import (
	"errors"
	"strconv"

	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// errBadResource is returned for a resource body that is not a JSON object
// the stamper can rewrite. ingest validates bodies before they get here, so
// this is a second line of defence, not the validator.
var errBadResource = errors.New("index: resource is not a JSON object with an object meta")

// layout locates, in a compact body, the top-level members stamp writes
// around.
type layout struct {
	// idEnd is the offset just past the value of the id member, where a
	// body without meta gets one; 0 if there is no id member.
	idEnd int
	// metaStart and metaEnd bound the value of the meta member, a JSON
	// object whose name is written "meta" (no escapes); both are 0 if there
	// is no meta member.
	metaStart, metaEnd int
}

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
	l, ok, err := findLayout(body)
	if err != nil {
		return nil, err
	}
	if !ok {
		return stampMembers(dst, body, version, commitTime)
	}
	return stampLayout(dst, body, l, version, commitTime)
}

// stampLayout is stamp with the members located: it splices the stamped
// meta into body.
func stampLayout(dst, body []byte, l layout, version, commitTime uint64) ([]byte, error) {
	if l.metaEnd > 0 {
		// Replace meta's value in place.
		dst = append(dst, body[:l.metaStart]...)
		var err error
		if dst, err = appendMeta(dst, body[l.metaStart:l.metaEnd], version, commitTime); err != nil {
			return nil, err
		}
		return append(dst, body[l.metaEnd:]...), nil
	}
	// Insert a meta member after id.
	dst = append(dst, body[:l.idEnd]...)
	dst = append(dst, `,"meta":`...)
	dst, _ = appendMeta(dst, nil, version, commitTime)
	return append(dst, body[l.idEnd:]...), nil
}

// metaName is the meta member's name and colon as stamp writes them.
const metaName = `"meta":`

// findLayout walks body's members for stamp. ok is false when the body is
// valid but not one stampLayout splices (several meta members, an escaped
// meta name, neither meta nor id): stampMembers stamps those.
func findLayout(body []byte) (l layout, ok bool, err error) {
	metas := 0
	var escapedMeta bool
	err = jsonobj.EachKey(body, func(key []byte, ks, vs, ve int) bool {
		switch string(key) {
		case "meta":
			metas++
			escapedMeta = string(body[ks:vs]) != metaName
			l.metaStart, l.metaEnd = vs, ve
		case "id":
			l.idEnd = ve
		}
		return true
	})
	if err != nil {
		return layout{}, false, errBadResource
	}
	if metas > 1 || escapedMeta || (metas == 0 && l.idEnd == 0) {
		return layout{}, false, nil
	}
	return l, true, nil
}

// appendMeta appends the stamped meta object: versionId and lastUpdated,
// then the members of old (a JSON object, or nil) other than those two.
func appendMeta(dst, old []byte, version, commitTime uint64) ([]byte, error) {
	dst = append(dst, `{"versionId":"`...)
	dst = strconv.AppendUint(dst, version, 10)
	dst = append(dst, `","lastUpdated":"`...)
	dst = appendInstant(dst, commitTime)
	dst = append(dst, '"')
	if old != nil {
		err := jsonobj.EachKey(old, func(key []byte, ks, _, ve int) bool {
			if string(key) != "versionId" && string(key) != "lastUpdated" {
				dst = append(dst, ',')
				dst = append(dst, old[ks:ve]...)
			}
			return true
		})
		if err != nil {
			return nil, errBadResource
		}
	}
	return append(dst, '}'), nil
}

// stampMembers is the general stamp, member by member: it handles the
// bodies stampLayout does not splice.
func stampMembers(dst, body []byte, version, commitTime uint64) ([]byte, error) {
	members, err := objectMembers(body)
	if err != nil {
		return nil, err
	}
	metaAt, idAt := -1, -1
	for i, m := range members {
		switch m.Key {
		case "meta":
			metaAt = i
		case "id":
			idAt = i
		}
	}
	dst = append(dst, '{')
	writeMeta := func(old []byte) ([]byte, error) {
		dst = append(dst, metaName...)
		return appendMeta(dst, old, version, commitTime)
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
		if m.Key == "meta" && i != metaAt {
			continue // a duplicate: the last one wins, as in encoding/json
		}
		sep()
		if i == metaAt {
			if dst, err = writeMeta(m.Value); err != nil {
				return nil, err
			}
			continue
		}
		dst = append(dst, m.Raw...)
		if i == idAt && metaAt < 0 {
			sep()
			if dst, err = writeMeta(nil); err != nil {
				return nil, err
			}
		}
	}
	return append(dst, '}'), nil
}

// objectMembers splits a compact JSON object into its members.
func objectMembers(b []byte) ([]jsonobj.Member, error) {
	ms, err := jsonobj.Members(b)
	if err != nil {
		return nil, errBadResource
	}
	return ms, nil
}
