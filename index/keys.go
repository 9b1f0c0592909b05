package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Key prefixes of the Pebble key layout (see doc.go).
const (
	prefixChange   = "c/"
	prefixResource = "r/"
	prefixMeta     = "m/"
	prefixJob      = "j/"
	prefixPatient  = "p/" // patient compartment membership
	prefixGroup    = "g/" // Group members
	prefixTarget   = "t/" // Provenance targets
)

// Meta keys.
var (
	keyAppliedSeq = []byte("m/applied_seq")
	keyClock      = []byte("m/clock")
	keyTypes      = []byte("m/types")
	// keyRefs holds refsVersion once every live resource has its p/, g/
	// and t/ keys (see backfillRefs).
	keyRefs = []byte("m/refs")
)

// refsVersion is the version of the p/, g/ and t/ key families and of
// the r/ record's reference lists; an index whose m/refs is older gets
// them built at Open.
const refsVersion = 1

// errBadKey is returned by the key decoders for bytes that are not a key of
// the expected kind.
var errBadKey = errors.New("index: malformed key")

// changeKey returns c/<type>\x00<ts u64 big-endian>/<id>.
func changeKey(dst []byte, typ string, ts uint64, id string) []byte {
	dst = append(dst, prefixChange...)
	return appendTypeTime(dst, typ, ts, id)
}

// appendTypeTime appends <type>\x00<ts u64>/<id>, the part of c/ and p/
// keys that orders one type's entries by commit time.
func appendTypeTime(dst []byte, typ string, ts uint64, id string) []byte {
	dst = append(dst, typ...)
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, ts)
	dst = append(dst, '/')
	return append(dst, id...)
}

// parseTypeTime is the inverse of appendTypeTime.
func parseTypeTime(rest []byte) (typ string, ts uint64, id string, err error) {
	i := bytes.IndexByte(rest, 0)
	if i < 0 || len(rest) < i+1+8+1 || rest[i+1+8] != '/' {
		return "", 0, "", errBadKey
	}
	return string(rest[:i]), binary.BigEndian.Uint64(rest[i+1 : i+9]), string(rest[i+10:]), nil
}

// changeBound returns c/<type>\x00<ts u64>, the smallest key of type typ
// whose commit time is ts; it is the inclusive lower bound of a scan from ts
// and the exclusive upper bound of a scan up to ts-1.
func changeBound(typ string, ts uint64) []byte {
	k := make([]byte, 0, len(prefixChange)+len(typ)+1+8)
	k = append(k, prefixChange...)
	k = append(k, typ...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, ts)
}

// typeUpperBound returns the exclusive upper bound of every c/ key of typ.
func typeUpperBound(typ string) []byte {
	k := make([]byte, 0, len(prefixChange)+len(typ)+1)
	k = append(k, prefixChange...)
	k = append(k, typ...)
	return append(k, 1)
}

// parseChangeKey is the inverse of changeKey.
func parseChangeKey(k []byte) (typ string, ts uint64, id string, err error) {
	if !bytes.HasPrefix(k, []byte(prefixChange)) {
		return "", 0, "", errBadKey
	}
	return parseTypeTime(k[len(prefixChange):])
}

// resourceKey returns r/<type>\x00<id>.
func resourceKey(dst []byte, typ, id string) []byte {
	dst = append(dst, prefixResource...)
	dst = append(dst, typ...)
	dst = append(dst, 0)
	return append(dst, id...)
}

// parseResourceKey is the inverse of resourceKey.
func parseResourceKey(k []byte) (typ, id string, err error) {
	if !bytes.HasPrefix(k, []byte(prefixResource)) {
		return "", "", errBadKey
	}
	rest := k[len(prefixResource):]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return "", "", errBadKey
	}
	return string(rest[:i]), string(rest[i+1:]), nil
}

// patientKey returns p/<patient>\x00<type>\x00<ts u64>/<id>: type/id,
// whose c/ entry is at ts, is in patient's compartment. Patient ids are
// FHIR ids, without a NUL byte.
func patientKey(dst []byte, patient, typ string, ts uint64, id string) []byte {
	dst = append(dst, prefixPatient...)
	dst = append(dst, patient...)
	dst = append(dst, 0)
	return appendTypeTime(dst, typ, ts, id)
}

// patientBound returns p/<patient>\x00<type>\x00<ts u64>, the smallest
// p/ key of patient and type at ts.
func patientBound(patient, typ string, ts uint64) []byte {
	k := make([]byte, 0, len(prefixPatient)+len(patient)+1+len(typ)+1+8)
	k = append(k, prefixPatient...)
	k = append(k, patient...)
	k = append(k, 0)
	k = append(k, typ...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, ts)
}

