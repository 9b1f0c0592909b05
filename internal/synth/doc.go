// Package synth generates deterministic, realistic FHIR R4 data of any size
// for tests and benchmarks, by multiplying a sample (the Synthea NDJSON in
// testdata/) with fresh ids.
//
// A [Sample] is read once (plain or gzip NDJSON, one compact resource per
// line, as bulk exports and the Synthea sample are) and
// indexed: the byte offset of every occurrence of every resource id is
// recorded. A [Generator] then emits the sample Scale times: copy k (k = 0 ..
// Scale-1) of every resource, with every id of copy k replaced. Output is
// produced by splicing ids into the sample's bytes, so every other byte of a
// resource (key order, number literals, escapes) is kept exactly
// as in the sample; no JSON is ever decoded and re-encoded.
//
// # Ids
//
// Every copy, copy 0 included, gets fresh ids, so no generated id is an id of
// the sample itself. The new id of a sample id x in copy k under seed s is
// derived from h = SHA-256("bulkstream/synth/v1\x00" || s || k || x), where
// s and k are 8-byte big-endian integers:
//
//   - If x is a lower-case UUID (the Synthea case), the new id is the UUID
//     made of the first 16 bytes of h, with the version nibble set to 8
//     (RFC 9562 custom) and the RFC 9562 variant bits. Every occurrence of x
//     anywhere in the resources of the copy (the id, "Patient/x",
//     "urn:uuid:x", identifier values, fullUrls, ...) is replaced, so
//     references stay consistent within the copy. UUIDs that are not the id
//     of a sample resource are left as they are.
//   - Otherwise (ids such as the Synthea Group "MinutemanHealth") the new id
//     is x + "-" + the first 8 bytes of h in hex (x-0123456789abcdef), or
//     the UUID above when that would exceed FHIR's 64 characters. It replaces
//     the resource's own "id" and the id part of every "reference" value that
//     ends in "<Type>/x" for that resource's type.
//
// Contained resources ("#referral") and every other byte are untouched.
// New ids have the same length in every copy and under every seed, so the
// size of the output ([Generator.Size]) is known in advance.
//
// # Determinism
//
// The output of a Generator is a pure function of the sample bytes, Seed and
// Scale: the same three give byte-identical output, in sample order, copy
// after copy. [Generator.Changes] is a pure function of the same three and
// the number of events, and the first n events do not depend on how many
// are asked for.
package synth
