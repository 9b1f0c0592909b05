package index

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// The reference index: what Patient- and Group-level export and
// includeAssociatedData read, kept by Apply in the same batch as the
// resources (see doc.go for the keys):
//
//   - p/ keys put each resource in the Patient compartments it belongs to
//     (compartmentOf), at its c/ entry's commit time, so that "type T of
//     patient P changed after S" is one bounded scan. A tombstone keeps
//     the compartments of the version it deleted.
//   - g/ keys hold each Group's member entries, with the commit time
//     since which each has been a member.
//   - t/ keys map a resource to the Provenance resources targeting it.
//
// All of them are functions of the stream, like every other key, so a
// rebuild and every replica write the same bytes.

// maxInterned bounds the patient ids Apply keeps interned between
// batches (about 100 bytes each); past it the set starts afresh.
const maxInterned = 1 << 16

// memberName identifies a Group member entry: the type and id of its
// entity reference (type "" for urn:uuid).
type memberName struct{ typ, id string }

// applyRefs writes the reference-index keys of change c, whose r/ record
// was old (found) and is now rec (at commit time clock), and sets rec's
// reference lists.
func (x *Index) applyRefs(b *pebble.Batch, c *Change, found bool, old, rec *resourceRecord, clock uint64) error {
	sc := &x.scratch
	if sc.ids == nil || len(sc.ids) > maxInterned {
		sc.ids = map[string]string{}
	}
	if found && old.refsRaw != nil {
		var err error
		if old.Patients, old.Targets, err = decodeRefsIn(old.refsRaw, sc.ids, &sc.lists); err != nil {
			return fmt.Errorf("index: malformed reference lists in the record of %s/%s", c.Type, c.ID)
		}
		old.refsRaw = nil
	}
	switch {
	case c.Delete && x.opts.CompactedStream:
		// A rebuild from a compacted stream cannot know the deleted
		// version's compartments: only a Patient's own is certain.
		if c.Type == "Patient" {
			rec.Patients = []string{c.ID}
		}
	case c.Delete:
		if found {
			rec.Patients = old.Patients // a tombstone stays in the compartments it left
		}
	default:
		refs, err := compartmentOfIn(sc.refs[:0], c.Type, c.ID, c.Body, sc.ids)
		if err != nil {
			refs = refs[:0] // ingest checked the body is an object; nothing to index otherwise
		}
		sc.refs = refs
		if found && slices.Equal(refs, old.Patients) {
			rec.Patients = old.Patients
		} else if len(refs) > 0 {
			// The record lives until the batch is committed: its list is
			// carved from the batch's arena rather than allocated.
			at := len(sc.lists)
			sc.lists = append(sc.lists, refs...)
			rec.Patients = sc.lists[at:len(sc.lists):len(sc.lists)]
		}
		if c.Type == "Provenance" {
			targets, err := provenanceTargets(sc.refs[:0], c.Body)
			if err != nil {
				targets = targets[:0]
			}
			sc.refs = targets
			if found && slices.Equal(targets, old.Targets) {
				rec.Targets = old.Targets
			} else if len(targets) > 0 {
				rec.Targets = slices.Clone(targets)
			}
		}
	}
	k := sc.refKey[:0]
	defer func() { sc.refKey = k[:0] }()
	if found {
		for _, p := range old.Patients {
			k = patientKey(k[:0], p, c.Type, old.CommitTime, c.ID)
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		}
	}
	shared := []byte{byte(min(len(rec.Patients), 255))}
	for _, p := range rec.Patients {
		k = patientKey(k[:0], p, c.Type, clock, c.ID)
		if err := b.Set(k, shared, nil); err != nil {
			return err
		}
	}
	if found {
		for _, t := range old.Targets {
			if _, keep := slices.BinarySearch(rec.Targets, t); !keep {
				k = targetKey(k[:0], t, c.ID)
				if err := b.Delete(k, nil); err != nil {
					return err
				}
			}
		}
	}
	for _, t := range rec.Targets {
		if _, had := slices.BinarySearch(old.Targets, t); !had || !found {
			k = targetKey(k[:0], t, c.ID)
			if err := b.Set(k, nil, nil); err != nil {
				return err
			}
		}
	}
	if c.Type == "Group" {
		return x.applyGroup(b, c, clock)
	}
	return nil
}

