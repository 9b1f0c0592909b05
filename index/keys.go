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
)

// Meta keys.
var (
	keyAppliedSeq = []byte("m/applied_seq")
	keyClock      = []byte("m/clock")
	keyTypes      = []byte("m/types")
)

// errBadKey is returned by the key decoders for bytes that are not a key of
// the expected kind.
var errBadKey = errors.New("index: malformed key")

// changeKey returns c/<type>\x00<ts u64 big-endian>/<id>.
func changeKey(dst []byte, typ string, ts uint64, id string) []byte {
	dst = append(dst, prefixChange...)
	dst = append(dst, typ...)
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, ts)
	dst = append(dst, '/')
	dst = append(dst, id...)
	return dst
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
	rest := k[len(prefixChange):]
	i := bytes.IndexByte(rest, 0)
	if i < 0 || len(rest) < i+1+8+1 || rest[i+1+8] != '/' {
		return "", 0, "", errBadKey
	}
	typ = string(rest[:i])
	ts = binary.BigEndian.Uint64(rest[i+1 : i+9])
	id = string(rest[i+10:])
	return typ, ts, id, nil
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
	return binary.BigEndian.AppendUint32(dst, r.Sum)
}

func decodeResourceRecord(v []byte) (resourceRecord, error) {
	if (len(v) != resourceRecordLen && len(v) != legacyRecordLen) || v[16] > 1 {
		return resourceRecord{}, fmt.Errorf("index: malformed resource record (%d bytes)", len(v))
	}
	r := resourceRecord{
		CommitTime: binary.BigEndian.Uint64(v[0:8]),
		Version:    binary.BigEndian.Uint64(v[8:16]),
		Deleted:    v[16] == 1,
	}
	if len(v) == resourceRecordLen {
		r.Sum, r.HasSum = binary.BigEndian.Uint32(v[17:21]), true
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
