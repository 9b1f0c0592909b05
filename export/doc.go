// Package export runs FHIR Bulk Data system-level export jobs over the
// index: kick-off validation, persisted jobs, a bounded worker pool that
// waits for ingest to catch up, scans a snapshot per type into split NDJSON
// files, writes deleted-resource Bundles and the manifest, and expires,
// cancels and resumes jobs.
//
// Guarantee: every exported resource has _since < meta.lastUpdated <=
// transactionTime (and <= _until); a client that chains exports with
// _since = the previous transactionTime sees every change exactly once.
package export