// applyGroup replaces the g/ keys of Group c.ID with the member entries
// of its new version (none for a delete). An entity already a member
// keeps the time it became one.
func (x *Index) applyGroup(b *pebble.Batch, c *Change, clock uint64) error {
	cur, err := x.groupState(c.ID)
	if err != nil {
		return err
	}
	next := map[memberName]memberValue{}
	if !c.Delete {
		members, err := groupMembers(c.Body)
		if err != nil {
			members = nil
		}
		for _, m := range members {
			n := memberName{m.Type, m.ID}
			v := memberValue{Added: clock, Inactive: m.Inactive, Start: m.Start, End: m.End}
			if was, ok := cur[n]; ok {
				v.Added = was.Added
			}
			if dup, ok := next[n]; ok {
				// The same entity twice: a member if either entry says so,
				// over the union of their periods.
				v.Inactive = v.Inactive && dup.Inactive
				v.Start = openMin(v.Start, dup.Start)
				v.End = openMax(v.End, dup.End)
			}
			next[n] = v
		}
	}
	k := x.scratch.refKey[:0]
	defer func() { x.scratch.refKey = k[:0] }()
	var vbuf [memberValueLen]byte
	for n := range cur {
		if _, ok := next[n]; !ok {
			k = groupKey(k[:0], c.ID, n.typ, n.id)
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		}
	}
	for n, v := range next {
		if was, ok := cur[n]; ok && was == v {
			continue
		}
		k = groupKey(k[:0], c.ID, n.typ, n.id)
		if err := b.Set(k, v.encode(vbuf[:0]), nil); err != nil {
			return err
		}
	}
	if x.scratch.groups == nil {
		x.scratch.groups = map[string]map[memberName]memberValue{}
	}
	x.scratch.groups[c.ID] = next
	return nil
}

// openMin is the earlier of two period starts, 0 meaning open (earliest).
func openMin(a, b uint64) uint64 {
	if a == 0 || b == 0 {
		return 0
	}
	return min(a, b)
}

// openMax is the later of two period ends, 0 meaning open (latest).
func openMax(a, b uint64) uint64 {
	if a == 0 || b == 0 {
		return 0
	}
	return max(a, b)
}

// groupState returns Group id's member entries as the batch being built
// leaves them: those it wrote, or else the store's.
func (x *Index) groupState(id string) (map[memberName]memberValue, error) {
	if m, ok := x.scratch.groups[id]; ok {
		return m, nil
	}
	m := map[memberName]memberValue{}
	err := scanGroup(x.db, id, func(n memberName, v memberValue) { m[n] = v })
	return m, err
}

// reader is what both *pebble.DB and *pebble.Snapshot offer.
type reader interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// scanGroup calls fn with each g/ entry of Group id in r, in key order.
func scanGroup(r reader, id string, fn func(memberName, memberValue)) error {
	lower := groupPrefix(id)
	upper := append(bytes.Clone(lower[:len(lower)-1]), 1)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		_, typ, mid, err := parseGroupKey(it.Key())
		if err != nil {
			return errors.Join(fmt.Errorf("index: group %s: %w", id, err), it.Close())
		}
		v, err := it.ValueAndErr()
		if err == nil {
			var mv memberValue
			if mv, err = decodeMemberValue(v); err == nil {
				fn(memberName{typ, mid}, mv)
				continue
			}
		}
		return errors.Join(err, it.Close())
	}
	return errors.Join(it.Error(), it.Close())
}

