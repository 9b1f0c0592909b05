package export

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/bulkstream/bulkstream/index"
)

// This file runs Patient- and Group-level exports
// (https://hl7.org/fhir/uv/bulkdata/export.html): the patients of the
// level, then, for each of them, range scans of their compartments.

// cohortPatient is one patient of a Patient- or Group-level export.
type cohortPatient struct {
	id string
	// whole: every resource of the patient's compartment is exported,
	// whatever _since says: a Group member added after _since (the IG's
	// Group-level _since rule), whose earlier data the client never got.
	// Deletions are not listed for it.
	whole bool
}

// sinceOf is the _since bound of p's compartment scans: none for a
// patient whose whole compartment is exported.
func (s *scan) sinceOf(p cohortPatient) uint64 {
	if p.whole {
		return 0
	}
	return s.req.Since
}

// onceSet is a set of keys made at its first use.
type onceSet map[string]struct{}

// first adds k and reports whether it was not in the set.
func (o *onceSet) first(k string) bool {
	if _, dup := (*o)[k]; dup {
		return false
	}
	if *o == nil {
		*o = onceSet{}
	}
	(*o)[k] = struct{}{}
	return true
}

// maxGroupDepth bounds the nesting of Groups a Group-level export
// follows.
const maxGroupDepth = 16

