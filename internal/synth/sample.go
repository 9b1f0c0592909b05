package synth

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"os"
	"slices"

	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// Sample is an indexed NDJSON sample: the resources to multiply and the
// position of every id occurrence in them. A Sample is immutable once
// loaded and safe for concurrent use.
type Sample struct {
	data    []byte  // the sample lines, as read
	lines   []line  // one per resource, in sample order
	patches []patch // id occurrences, grouped by line, in offset order
	types   []string
	counts  []int            // resources per type, indexed like types
	ids     []string         // distinct resource ids
	idIdx   map[string]int32 // ids[i] → i
	uuid    []bool           // ids[i] is a lower-case UUID
	idOff   []int            // offset of ids[i]'s replacement in a copy's id buffer
	idLen   []int            // length of ids[i]'s replacement
	idBytes int              // size of a copy's id buffer
	maxLine int              // longest generated line, without '\n'
	size    int64            // bytes of one generated copy, with '\n' after each line
}

// line is one resource of the sample.
type line struct {
	start, end uint32 // s.data[start:end], without '\n'
	typ        int32  // index in s.types
	id         int32  // index in s.ids
	p0, p1     uint32 // s.patches[p0:p1]
}

// patch is one occurrence of a resource id in a line.
type patch struct {
	off uint32 // offset in the line
	n   uint32 // length of the original id
	id  int32  // index in s.ids
}

