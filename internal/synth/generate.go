package synth

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Generator emits Scale copies of Sample with fresh ids derived from Seed
// (see the package documentation). Its methods only read it, so one
// Generator may be used from several goroutines, for instance one copy per
// goroutine with [Generator.EachCopy].
type Generator struct {
	Sample *Sample
	Seed   uint64
	Scale  int // copies of the sample; 0 generates nothing
}

func (g *Generator) validate() error {
	if g.Sample == nil {
		return errors.New("synth: Generator without a Sample")
	}
	if g.Scale < 0 {
		return fmt.Errorf("synth: negative Scale %d", g.Scale)
	}
	return nil
}

// Len returns the number of resources the generator emits.
func (g *Generator) Len() int64 { return int64(g.Scale) * int64(len(g.Sample.lines)) }

// Size returns the number of bytes the generator emits as NDJSON (every
// resource followed by '\n').
func (g *Generator) Size() int64 { return int64(g.Scale) * g.Sample.size }

// ID returns the id that the sample resource id origID has in copy k, and
// whether origID is the id of a sample resource.
func (g *Generator) ID(k int, origID string) (string, bool) {
	i, ok := g.Sample.idIdx[origID]
	if !ok {
		return "", false
	}
	return string(appendNewID(nil, g.Seed, k, origID, g.Sample.uuid[i])), true
}

// Each calls fn with every generated resource, copy after copy, in sample
// order within a copy, and stops at the first error, which it returns.
// line is the resource without a trailing '\n'; it is only valid during the
// call. Each holds one copy's ids and one line in memory besides the sample.
func (g *Generator) Each(fn func(typ, id string, line []byte) error) error {
	if err := g.validate(); err != nil {
		return err
	}
	for k := range g.Scale {
		if err := g.EachCopy(k, fn); err != nil {
			return err
		}
	}
	return nil
}

// EachCopy is [Generator.Each] for copy k alone (0 ≤ k < Scale).
func (g *Generator) EachCopy(k int, fn func(typ, id string, line []byte) error) error {
	if err := g.validate(); err != nil {
		return err
	}
	if k < 0 || k >= g.Scale {
		return fmt.Errorf("synth: copy %d out of range [0, %d)", k, g.Scale)
	}
	s := g.Sample
	ids := g.copyIDs(k)
	buf := make([]byte, 0, s.maxLine)
	for i := range s.lines {
		ln := &s.lines[i]
		buf = s.appendLine(buf[:0], ln, ids)
		off := s.idOff[ln.id]
		if err := fn(s.types[ln.typ], ids[off:off+s.idLen[ln.id]], buf); err != nil {
			return err
		}
	}
	return nil
}

// WriteNDJSON writes every generated resource to w, one per line, and
// returns the number of bytes written. It writes in chunks of about 1 MiB
// (no further buffering is needed) and checks ctx between chunks.
func (g *Generator) WriteNDJSON(ctx context.Context, w io.Writer) (int64, error) {
	if err := g.validate(); err != nil {
		return 0, err
	}
	const chunk = 1 << 20
	s := g.Sample
	buf := make([]byte, 0, chunk+s.maxLine+1)
	var n int64
	flush := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := w.Write(buf)
		n += int64(m)
		buf = buf[:0]
		return err
	}
	for k := range g.Scale {
		ids := g.copyIDs(k)
		for i := range s.lines {
			buf = s.appendLine(buf, &s.lines[i], ids)
			buf = append(buf, '\n')
			if len(buf) >= chunk {
				if err := flush(); err != nil {
					return n, err
				}
			}
		}
	}
	if len(buf) > 0 {
		if err := flush(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// copyIDs returns the new ids of copy k, the one of ids[i] at
// [idOff[i], idOff[i]+idLen[i]).
func (g *Generator) copyIDs(k int) string {
	s := g.Sample
	buf := make([]byte, 0, s.idBytes)
	for i, id := range s.ids {
		buf = appendNewID(buf, g.Seed, k, id, s.uuid[i])
	}
	return string(buf)
}

// appendLine appends line ln with the ids of one copy spliced in.
func (s *Sample) appendLine(dst []byte, ln *line, ids string) []byte {
	l := s.data[ln.start:ln.end]
	pos := uint32(0)
	for _, p := range s.patches[ln.p0:ln.p1] {
		dst = append(dst, l[pos:p.off]...)
		off := s.idOff[p.id]
		dst = append(dst, ids[off:off+s.idLen[p.id]]...)
		pos = p.off + p.n
	}
	return append(dst, l[pos:]...)
}

// appendLineAt appends line ln of copy k, computing only the ids it needs.
func (g *Generator) appendLineAt(dst []byte, ln *line, k int) []byte {
	s := g.Sample
	l := s.data[ln.start:ln.end]
	pos := uint32(0)
	for _, p := range s.patches[ln.p0:ln.p1] {
		dst = append(dst, l[pos:p.off]...)
		dst = appendNewID(dst, g.Seed, k, s.ids[p.id], s.uuid[p.id])
		pos = p.off + p.n
	}
	return append(dst, l[pos:]...)
}

const (
	idDomain   = "bulkstream/synth/v1\x00"
	maxIDLen   = 64 // FHIR id: [A-Za-z0-9\-\.]{1,64}
	suffixLen  = 1 + 16
	uuidLength = 36
)

// newIDLen returns the length of the id that replaces id in every copy.
func newIDLen(id string, uuid bool) int {
	if uuid || len(id)+suffixLen > maxIDLen {
		return uuidLength
	}
	return len(id) + suffixLen
}

// appendNewID appends the id that replaces id in copy k under seed.
func appendNewID(dst []byte, seed uint64, k int, id string, uuid bool) []byte {
	var in [len(idDomain) + 16 + 64]byte
	b := append(in[:0], idDomain...)
	b = binary.BigEndian.AppendUint64(b, seed)
	b = binary.BigEndian.AppendUint64(b, uint64(k))
	b = append(b, id...)
	h := sha256.Sum256(b)
	if !uuid && len(id)+suffixLen <= maxIDLen {
		dst = append(dst, id...)
		dst = append(dst, '-')
		return hex.AppendEncode(dst, h[:8])
	}
	h[6] = h[6]&0x0f | 0x80 // version 8
	h[8] = h[8]&0x3f | 0x80 // variant 10
	dst = hex.AppendEncode(dst, h[0:4])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, h[4:6])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, h[6:8])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, h[8:10])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, h[10:16])
}
