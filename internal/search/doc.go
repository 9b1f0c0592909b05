// Package search evaluates the subset of FHIR R4 search
// (https://hl7.org/fhir/R4/search.html) that bulk exports filter with:
// the _typeFilter queries of the Bulk Data $export operation
// (https://hl7.org/fhir/uv/bulkdata/export.html#_typefilter-query-parameter),
// Type?name=value&..., each parsed once per kick-off ([SplitTypeFilter],
// [ParseQuery]) and then matched against every stored resource of its type
// during the export's scan ([Query.Match], [Filter]). The search
// parameters are the official R4 definitions compiled into element paths
// by internal/fhirdefs (fhirdefs.LookupSearchParam); no FHIRPath engine
// runs at export time. It is a leaf: stdlib, internal/fhir,
// internal/fhirdefs and internal/jsonobj.
//
// # Queries
//
// A _typeFilter value is split into queries at a comma followed by a
// resource type and '?' (the comma lists of Bulk Data 2.0,
// https://hl7.org/fhir/uv/bulkdata/STU2/export.html#_typefilter-query-parameter);
// any other comma, and an escaped one (\,), stays in its query. The part
// of a query after '?' is a query string, percent-decoded once more than
// the outer request did: %2C is a comma that separates values, %26 an '&'
// inside a value, '+' a space (but in a date value, a space where the time
// zone's sign belongs is the '+' of an unencoded offset). Parameters are
// ANDed, a repeated parameter too (date=ge2024&date=lt2025 is a range);
// the comma-separated values of one parameter are ORed. Values may use
// the search escapes \, \| \$ and \\
// (https://hl7.org/fhir/R4/search.html#escaping).
//
// # The supported subset
//
// Search parameters of type token, date, reference, string and uri,
// every type's own and the common _id, _lastUpdated, _tag, _profile,
// _security and _source:
//
//   - token: code, system|code, |code, system|; true or false for a
//     parameter on boolean elements; modifier :not.
//   - date: an optional prefix (eq ne gt lt ge le sa eb ap, eq when
//     none), then YYYY, YYYY-MM, YYYY-MM-DD, or a time to the minute, the
//     second or a fraction of it, with Z or ±hh:mm; a time without a zone
//     is read as UTC. A value stands for its implicit range at its
//     precision (fhir.DateRange): 2024-03 is all of March 2024.
//   - reference: id, Type/id, or an absolute http(s) URL (which also
//     stands for its trailing Type/id, versioned or not).
//   - string: matched case- and accent-insensitively on its prefix
//     ([Fold]); modifiers :exact (as written) and :contains (substring).
//   - uri: the exact string.
//   - :missing=true|false on every supported parameter.
//
// Refused, with an [*Error] that names the parameter (the caller answers
// 400, or exports the type unfiltered when the client asked for lenient
// handling: a superset, never a silent subset): unknown parameters;
// number, quantity, composite and special parameters and the few whose
// expression fhirdefs cannot compile (SearchParam.Unsupported); the
// result parameters (_sort, _count, _include, _revinclude, _elements,
// _summary, _total, _contained, _containedType, _format, _pretty, _type),
// which shape a search's answer and select nothing; _has, _filter, _query,
// _list, _text and _content; chains (subject.name) and type-restricted
// references (subject:Patient; write subject=Patient/id); every other
// modifier; empty values; malformed dates, tokens and references; and a
// query with no parameter. So that a client cannot make the scan's cost
// explode, a query is at most [MaxQueryBytes] long and has at most
// [MaxQueryValues] values.
//
// # Matching
//
// A resource of the query's type matches when every parameter has a
// value that matches, by the R4 rules of its type ([Query.Match] states
// them per type, with the choices the search page leaves open); queries
// for the same type are ORed, and a type without a query is not filtered
// ([Filter]). Matching reads the stored JSON bytes along the compiled
// paths and allocates nothing in the common cases.
//
// Most stored resources have no backslash (no escape), and ingest
// validated them as JSON: then every name is written as itself and a
// string ends at the next quote. Such a body is read fast: a query whose
// needed bytes (a token's code, a reference's id) are not in the text is
// rejected by a search for them; a path's first member is read where the
// text last names it, once a count of the brackets on the shorter side
// of that place (8 bytes at a time, jsonobj.PlainDepth) shows it is a
// member of the resource, so the members before it are not walked; and
// where that fails (a last naming nested or a value) the members are
// walked without checking the values skipped. Text the fast walk cannot
// read goes to the validating walk, which is the reference: a fuzz test
// holds the two to the same answers on valid JSON.
package search