// OpenSample loads the NDJSON sample at path, plain or gzip.
func OpenSample(path string) (*Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := LoadSample(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// LoadSample reads and indexes an NDJSON sample: one FHIR resource per
// line, blank lines ignored. Gzip input is detected by its magic bytes.
// Every line must be a JSON object whose "resourceType" and "id" are
// strings; two resources with the same type and id are an error. The rest of
// each line is not validated.
func LoadSample(r io.Reader) (*Sample, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("synth: sample: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	data, err := io.ReadAll(src)
	if err != nil {
		return nil, fmt.Errorf("synth: read sample: %w", err)
	}
	return parseSample(data)
}

func parseSample(data []byte) (*Sample, error) {
	if len(data) >= math.MaxUint32 {
		return nil, fmt.Errorf("synth: sample of %d bytes is too large (max 4 GiB)", len(data))
	}
	s := &Sample{data: data}
	typeIdx := map[string]int32{}
	idIdx := map[string]int32{}
	seen := map[string]bool{} // type + "/" + id
	type topID struct{ off, n int }
	var tops []topID // offset of each line's "id" value

	// Pass 1: the type and id of every line.
	for pos, n := 0, 1; pos < len(data); n++ {
		end := pos + bytes.IndexByte(data[pos:], '\n')
		next := end + 1
		if end < pos {
			end, next = len(data), len(data)
		}
		start := pos
		pos = next
		l := bytes.TrimRight(data[start:end], " \t\r")
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		typ, id, idOff, err := resourceHeader(l)
		if err != nil {
			return nil, fmt.Errorf("synth: sample line %d: %w", n, err)
		}
		key := typ + "/" + id
		if seen[key] {
			return nil, fmt.Errorf("synth: sample line %d: duplicate resource %s", n, key)
		}
		seen[key] = true
		ti, ok := typeIdx[typ]
		if !ok {
			ti = int32(len(s.types))
			typeIdx[typ] = ti
			s.types = append(s.types, typ)
			s.counts = append(s.counts, 0)
		}
		s.counts[ti]++
		ii, ok := idIdx[id]
		if !ok {
			ii = int32(len(s.ids))
			idIdx[id] = ii
			s.ids = append(s.ids, id)
			s.uuid = append(s.uuid, isUUID(id))
		}
		s.lines = append(s.lines, line{start: uint32(start), end: uint32(start + len(l)), typ: ti, id: ii})
		tops = append(tops, topID{idOff, len(id)})
	}

	// Where each id's replacement sits in a copy's id buffer.
	s.idIdx = idIdx
	s.idOff = make([]int, len(s.ids))
	s.idLen = make([]int, len(s.ids))
	for i, id := range s.ids {
		s.idOff[i] = s.idBytes
		s.idLen[i] = newIDLen(id, s.uuid[i])
		s.idBytes += s.idLen[i]
	}

	// Non-UUID ids are replaced only as a resource's own id and in
	// references "<Type>/<id>" to that resource.
	var plain map[string]int32 // "Type/id" → id index
	for _, ln := range s.lines {
		if !s.uuid[ln.id] {
			if plain == nil {
				plain = map[string]int32{}
			}
			plain[s.types[ln.typ]+"/"+s.ids[ln.id]] = ln.id
		}
	}

	// Pass 2: every occurrence of every id.
	for i := range s.lines {
		ln := &s.lines[i]
		l := data[ln.start:ln.end]
		ln.p0 = uint32(len(s.patches))
		s.patches = scanUUIDs(s.patches, l, idIdx, s.uuid)
		if !s.uuid[ln.id] {
			s.patches = append(s.patches, patch{off: uint32(tops[i].off), n: uint32(tops[i].n), id: ln.id})
		}
		if plain != nil {
			s.patches = scanPlainRefs(s.patches, l, plain)
		}
		ps := s.patches[ln.p0:]
		slices.SortFunc(ps, func(a, b patch) int { return int(a.off) - int(b.off) })
		ln.p1 = uint32(len(s.patches))
		n := len(l)
		for _, p := range ps {
			n += s.idLen[p.id] - int(p.n)
		}
		s.maxLine = max(s.maxLine, n)
		s.size += int64(n) + 1
	}
	return s, nil
}

// scanUUIDs appends a patch for every lower-case UUID in l that is the id of
// a sample resource.
func scanUUIDs(ps []patch, l []byte, idIdx map[string]int32, uuid []bool) []patch {
	for i := 8; i+28 <= len(l); {
		j := bytes.IndexByte(l[i:], '-')
		if j < 0 {
			break
		}
		h := i + j
		s := h - 8
		if s+36 <= len(l) && isUUIDBytes(l[s:s+36]) &&
			(s == 0 || !isIDChar(l[s-1])) && (s+36 == len(l) || !isIDChar(l[s+36])) {
			if id, ok := idIdx[string(l[s:s+36])]; ok && uuid[id] {
				ps = append(ps, patch{off: uint32(s), n: 36, id: id})
			}
			i = s + 36
			continue
		}
		i = h + 1
	}
	return ps
}

// scanPlainRefs appends a patch for the id part of every "reference" value
// of l that ends in "<Type>/<id>" of a resource with a non-UUID id.
func scanPlainRefs(ps []patch, l []byte, plain map[string]int32) []patch {
	const key = `"reference":"`
	for i := 0; ; {
		j := bytes.Index(l[i:], []byte(key))
		if j < 0 {
			return ps
		}
		vs := i + j + len(key)
		ve := bytes.IndexByte(l[vs:], '"')
		if ve < 0 {
			return ps
		}
		ve += vs
		i = ve
		v := l[vs:ve]
		slash := bytes.LastIndexByte(v, '/')
		if slash < 0 {
			continue
		}
		ts := bytes.LastIndexByte(v[:slash], '/') + 1
		if id, ok := plain[string(v[ts:])]; ok {
			ps = append(ps, patch{off: uint32(vs + slash + 1), n: uint32(len(v) - slash - 1), id: id})
		}
	}
}

// resourceHeader returns the top-level "resourceType" and "id" of the JSON
// object l, and the offset of the id's value (after its opening quote).
func resourceHeader(l []byte) (typ, id string, idOff int, err error) {
	var haveType, haveID bool
	err = jsonobj.Each(l, func(key string, _, vs, ve int) bool {
		switch key {
		case "resourceType", "id":
			v := l[vs:ve]
			if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
				err = fmt.Errorf("%q is not a plain string", key)
				return false
			}
			if key[0] == 'r' {
				typ, haveType = string(v[1:len(v)-1]), true
			} else {
				id, idOff, haveID = string(v[1:len(v)-1]), vs+1, true
			}
		}
		return !(haveType && haveID)
	})
	switch {
	case err != nil:
	case !haveType:
		err = fmt.Errorf("no resourceType")
	case !haveID || id == "":
		err = fmt.Errorf("%s without an id", typ)
	}
	return typ, id, idOff, err
}

// Len returns the number of resources in the sample.
func (s *Sample) Len() int { return len(s.lines) }

// Types returns the resource types of the sample, in order of first
// appearance.
func (s *Sample) Types() []string { return slices.Clone(s.types) }

// TypeCounts returns the number of resources of each type in the sample.
func (s *Sample) TypeCounts() map[string]int {
	m := make(map[string]int, len(s.types))
	for i, t := range s.types {
		m[t] = s.counts[i]
	}
	return m
}

// Each calls fn with every resource of the sample as it was read (line
// without its '\n'), in order, and stops at the first error. line is only
// valid during the call.
func (s *Sample) Each(fn func(typ, id string, line []byte) error) error {
	for _, ln := range s.lines {
		if err := fn(s.types[ln.typ], s.ids[ln.id], s.data[ln.start:ln.end:ln.end]); err != nil {
			return err
		}
	}
	return nil
}

// isUUID reports whether id is a UUID in lower-case hex, 8-4-4-4-12.
func isUUID(id string) bool {
	return len(id) == 36 && isUUIDBytes([]byte(id))
}

func isUUIDBytes(b []byte) bool {
	if len(b) != 36 {
		return false
	}
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// isIDChar reports whether c may continue a token that contains a UUID, in
// which case the UUID is part of something longer and is not replaced.
func isIDChar(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_'
}
