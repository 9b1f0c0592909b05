package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors. httpapi maps each to a status code and an
// OperationOutcome in one place.
var (
	// ErrNotFound: no such job, or it expired or was cancelled.
	ErrNotFound = errors.New("export: job not found")
	// ErrClosed: the manager is shutting down (503).
	ErrClosed = errors.New("export: manager closed")
	// ErrFileDamaged: a file of a completed job no longer matches the size
	// and digest recorded when it was written (truncated or changed on
	// disk); it is never served (500), and the job reports it.
	ErrFileDamaged = errors.New("export: file damaged on disk")
)

// Param is one kick-off parameter, from the query string (one per value,
// in order, comma lists not yet split) or from a Parameters body entry.
type Param struct {
	Name  string
	Value string
}

// Request is a validated kick-off, ready to run. It is persisted with the
// job, so its fields are plain data.
type Request struct {
	// Types to export, deduplicated, in request order; empty means every
	// type present in the snapshot.
	Types []string `json:"types,omitempty"`
	// Since and Until bound meta.lastUpdated: Since < t <= Until, in
	// commit-clock microseconds. HasSince says whether _since was given
	// (Since is 0 for a _since at or before the Unix epoch, which still
	// lists deletions); Until index.Unbounded means no _until.
	Since    uint64 `json:"since,omitempty"`
	HasSince bool   `json:"hasSince,omitempty"`
	Until    uint64 `json:"until"`
	// Elements is the parsed _elements: the top-level elements to keep,
	// for all types (Type "") or for one type. Empty means whole resources.
	Elements []Element `json:"elements,omitempty"`
	// OutputFormat is always "application/fhir+ndjson" once validated.
	OutputFormat string `json:"outputFormat"`
	// Lenient is Prefer: handling=lenient.
	Lenient bool `json:"lenient,omitempty"`
	// Ignored lists what a lenient kick-off skipped (one diagnostic per
	// ignored parameter or type); each becomes an OperationOutcome line
	// in the manifest's error file.
	Ignored []string `json:"ignored,omitempty"`
	// RequestURL is the raw kick-off URL, for the manifest's request.
	RequestURL string `json:"request"`
	// Client is the authenticated client id ("" when auth is off).
	Client string `json:"client,omitempty"`
	// MaxFinished is the client's cap on its own finished jobs, resolved
	// at kick-off (Kickoff.MaxFinished or Config.MaxFinishedJobsPerClient):
	// > 0 a cap, < 0 none, 0 (records written before it) the Config's.
	MaxFinished int `json:"maxFinished,omitempty"`

	// Level is where the kick-off was made: LevelSystem ([base]/$export),
	// LevelPatient ([base]/Patient/$export) or LevelGroup
	// ([base]/Group/[id]/$export, Group naming the id).
	Level Level  `json:"level,omitempty"`
	Group string `json:"group,omitempty"`
	// Patients narrows a Patient- or Group-level export to these patient
	// ids (the patient parameter's references, "Patient/" cut off),
	// deduplicated, in request order. Empty: every patient of the level.
	Patients []string `json:"patients,omitempty"`
	// OrganizeBy is organizeOutputBy: "" (files by resource type) or
	// "Patient" (files of whole patients' resource blocks).
	OrganizeBy string `json:"organizeOutputBy,omitempty"`
	// Provenance is includeAssociatedData: ProvenanceNone, or the least
	// restrictive of the values given (ProvenanceRelevant over
	// ProvenanceLatest).
	Provenance ProvenanceMode `json:"provenance,omitempty"`
	// TypeFilters are the _typeFilter queries that apply ("Type?search",
	// one query each, as given once decoded), deduplicated, in request
	// order: a resource of a type with queries is exported when it
	// matches one of them; a type with none is exported whole.
	TypeFilters []string `json:"typeFilters,omitempty"`
}

// Level is the level of an export (https://hl7.org/fhir/uv/bulkdata/export.html).
type Level string

// Export levels.
const (
	LevelSystem  Level = ""        // [base]/$export
	LevelPatient Level = "patient" // [base]/Patient/$export
	LevelGroup   Level = "group"   // [base]/Group/[id]/$export
)

// ProvenanceMode is what includeAssociatedData asked for.
type ProvenanceMode string

