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
		switch m.Key {
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
				if m.Key == "versionId" || m.Key == "lastUpdated" {
					continue
				}
				dst = append(dst, ',')
				dst = append(dst, m.Raw...)
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
