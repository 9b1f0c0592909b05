package export

import (
	"context"

	"github.com/bulkstream/bulkstream/index"
)

// Source is the store the manager exports from. [IndexSource] adapts an
// *index.Index; another store, or a fake in tests, can stand in.
type Source interface {
	// Snapshot returns a consistent read view paired with its
	// transactionTime. The caller closes it.
	Snapshot() (Snapshot, error)
	// WaitApplied blocks until stream sequence seq is committed, or ctx
	// ends.
	WaitApplied(ctx context.Context, seq uint64) error
	// AppliedSeq is the last committed stream sequence. It never blocks.
	AppliedSeq() uint64
	// Clock is the last commit time handed out (µs). It never blocks.
	Clock() uint64
	// Exists reports whether the store holds a live (not deleted)
	// resource typ/id now, without a snapshot.
	Exists(typ, id string) (bool, error)
}

// Snapshot is a consistent read view of a Source, as of its
// TransactionTime. It MUST be closed as soon as the export is done with
// it: a store may keep old versions alive for it.
type Snapshot interface {
	// TransactionTime is the commit time (µs) of the last change in the
	// view: every entry in it has CommitTime <= TransactionTime, and every
	// later change a greater one.
	TransactionTime() uint64
	// AppliedSeq is the last stream sequence in the view.
	AppliedSeq() uint64
	// Counts are the resources and tombstones by type in the view, types
	// in a stable order. The caller does not change the slice.
	Counts() []TypeCount
	// Scan calls fn, in commit-time order, for each current resource and
	// tombstone of type typ with since < CommitTime <= until (until
	// index.Unbounded: no upper bound). An error from fn stops the scan
	// and is returned, as is ctx's error. Entry.Resource is only valid
	// during the call; the scan should not allocate per entry.
	Scan(ctx context.Context, typ string, since, until uint64, fn func(Entry) error) error
	// ScanPatient is Scan restricted to the resources and tombstones of
	// type typ in the Patient compartment of patient id (R4's
	// CompartmentDefinition/patient; a Patient is in its own), in
	// commit-time order. Entry.Shared marks a resource that is in more
	// than one patient's compartment.
	ScanPatient(ctx context.Context, patient, typ string, since, until uint64, fn func(Entry) error) error
	// GroupMembers returns the member entries of the live Group id in
	// the view, in member-id order; found is false when the view holds
	// no live Group of that id.
	GroupMembers(id string) (members []GroupMember, found bool, err error)
	// Provenance calls fn, in Provenance-id order, with each live
	// Provenance in the view whose target references typ/id.
	Provenance(ctx context.Context, typ, id string, fn func(Entry) error) error
	// Get returns the live resource typ/id in the view; found is false
	// when there is none (never stored, or deleted).
	Get(typ, id string) (e Entry, found bool, err error)
	Close() error
}

// GroupMember is one member entry of a Group (Group.member), as the index
// keeps it.
type GroupMember struct {
	// Type and ID are what member.entity references: "Patient" and the
	// patient's id, or "Group" for a nested Group. A urn:uuid:<id>
	// reference (Synthea's Groups use them) has Type "" and ID <id>.
	Type, ID string
	// Added is the commit time (µs) of the Group version from which the
	// entity has been a member without interruption, inactive or not.
	Added uint64
	// Inactive is member.inactive.
	Inactive bool
	// Start and End bound member.period in µs (0: open), End inclusive.
	Start, End uint64
}

// TypeCount is what a Snapshot holds of one type.
type TypeCount struct {
	Type       string
	Resources  int64
	Tombstones int64
}

// Entry is one resource, or tombstone, a Snapshot's Scan yields.
type Entry struct {
	Type       string
	ID         string
	CommitTime uint64 // µs since the epoch; the resource's meta.lastUpdated
	Deleted    bool   // a tombstone: Resource is nil
	// Resource is the stored NDJSON-ready bytes, only valid during the
	// callback.
	Resource []byte
	// Shared (ScanPatient only) says the resource is in more than one
	// patient's compartment, so a scan of several patients can meet it
	// again.
	Shared bool
}

// IndexSource is the Source of an *index.Index.
func IndexSource(x *index.Index) Source { return indexSource{x} }

// indexSource adapts *index.Index: its Snapshot returns the interface.
type indexSource struct{ *index.Index }

func (s indexSource) Snapshot() (Snapshot, error) {
	snap, err := s.Index.Snapshot()
	if err != nil {
		return nil, err
	}
	counts := make([]TypeCount, len(snap.Counts()))
	for i, c := range snap.Counts() {
		counts[i] = TypeCount(c)
	}
	return &indexSnapshot{snap: snap, counts: counts}, nil
}

// indexSnapshot adapts *index.Snapshot.
type indexSnapshot struct {
	snap   *index.Snapshot
	counts []TypeCount
}

func (s *indexSnapshot) TransactionTime() uint64 { return s.snap.TransactionTime }
func (s *indexSnapshot) AppliedSeq() uint64      { return s.snap.AppliedSeq }
func (s *indexSnapshot) Counts() []TypeCount     { return s.counts }
func (s *indexSnapshot) Close() error            { return s.snap.Close() }

// Scan converts each entry in place (the two Entry types have the same
// fields): one closure per call, nothing per entry.
func (s *indexSnapshot) Scan(ctx context.Context, typ string, since, until uint64, fn func(Entry) error) error {
	return s.snap.Scan(ctx, typ, since, until, func(e index.Entry) error { return fn(Entry(e)) })
}

func (s *indexSnapshot) ScanPatient(ctx context.Context, patient, typ string, since, until uint64, fn func(Entry) error) error {
	return s.snap.ScanPatient(ctx, patient, typ, since, until, func(e index.Entry) error { return fn(Entry(e)) })
}

func (s *indexSnapshot) GroupMembers(id string) ([]GroupMember, bool, error) {
	ms, found, err := s.snap.GroupMembers(id)
	out := make([]GroupMember, len(ms))
	for i, m := range ms {
		out[i] = GroupMember(m)
	}
	return out, found, err
}

func (s *indexSnapshot) Provenance(ctx context.Context, typ, id string, fn func(Entry) error) error {
	return s.snap.Provenance(ctx, typ, id, func(e index.Entry) error { return fn(Entry(e)) })
}

func (s *indexSnapshot) Get(typ, id string) (Entry, bool, error) {
	e, found, err := s.snap.Get(typ, id)
	return Entry(e), found, err
}