// includeAssociatedData values (the IG's include-associated-data codes).
const (
	ProvenanceNone ProvenanceMode = "" // _none, or not given
	// ProvenanceLatest (LatestProvenanceResources): for each exported
	// resource, the Provenance targeting it that changed last.
	ProvenanceLatest ProvenanceMode = "latest"
	// ProvenanceRelevant (RelevantProvenanceResources): every Provenance
	// targeting an exported resource.
	ProvenanceRelevant ProvenanceMode = "relevant"
)

// Element is one _elements entry: Name of a top-level element, for every
// type when Type is empty.
type Element struct {
	Type string `json:"type,omitempty"`
	Name string `json:"name"`
}

// RequestError is a kick-off the server refuses; httpapi answers 400 with
// an OperationOutcome carrying Code and Diagnostics.
type RequestError struct {
	Param       string // the offending parameter, if any
	Code        string // OperationOutcome issue code: "invalid", "not-supported", "value", "too-costly"
	Diagnostics string
}

func (e *RequestError) Error() string { return "export: " + e.Diagnostics }

// TooManyJobsError is returned by Kickoff past a concurrent-job limit
// (429 with Retry-After). Reason says which: ReasonServerLimit or
// ReasonClientQuota; it is also the reason label of
// bulkstream_export_kickoffs_throttled_total.
type TooManyJobsError struct {
	RetryAfter time.Duration
	Reason     string
	// Limit is the limit that was reached (Config.MaxActiveJobs or the
	// client's Kickoff.MaxJobs).
	Limit int
}

// Reasons of a TooManyJobsError.
const (
	// ReasonServerLimit: queued plus running jobs reached
	// Config.MaxActiveJobs.
	ReasonServerLimit = "server_limit"
	// ReasonClientQuota: the client's own queued plus running jobs
	// reached its Kickoff.MaxJobs.
	ReasonClientQuota = "client_quota"
)

func (e *TooManyJobsError) Error() string {
	if e.Reason == ReasonClientQuota {
		return "export: the client's concurrent export job quota is used up"
	}
	return "export: too many concurrent export jobs"
}

// ForbiddenError is a kick-off whose _type names resource types outside
// Kickoff.AllowedTypes (the client's granted scopes): 403.
type ForbiddenError struct {
	Types []string // the requested types not allowed, in request order
}

func (e *ForbiddenError) Error() string {
	return "export: the access token does not grant _type " + strings.Join(e.Types, ",")
}

// NotFoundError is a kick-off naming a resource the server does not hold
// (Group/[id]/$export of an unknown or deleted Group): 404.
type NotFoundError struct {
	Type, ID string
}

func (e *NotFoundError) Error() string { return "export: " + e.Type + "/" + e.ID + " not found" }

// UnavailableError is returned when the server cannot take a job now (low
// disk, shutting down, replica behind): 503 with Retry-After.
type UnavailableError struct {
	Reason     string
	RetryAfter time.Duration
}

func (e *UnavailableError) Error() string { return "export: unavailable: " + e.Reason }

// State of a job.
type State string

// Job states. Expired and cancelled jobs are deleted, so Status never
// returns them: it returns ErrNotFound.
const (
	Queued    State = "queued"
	Running   State = "running"
	Completed State = "completed"
	Failed    State = "failed"
)

// Status is what a status poll sees.
type Status struct {
	State State
	// Progress is the X-Progress text while queued or running.
	Progress string
	// RetryAfter is the suggested polling interval while queued or running.
	RetryAfter time.Duration
	// Manifest is set when Completed.
	Manifest *Manifest
	// Expires is when a completed job's files and record are removed.
	Expires time.Time
	// Error is set when Failed: what went wrong, for an OperationOutcome.
	Error string
}

// Manifest is the completion manifest, with file names relative to the
// job; httpapi turns them into absolute URLs.
type Manifest struct {
	TransactionTime     string `json:"transactionTime"` // index.FormatInstant of the snapshot's clock
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	// OutputOrganizedBy echoes organizeOutputBy; its files' items then
	// carry no type (Bulk Data 3.0).
	OutputOrganizedBy string     `json:"outputOrganizedBy,omitempty"`
	Output            []FileInfo `json:"output"`
	Deleted           []FileInfo `json:"deleted,omitempty"`
	Error             []FileInfo `json:"error"`
}

