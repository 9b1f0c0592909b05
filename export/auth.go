package export

import (
	"errors"
	"slices"
)

// This file holds what authorization adds to jobs: a job belongs to the
// client that started it (Request.Client, persisted with the job), a
// client may export only the types its token grants, and a client has its
// own concurrent-job quota. httpapi authenticates; export enforces.

// ownedBy reports whether client started j. Ownership is exact: with auth
// off every caller and every job has client "", and a job started by an
// authenticated client is never visible to a caller without one (or the
// other way round) after the server is restarted with auth turned on or
// off. Manager.mu is held.
func (j *job) ownedBy(client string) bool { return j.rec.Request.Client == client }

// restrictTypes applies a client's allowed types (nil: every type) to a
// parsed request: a _type naming another type is a *ForbiddenError, and
// a request without _type exports the allowed types only. A lenient
// kick-off does not skip forbidden types: leniency is for what the server
// does not support, not for what the client may not see.
func restrictTypes(req *Request, allowed []string) error {
	if allowed == nil {
		return nil
	}
	// A Group-level export reads the Group (the IG, Bulk Data 3.0: a
	// server SHOULD require permission to read it), and associated data
	// is Provenance.
	var needs []string
	if req.Level == LevelGroup && !slices.Contains(allowed, "Group") {
		needs = append(needs, "Group")
	}
	if req.Provenance != ProvenanceNone && !slices.Contains(allowed, "Provenance") {
		needs = append(needs, "Provenance")
	}
	if needs != nil {
		return &ForbiddenError{Types: needs}
	}
	if len(req.Types) == 0 {
		// ParseRequest never leaves Types empty when _type was given, so
		// this is "no _type": every type the client may read.
		req.Types = slices.Clone(allowed)
		return nil
	}
	var denied []string
	for _, t := range req.Types {
		if !slices.Contains(allowed, t) {
			denied = append(denied, t)
		}
	}
	if denied != nil {
		return &ForbiddenError{Types: denied}
	}
	return nil
}

// countThrottled counts a kick-off refused with a *TooManyJobsError, by
// reason.
func (m *Manager) countThrottled(err error) {
	var tmj *TooManyJobsError
	if errors.As(err, &tmj) {
		m.met.throttled.WithLabelValues(tmj.Reason).Inc()
	}
}