// GroupMember is one member entry of a Group in a Snapshot.
type GroupMember struct {
	// Type and ID are member.entity's reference; Type is "" for a
	// urn:uuid:<ID> reference.
	Type, ID string
	// Added is the commit time (µs) of the Group version from which the
	// entity has been a member without interruption.
	Added    uint64
	Inactive bool
	// Start and End bound member.period in µs, 0 open; End inclusive.
	Start, End uint64
}

// GroupMembers returns the member entries of Group id in the view, in
// (type, id) order; found is false when the view holds no live Group id.
func (s *Snapshot) GroupMembers(id string) ([]GroupMember, bool, error) {
	rec, found, err := getRecord(s.snap, "Group", id)
	if err != nil || !found || rec.Deleted {
		return nil, false, err
	}
	var members []GroupMember
	err = scanGroup(s.snap, id, func(n memberName, v memberValue) {
		members = append(members, GroupMember{Type: n.typ, ID: n.id, Added: v.Added, Inactive: v.Inactive, Start: v.Start, End: v.End})
	})
	return members, true, err
}

// Get returns the live resource typ/id in the view (found false for none,
// or a tombstone). Entry.Resource stays valid until the snapshot closes.
func (s *Snapshot) Get(typ, id string) (Entry, bool, error) {
	rec, ok, err := getRecord(s.snap, typ, id)
	if err != nil || !ok || rec.Deleted {
		return Entry{}, false, err
	}
	v, closer, err := s.snap.Get(changeKey(nil, typ, rec.CommitTime, id))
	if err != nil {
		return Entry{}, false, fmt.Errorf("index: %s/%s: read the entry its record points at: %w", typ, id, err)
	}
	body := bytes.Clone(v)
	closer.Close()
	return Entry{Type: typ, ID: id, CommitTime: rec.CommitTime, Resource: body}, true, nil
}