// cohort returns the patients of the export, sorted by id, and writes a
// warning to the error file for each patient parameter entry that is not
// one of them.
func (s *scan) cohort(snap Snapshot) ([]cohortPatient, error) {
	req := s.req
	tt := snap.TransactionTime()
	var all []cohortPatient
	switch req.Level {
	case LevelGroup:
		byID := map[string]bool{} // id → whole
		if err := s.groupPatients(snap, req.Group, tt, 0, 0, map[string]bool{}, byID); err != nil {
			return nil, err
		}
		for id, whole := range byID {
			all = append(all, cohortPatient{id: id, whole: whole})
		}
	case LevelPatient:
		if len(req.Patients) > 0 {
			// Only the patients asked for: no need to list them all.
			for _, id := range req.Patients {
				if ok, err := s.patientInView(snap, id); err != nil {
					return nil, err
				} else if ok {
					all = append(all, cohortPatient{id: id})
				}
			}
			break
		}
		err := snap.Scan(context.Background(), "Patient", 0, s.until, func(e Entry) error {
			if s.patientListed(e) {
				all = append(all, cohortPatient{id: e.ID})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("export: level %q has no patients", req.Level)
	}
	slices.SortFunc(all, func(a, b cohortPatient) int { return strings.Compare(a.id, b.id) })
	if len(req.Patients) == 0 {
		return all, nil
	}
	// The patient parameter narrows the cohort; a patient outside it is a
	// warning, not a failure (the IG: the server exports what it can).
	var out []cohortPatient
	for _, id := range req.Patients {
		i, ok := slices.BinarySearchFunc(all, id, func(c cohortPatient, id string) int { return strings.Compare(c.id, id) })
		if ok {
			out = append(out, all[i])
			continue
		}
		why := "there is no such Patient on this server"
		if req.Level == LevelGroup {
			why = "it is not an active member of Group/" + req.Group
		}
		s.line = appendOutcome(s.line[:0], "warning", "not-found", fmt.Sprintf(
			"patient Patient/%s is not exported: %s (as of transactionTime %s)", id, why, index.FormatInstant(tt)))
		if err := s.errs.write(s.line); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b cohortPatient) int { return strings.Compare(a.id, b.id) })
	return slices.CompactFunc(out, func(a, b cohortPatient) bool { return a.id == b.id }), nil
}

// patientInView reports whether Patient id is in the view, or, for a
// _since export, was deleted since: a Patient is in its own compartment,
// so its entry is in the scan of that compartment's Patients.
func (s *scan) patientInView(snap Snapshot, id string) (bool, error) {
	in := false
	err := snap.ScanPatient(context.Background(), id, "Patient", 0, s.until, func(e Entry) error {
		in = in || (e.ID == id && s.patientListed(e))
		return nil
	})
	return in, err
}

// patientListed reports whether a Patient entry makes its patient one of
// a Patient-level export's: live, or, for a _since export, deleted since
// (its compartment's deletions are listed).
func (s *scan) patientListed(e Entry) bool {
	return !e.Deleted || (s.req.HasSince && e.CommitTime > s.req.Since)
}

// groupPatients adds to byID the patients of Group id (members of nested
// Groups included, at most maxGroupDepth deep, each Group once): members
// that are not inactive and whose period covers transactionTime tt.
// added is when the enclosing Group gained this one (0 at the top): a
// patient is whole when it became a member, through every Group on its
// path, after _since.
func (s *scan) groupPatients(snap Snapshot, id string, tt, added uint64, depth int, visited, byID map[string]bool) error {
	if visited[id] {
		return nil // a cycle, or a Group reached twice
	}
	visited[id] = true
	members, found, err := snap.GroupMembers(id)
	if err != nil {
		return err
	}
	if !found {
		if depth == 0 {
			return &clientError{msg: fmt.Sprintf("Group/%s is not on this server (as of transactionTime %s)", id, index.FormatInstant(tt))}
		}
		return nil // a nested Group that is gone has no members
	}
	for _, mb := range members {
		if mb.Inactive || (mb.Start != 0 && mb.Start > tt) || (mb.End != 0 && mb.End < tt) {
			continue
		}
		since := max(added, mb.Added)
		switch mb.Type {
		case "Group":
			if depth+1 >= maxGroupDepth {
				continue
			}
			if err := s.groupPatients(snap, mb.ID, tt, since, depth+1, visited, byID); err != nil {
				return err
			}
			continue
		case "":
			// urn:uuid:<id>: a Patient of that id, if there is one.
			if _, ok, err := snap.Get("Patient", mb.ID); err != nil {
				return err
			} else if !ok {
				continue
			}
		case "Patient":
		default:
			continue // not a patient: no compartment to export
		}
		whole := s.req.HasSince && since > s.req.Since
		if was, ok := byID[mb.ID]; ok {
			whole = whole && was // a member since before _since through another path
		}
		byID[mb.ID] = whole
	}
	return nil
}

// scanPatients writes a Patient- or Group-level export: by type (one scan
// of each patient's compartment per type), or, with organizeOutputBy,
// by patient.
func (s *scan) scanPatients(ctx context.Context, snap Snapshot, plan *scanPlan) error {
	cohort, err := s.cohort(snap)
	if err != nil {
		return err
	}
	// Progress and Retry-After count against the cohort's share of the
	// types' entries, not all of them: a Group of 1 % of the patients
	// scans about 1 % of the data.
	for _, c := range snap.Counts() {
		if c.Type == "Patient" && c.Resources > int64(len(cohort)) {
			share := *plan
			share.entries = plan.entries*int64(len(cohort))/c.Resources + 1
			share.total = share.entries
			s.j.prog.plan.Store(&share)
		}
	}
	if s.req.OrganizeBy != "" {
		return s.scanOrganized(ctx, snap, plan.types, cohort)
	}
	for i, typ := range plan.types {
		s.j.prog.typeIdx.Store(int32(i + 1))
		out, del := s.typeFiles(typ, typ)
		var seen onceSet // the Shared resources written, by id
		var err error
		for _, p := range cohort {
			err = snap.ScanPatient(ctx, p.id, typ, s.sinceOf(p), s.until, func(e Entry) error {
				if e.Shared && !seen.first(e.ID) {
					return nil // in several compartments: written once
				}
				return s.entry(ctx, snap, e, out, del, s.full || p.whole)
			})
			if err != nil {
				break
			}
		}
		if err := s.finishType(ctx, typ, err, out, del); err != nil {
			return err
		}
	}
	return nil
}

// organizedBase is the file name base of organizeOutputBy=Patient output.
const organizedBase = "Patient-blocks"

// scanOrganized writes organizeOutputBy=Patient output
// (https://hl7.org/fhir/uv/bulkdata/export.html, Bulk Data 3.0): for each
// patient with something to export, a block made of a Parameters header
// naming the patient, the Patient resource (when exported), then the
// patient's other resources, type by type, and the Provenance
// includeAssociatedData adds for them. A block is never split: a file
// ends only between blocks, so a file may exceed the size limit by one
// block. A resource in several patients' compartments is in each of
// their blocks, so that every block is whole. Deletions (a _since
// export) go to the deleted files as at every level.
func (s *scan) scanOrganized(ctx context.Context, snap Snapshot, types []string, cohort []cohortPatient) error {
	mf := s.mf
	mf.OutputOrganizedBy = s.req.OrganizeBy
	// Output items carry no type (Bulk Data 3.0).
	out := s.fileSeq(organizedBase, "", s.outBuf, func(fi FileInfo) { mf.Output = append(mf.Output, fi) })
	del := s.fileSeq(organizedBase+deletedTag, "Bundle", s.delBuf, func(fi FileInfo) { mf.Deleted = append(mf.Deleted, fi) })
	// The Patient first: the IG's block is the header, "that resource",
	// then the resources that reference it.
	order := types
	if i := slices.Index(types, "Patient"); i > 0 {
		order = append([]string{"Patient"}, slices.Delete(slices.Clone(types), i, i+1)...)
	}
	var header []byte
	var err error
	var deleted onceSet // Shared tombstones listed, by Type/id
	for _, p := range cohort {
		started := false
		for i, typ := range order {
			s.j.prog.typeIdx.Store(int32(i + 1))
			err = snap.ScanPatient(ctx, p.id, typ, s.sinceOf(p), s.until, func(e Entry) error {
				if keep, err := s.visit(ctx, e); !keep {
					return err // a resource _typeFilter leaves out starts no block
				}
				if e.Deleted && e.Shared && !deleted.first(e.Type+"/"+e.ID) {
					return nil // a deletion is listed once, not once per block
				}
				if !e.Deleted && !started {
					if err := out.startBlock(); err != nil {
						return err
					}
					header = appendBlockHeader(header[:0], "Patient", p.id)
					if err := out.write(header); err != nil {
						return err
					}
					started = true
				}
				return s.emit(ctx, snap, e, out, del, s.full || p.whole)
			})
			if err != nil {
				break
			}
		}
		if err == nil && started && s.prov != nil {
			err = s.prov.flush(ctx, snap, s, out)
		}
		out.endBlock()
		if err != nil {
			break
		}
	}
	return s.finishType(ctx, organizedBase, err, out, del)
}

// appendBlockHeader appends the Parameters line that starts a resource
// block of organizeOutputBy output.
func appendBlockHeader(dst []byte, typ, id string) []byte {
	dst = append(dst, `{"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":`...)
	dst = appendJSONString(dst, typ+"/"+id)
	return append(dst, `}}]}`...)
}