// patientTypeUpperBound is the exclusive upper bound of the p/ keys of
// patient and typ.
func patientTypeUpperBound(patient, typ string) []byte {
	k := make([]byte, 0, len(prefixPatient)+len(patient)+1+len(typ)+1)
	k = append(k, prefixPatient...)
	k = append(k, patient...)
	k = append(k, 0)
	k = append(k, typ...)
	return append(k, 1)
}

// parsePatientKey is the inverse of patientKey.
func parsePatientKey(k []byte) (patient, typ string, ts uint64, id string, err error) {
	if !bytes.HasPrefix(k, []byte(prefixPatient)) {
		return "", "", 0, "", errBadKey
	}
	rest := k[len(prefixPatient):]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return "", "", 0, "", errBadKey
	}
	typ, ts, id, err = parseTypeTime(rest[i+1:])
	return string(rest[:i]), typ, ts, id, err
}

// groupKey returns g/<group>\x00<member type>\x00<member id>: a member
// entry of Group group (member type "" for a urn:uuid reference).
func groupKey(dst []byte, group, mtype, mid string) []byte {
	dst = append(dst, prefixGroup...)
	dst = append(dst, group...)
	dst = append(dst, 0)
	dst = append(dst, mtype...)
	dst = append(dst, 0)
	return append(dst, mid...)
}

// groupPrefix is the prefix of every g/ key of group.
func groupPrefix(group string) []byte {
	return append(append([]byte(prefixGroup), group...), 0)
}

// parseGroupKey is the inverse of groupKey.
func parseGroupKey(k []byte) (group, mtype, mid string, err error) {
	if !bytes.HasPrefix(k, []byte(prefixGroup)) {
		return "", "", "", errBadKey
	}
	parts := bytes.SplitN(k[len(prefixGroup):], []byte{0}, 3)
	if len(parts) != 3 {
		return "", "", "", errBadKey
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

// memberValue is the value under a g/ key.
type memberValue struct {
	Added      uint64 // commit time since which the entity has been a member
	Inactive   bool
	Start, End uint64 // member.period in µs, 0 open
}

const memberValueLen = 8 + 1 + 8 + 8

func (v memberValue) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, v.Added)
	if v.Inactive {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.BigEndian.AppendUint64(dst, v.Start)
	return binary.BigEndian.AppendUint64(dst, v.End)
}

func decodeMemberValue(b []byte) (memberValue, error) {
	if len(b) != memberValueLen || b[8] > 1 {
		return memberValue{}, fmt.Errorf("index: malformed group member value (%d bytes)", len(b))
	}
	return memberValue{
		Added:    binary.BigEndian.Uint64(b[0:8]),
		Inactive: b[8] == 1,
		Start:    binary.BigEndian.Uint64(b[9:17]),
		End:      binary.BigEndian.Uint64(b[17:25]),
	}, nil
}

// targetKey returns t/<target type>/<target id>\x00<provenance id>:
// Provenance/<provenance id> targets the resource target ("Type/id").
func targetKey(dst []byte, target, prov string) []byte {
	dst = append(dst, prefixTarget...)
	dst = append(dst, target...)
	dst = append(dst, 0)
	return append(dst, prov...)
}

// targetPrefix is the prefix of the t/ keys of target ("Type/id").
func targetPrefix(target string) []byte {
	return append(append([]byte(prefixTarget), target...), 0)
}

// resourceRecord is the value under r/<type>\x00<id>: where the resource's
// current c/ entry is, which version it is, and a checksum of the stored
// bytes.
type resourceRecord struct {
	CommitTime uint64 // µs since the epoch; the c/ entry's timestamp
	Version    uint64 // meta.versionId: the stream sequence that wrote it
	Deleted    bool
	// Sum is the CRC-32C of the stored resource (0 for a tombstone), and
	// HasSum whether the record carries one (records written before it
	// existed do not). Apply uses it only to skip reading the stored bytes
	// of an update that cannot be a no-op; equality is decided on bytes.
	Sum    uint32
	HasSum bool
	// Patients are the patients in whose compartment the resource is
	// (for a tombstone: was, when deleted), sorted: its p/ keys. Targets
	// are a Provenance's targets ("Type/id", sorted): its t/ keys.
	// Records written before they existed have neither.
	Patients, Targets []string
	// refsRaw holds the encoded reference lists of a record read by
	// Apply's readRecords, until decodeOld decodes them (nil otherwise).
	refsRaw []byte
	// bodyAt and bodyEnd locate, in Apply's arena, the stored bytes of a
	// record written by the batch being built (both 0 otherwise). They
	// are not encoded.
	bodyAt, bodyEnd int
}

const (
	// resourceRecordLen is the length of an encoded record.
	resourceRecordLen = 8 + 8 + 1 + 4
	// legacyRecordLen is the length of a record without Sum.
	legacyRecordLen = 8 + 8 + 1
)

func (r resourceRecord) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, r.CommitTime)
	dst = binary.BigEndian.AppendUint64(dst, r.Version)
	if r.Deleted {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.BigEndian.AppendUint32(dst, r.Sum)
	if len(r.Patients) == 0 && len(r.Targets) == 0 {
		return dst
	}
	// The reference lists: a count, then each string with its length,
	// all uvarints.
	for _, list := range [2][]string{r.Patients, r.Targets} {
		dst = binary.AppendUvarint(dst, uint64(len(list)))
		for _, s := range list {
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
	}
	return dst
}

// decodeRefs decodes the reference lists after a record's fixed part.
func decodeRefs(b []byte) (patients, targets []string, err error) {
	return decodeRefsIn(b, nil, nil)
}

// decodeRefsIn is decodeRefs taking strings from intern (adding the new
// ones; nil: none) and carving the lists from *arena (nil: allocated).
func decodeRefsIn(b []byte, intern map[string]string, arena *[]string) (patients, targets []string, err error) {
	var lists [2][]string
	for l := range lists {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)) {
			return nil, nil, errBadKey
		}
		b = b[k:]
		var list []string
		if arena == nil {
			list = make([]string, 0, n)
		}
		start := 0
		if arena != nil {
			start = len(*arena)
		}
		for range n {
			m, k := binary.Uvarint(b)
			if k <= 0 || m > uint64(len(b)-k) {
				return nil, nil, errBadKey
			}
			raw := b[k : k+int(m)]
			s, ok := intern[string(raw)]
			if !ok {
				s = string(raw)
				if intern != nil {
					intern[s] = s
				}
			}
			if arena != nil {
				*arena = append(*arena, s)
			} else {
				list = append(list, s)
			}
			b = b[k+int(m):]
		}
		if arena != nil {
			list = (*arena)[start:len(*arena):len(*arena)]
		}
		lists[l] = list
	}
	if len(b) != 0 {
		return nil, nil, errBadKey
	}
	return lists[0], lists[1], nil
}