// getter is what both *pebble.DB and *pebble.Snapshot offer.
type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// getRecord reads typ/id's r/ record from g.
func getRecord(g getter, typ, id string) (resourceRecord, bool, error) {
	v, closer, err := g.Get(resourceKey(nil, typ, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return resourceRecord{}, false, nil
	}
	if err != nil {
		return resourceRecord{}, false, err
	}
	defer closer.Close()
	rec, err := decodeResourceRecord(v)
	return rec, err == nil, err
}

// Exists reports whether the index holds a live resource typ/id now.
func (x *Index) Exists(typ, id string) (bool, error) {
	if err := x.rlockDB(); err != nil {
		return false, err
	}
	defer x.dbMu.RUnlock()
	rec, ok, err := getRecord(x.db, typ, id)
	return ok && !rec.Deleted, err
}

// ScanPatient calls fn, in commit-time order, for each resource and
// tombstone of type typ in patient's compartment with since < CommitTime
// <= until, as Scan does for a whole type. Entry.Shared marks one in
// several patients' compartments.
func (s *Snapshot) ScanPatient(ctx context.Context, patient, typ string, since, until uint64, fn func(Entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if until <= since {
		return nil
	}
	upper := patientTypeUpperBound(patient, typ)
	if until != Unbounded {
		upper = patientBound(patient, typ, until+1)
	}
	it, err := s.snap.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: patientBound(patient, typ, since+1),
		UpperBound: upper,
	})
	if err != nil {
		return err
	}
	defer it.Close()
	// The resources are read from their c/ entries, with one iterator
	// whose seeks reuse the blocks it has loaded, opened at the first
	// entry: most patients have nothing of most types.
	var cit *pebble.Iterator
	defer func() {
		if cit != nil {
			cit.Close()
		}
	}()
	var ck []byte
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		_, t, ts, id, err := parsePatientKey(it.Key())
		if err != nil {
			return fmt.Errorf("index: scan patient %s %s: %w", patient, typ, err)
		}
		pv, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if cit == nil {
			if cit, err = s.snap.NewIterWithContext(ctx, &pebble.IterOptions{
				LowerBound: changeBound(typ, 0),
				UpperBound: typeUpperBound(typ),
			}); err != nil {
				return err
			}
		}
		ck = changeKey(ck[:0], t, ts, id)
		if !cit.SeekGE(ck) || !bytes.Equal(cit.Key(), ck) {
			return errors.Join(fmt.Errorf("index: %s/%s in patient %s's compartment has no entry at %d", t, id, patient, ts), cit.Error())
		}
		v, err := cit.ValueAndErr()
		if err != nil {
			return err
		}
		e := Entry{Type: t, ID: id, CommitTime: ts, Deleted: len(v) == 0, Shared: len(pv) == 1 && pv[0] > 1}
		if !e.Deleted {
			e.Resource = v
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return it.Error()
}

// Provenance calls fn, in Provenance-id order, with each live Provenance
// in the view whose target references typ/id.
func (s *Snapshot) Provenance(ctx context.Context, typ, id string, fn func(Entry) error) error {
	lower := targetPrefix(typ + "/" + id)
	upper := append(bytes.Clone(lower[:len(lower)-1]), 1)
	it, err := s.snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		prov := string(it.Key()[len(lower):])
		e, found, err := s.Get("Provenance", prov)
		if err != nil {
			return err
		}
		if found {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return it.Error()
}

// backfillBatch is how many resources backfillRefs commits at a time.
const backfillBatch = 4096

// backfillRefs builds the reference index of an index written before it
// existed (m/refs below refsVersion): every live resource gets its p/,
// t/ and g/ keys and its record's reference lists, as Apply would have
// written them (a Group's members count as added at its commit time).
// Tombstones get none: the version they deleted is gone. It runs in Open,
// before any Apply; interrupted, it starts over at the next Open (every
// write is idempotent).
func (x *Index) backfillRefs() error {
	v, err := x.getUint64(keyRefs)
	if err != nil || v >= refsVersion {
		x.refsMarked = v >= refsVersion
		return err
	}
	if x.appliedSeq == 0 {
		return nil // a new index: its first batch writes m/refs
	}
	it, err := x.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixChange),
		UpperBound: []byte("c0"), // '0' follows '/'
	})
	if err != nil {
		return err
	}
	defer it.Close()
	b := x.db.NewBatch()
	defer func() { b.Close() }()
	commit := func() error {
		err := x.write(func() error { return b.Commit(x.syncWO) })
		b.Close()
		b = x.db.NewBatch()
		clear(x.scratch.groups)
		x.scratch.lists = x.scratch.lists[:0]
		return err
	}
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		typ, ts, id, err := parseChangeKey(it.Key())
		if err != nil {
			return fmt.Errorf("index: build the reference index: %w", err)
		}
		body, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if len(body) == 0 {
			continue // a tombstone
		}
		old, ok, err := getRecord(x.db, typ, id)
		if err != nil {
			return err
		}
		if !ok || old.Deleted || old.CommitTime != ts {
			return fmt.Errorf("index: build the reference index: %s/%s's record does not point at its entry", typ, id)
		}
		old.Patients, old.Targets = nil, nil
		rec := old
		c := &Change{Type: typ, ID: id, Body: body}
		if err := x.applyRefs(b, c, true, &old, &rec, ts); err != nil {
			return err
		}
		if err := b.Set(resourceKey(nil, typ, id), rec.encode(nil), nil); err != nil {
			return err
		}
		if n++; n%backfillBatch == 0 {
			if err := commit(); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := b.Set(keyRefs, encodeUint64(refsVersion), nil); err != nil {
		return err
	}
	if err := commit(); err != nil {
		return err
	}
	x.refsMarked = true
	if n > 0 {
		x.log.Info("built the patient compartment and Provenance target index of existing resources", "resources", n)
	}
	return nil
}