// FileInfo is one file of a manifest.
type FileInfo struct {
	Type  string `json:"type"`  // resource type; "Bundle" for deleted, "OperationOutcome" for error
	Name  string `json:"name"`  // file name within the job, e.g. "Patient-1.ndjson"
	Count int64  `json:"count"` // lines (resources) in the file, exact
	Bytes int64  `json:"bytes"`
	// SHA256 is the digest of the file's bytes, computed while it was
	// written (zero in records written before digests: such files are
	// served unchecked). It is kept in the job record; the manifest
	// clients see does not show it (the download's ETag does).
	SHA256 Digest `json:"sha256,omitzero"`

	// stamp is the file's identity on disk when its bytes were last known
	// to match SHA256 (in memory only; see OpenFile).
	stamp FileStamp
}

// Digest is a SHA-256, as lower-case hex in JSON.
type Digest [sha256.Size]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText writes the digest as hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a hex digest.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("export: digest %q: want %d hex digits", b, 2*sha256.Size)
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// File is an open output file for a download.
type File interface {
	io.ReadSeekCloser
	// Size and ModTime for http.ServeContent.
	Size() int64
	ModTime() time.Time
	// Digest is the SHA-256 of the file's bytes recorded when the file was
	// written, lower-case hex; httpapi serves it as the strong ETag. OpenFile
	// never returns a file whose bytes no longer match it (ErrFileDamaged).
	Digest() string
}

// Head reports the stream's last sequence, so a job can wait until ingest
// has applied everything published before its kick-off. cmd wires it to
// ingest; export never imports NATS.
type Head interface {
	Head(ctx context.Context) (uint64, error)
}

// JobStore persists job records; *index.Index satisfies it.
type JobStore interface {
	PutJob(id string, record []byte) error
	GetJob(id string) ([]byte, error) // index.ErrNotFound when missing
	DeleteJob(id string) error
	Jobs(fn func(id string, record []byte) error) error
}

// SharedJobStore is a JobStore several replicas share (jsstore.JobStore,
// on a JetStream KV bucket). A Manager whose JobStore is one runs in
// cluster mode (see the package doc): it changes a record only by
// compare-and-set on the revision it last saw, and learns of every other
// replica's changes through Watch.
type SharedJobStore interface {
	JobStore
	// Update writes id's record if the store still holds revision rev of
	// it (rev 0: only if id has no record) and returns the new revision.
	// When another write or a deletion came first it returns an error
	// wrapping ErrConflict and writes nothing.
	Update(id string, record []byte, rev uint64) (uint64, error)
	// Lookup returns id's record as the store holds it now, and its
	// revision; index.ErrNotFound when there is none.
	Lookup(id string) (record []byte, rev uint64, err error)
	// Watch calls fn with every record the store holds, then, once
	// caught up, with ("", nil, 0), then with every later change in the
	// order the store applied them (record nil: id was deleted), until
	// ctx ends or the watch fails. fn runs on Watch's goroutine, one call
	// at a time. Watch returns ctx's error, or why the watch failed.
	Watch(ctx context.Context, fn func(id string, record []byte, rev uint64)) error
}

// ErrConflict is SharedJobStore.Update's answer when the record is not at
// the revision the caller saw: another replica wrote or deleted it first.
var ErrConflict = errors.New("export: job record changed by another replica")

// Kickoff is a kick-off as httpapi received it: the parameters, in order,
// and what the headers said.
type Kickoff struct {
	Params     []Param
	Lenient    bool   // Prefer: handling=lenient
	RequestURL string // the raw request URL, absolute, for the manifest
	Client     string // authenticated client id, "" when auth is off
	// AllowedTypes are the resource types the client may export (its
	// token's scopes); nil means every type. A _type naming any other
	// type is a *ForbiddenError; without _type only these are exported.
	AllowedTypes []string
	// MaxJobs is the client's own quota of queued plus running jobs, on
	// top of Config.MaxActiveJobs; 0 means none.
	MaxJobs int
	// MaxFinished caps the client's own completed and failed jobs kept
	// for download: past it the client's oldest finished job is removed.
	// 0 means Config.MaxFinishedJobsPerClient; negative, no per-client cap.
	MaxFinished int
	// Level is the route the kick-off came in on, and Group the id of
	// Group/[id]/$export (LevelGroup only).
	Level Level
	Group string
}

// ParseOptions tells ParseRequest what it cannot know by itself.
type ParseOptions struct {
	// Now is max(wall clock, commit clock) in µs: _since and _until after
	// it are "in the future".
	Now uint64
	// Lenient skips what can safely be ignored instead of failing.
	Lenient bool
	// Level is the kick-off's level: the patient parameter is refused at
	// LevelSystem and accepted (POST) at the others.
	Level Level
}
