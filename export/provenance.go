package export

import (
	"context"
	"fmt"
)

// provenance collects what includeAssociatedData adds to an export
// (https://hl7.org/fhir/uv/bulkdata/export.html, the include-associated-data
// codes): for each exported resource, the Provenance resources whose
// target references it (the index's t/ keys) — every one
// (RelevantProvenanceResources) or the one changed last
// (LatestProvenanceResources). They are associated data: exported
// whatever _since and _type say, as of the export's transactionTime, each
// once (once per block with organizeOutputBy), and never twice with the
// Provenance resources the export writes anyway.
type provenance struct {
	mode    ProvenanceMode
	order   []string // Provenance ids to write, in the order found
	pending map[string]struct{}
	written map[string]struct{} // written already, by a Provenance scan or a flush
	out     *fileSeq            // by-type output: the associated Provenance files
}

func newProvenance(mode ProvenanceMode) *provenance {
	return &provenance{mode: mode, pending: map[string]struct{}{}, written: map[string]struct{}{}}
}

// associatedBase is the file name base of the associated Provenance files
// of a by-type export (the Provenance type's own files are "Provenance").
const associatedBase = "Provenance-associated"

// add notes the Provenance associated with exported resource e.
func (p *provenance) add(ctx context.Context, snap Snapshot, e Entry) error {
	if e.Type == "Provenance" {
		p.written[e.ID] = struct{}{}
		return nil
	}
	var latest Entry
	err := snap.Provenance(ctx, e.Type, e.ID, func(pe Entry) error {
		if p.mode == ProvenanceRelevant {
			p.queue(pe.ID)
		} else if latest.ID == "" || pe.CommitTime > latest.CommitTime ||
			(pe.CommitTime == latest.CommitTime && pe.ID > latest.ID) {
			latest = Entry{ID: pe.ID, CommitTime: pe.CommitTime}
		}
		return nil
	})
	if latest.ID != "" {
		p.queue(latest.ID)
	}
	return err
}

func (p *provenance) queue(id string) {
	if _, ok := p.pending[id]; ok {
		return
	}
	if _, ok := p.written[id]; ok {
		return
	}
	p.pending[id] = struct{}{}
	p.order = append(p.order, id)
}

// flush writes the Provenance noted since the last flush: to out[0] (a
// block of organized output, after which the next block starts afresh),
// or, with no out, to the associated Provenance files, which it then
// completes.
func (p *provenance) flush(ctx context.Context, snap Snapshot, s *scan, out ...*fileSeq) error {
	block := len(out) > 0
	var f *fileSeq
	if block {
		f = out[0]
	} else {
		if len(p.order) == 0 {
			return nil
		}
		if p.out == nil {
			p.out, _ = s.typeFiles("Provenance", associatedBase)
		}
		f = p.out
	}
	var err error
	for _, id := range p.order {
		if _, done := p.written[id]; done {
			continue
		}
		e, found, gerr := snap.Get("Provenance", id)
		if gerr != nil {
			err = gerr
			break
		}
		if !found {
			continue
		}
		p.written[id] = struct{}{}
		if err = s.entry(ctx, snap, e, f, nil, true); err != nil {
			break
		}
	}
	clear(p.pending)
	p.order = p.order[:0]
	if block {
		clear(p.written)
		return err
	}
	if err := s.finishType(ctx, "Provenance", err, f); err != nil {
		return fmt.Errorf("associated data: %w", err)
	}
	return nil
}