// decodeRecordFixed decodes a record's fixed part and appends its
// reference lists, undecoded, to *raw, keeping them in refsRaw: Apply
// reads the record of every change but decodes the lists only of those
// that are not no-ops (Index.decodeOld).
func decodeRecordFixed(v []byte, raw *[]byte) (resourceRecord, error) {
	if len(v) <= resourceRecordLen {
		return decodeResourceRecord(v)
	}
	r, err := decodeResourceRecord(v[:resourceRecordLen])
	if err != nil {
		return r, err
	}
	at := len(*raw)
	*raw = append(*raw, v[resourceRecordLen:]...)
	r.refsRaw = (*raw)[at:len(*raw):len(*raw)]
	return r, nil
}

func decodeResourceRecord(v []byte) (resourceRecord, error) {
	if len(v) < legacyRecordLen || (len(v) > legacyRecordLen && len(v) < resourceRecordLen) || v[16] > 1 {
		return resourceRecord{}, fmt.Errorf("index: malformed resource record (%d bytes)", len(v))
	}
	r := resourceRecord{
		CommitTime: binary.BigEndian.Uint64(v[0:8]),
		Version:    binary.BigEndian.Uint64(v[8:16]),
		Deleted:    v[16] == 1,
	}
	if len(v) >= resourceRecordLen {
		r.Sum, r.HasSum = binary.BigEndian.Uint32(v[17:21]), true
	}
	if len(v) > resourceRecordLen {
		var err error
		if r.Patients, r.Targets, err = decodeRefs(v[resourceRecordLen:]); err != nil {
			return resourceRecord{}, fmt.Errorf("index: malformed resource record reference lists (%d bytes)", len(v))
		}
	}
	return r, nil
}

// jobKey returns j/<id>.
func jobKey(id string) []byte { return append([]byte(prefixJob), id...) }

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("index: malformed uint64 value (%d bytes)", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
