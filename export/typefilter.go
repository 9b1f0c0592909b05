package export

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/search"
)

// This file is _typeFilter
// (https://hl7.org/fhir/uv/bulkdata/export.html#_typefilter-query-parameter):
// collecting the queries at kick-off, and testing each scanned resource
// against its type's queries during the scan.

// paramTypeFilter is the kick-off parameter.
const paramTypeFilter = "_typeFilter"

// MaxTypeFilters bounds the _typeFilter queries of one kick-off (every
// resource of a filtered type is tested against each of its type's).
const MaxTypeFilters = 64

// typeFilter collects the queries of one _typeFilter value: a query
// string's repeated parameter or one POST valueString. A value may join
// several queries with commas (Bulk Data 2.0); search.SplitTypeFilter
// splits it only where a comma is followed by a resource type and '?'.
//
// A query this server cannot evaluate (unknown or unsupported parameter,
// modifier, result parameter, malformed value) refuses the kick-off; when
// lenient, its type is exported unfiltered (every query of that type is
// dropped, so the export is a superset of what was asked, never a silent
// subset) and the query is reported in Ignored.
func (p *requestParser) typeFilter(prm Param) error {
	queries := search.SplitTypeFilter(prm.Value)
	if len(queries) == 0 {
		return p.ignore(&RequestError{Param: paramTypeFilter, Code: codeValue,
			Diagnostics: "_typeFilter is empty: it must be a FHIR search query, Type?name=value"})
	}
	for _, q := range queries {
		if p.filterEntries++; p.filterEntries > MaxTypeFilters {
			return &RequestError{Param: paramTypeFilter, Code: codeTooCostly, Diagnostics: fmt.Sprintf(
				"_typeFilter has more than %d queries (all _typeFilter parameters together); this server accepts at most %d",
				MaxTypeFilters, MaxTypeFilters)}
		}
		parsed, err := search.ParseQuery(q)
		if err != nil {
			typ, _, _ := strings.Cut(q, "?")
			diag := err.Error()
			if p.opts.Lenient && fhir.IsResourceType(typ) {
				diag += "; " + typ + " is exported without any _typeFilter"
				if p.unfiltered == nil {
					p.unfiltered = map[string]bool{}
				}
				p.unfiltered[typ] = true
			}
			if err := p.ignore(&RequestError{Param: paramTypeFilter, Code: codeNotSupported, Diagnostics: diag}); err != nil {
				return err
			}
			continue
		}
		if addOnce(&p.filterSet, q, &p.probes) {
			p.filters = append(p.filters, typedQuery{typ: parsed.Type, q: q})
		}
	}
	return nil
}

// typedQuery is a _typeFilter query and its type.
type typedQuery struct{ typ, q string }

// finishTypeFilters keeps the queries that apply: _type is applied first
// (a query for a type outside it has no effect), a Patient- or
// Group-level export has no resources of a type outside the patient
// compartment, and a type one of whose queries was ignored is exported
// whole.
func (p *requestParser) finishTypeFilters() {
	for _, f := range p.filters {
		switch {
		case p.unfiltered[f.typ]:
		case len(p.req.Types) > 0 && !slices.Contains(p.req.Types, f.typ):
		case p.opts.Level != LevelSystem && !fhirdefs.InPatientCompartment(f.typ):
		default:
			p.req.TypeFilters = append(p.req.TypeFilters, f.q)
		}
	}
}

// compileTypeFilters parses a request's queries into the scan's filter
// (nil when there are none). Kick-off accepted them, so an error means
// the job was stored by a version that understood more.
func compileTypeFilters(queries []string) (*search.Filter, error) {
	if len(queries) == 0 {
		return nil, nil
	}
	parsed := make([]search.Query, 0, len(queries))
	for _, q := range queries {
		pq, err := search.ParseQuery(q)
		if err != nil {
			return nil, fmt.Errorf("_typeFilter: %w", err)
		}
		parsed = append(parsed, pq)
	}
	return search.NewFilter(parsed), nil
}

// matches reports whether resource entry e passes _typeFilter: its type
// has no query, or it matches one. A stored body the matcher cannot read
// (never: ingest accepts only JSON objects) is kept, so that an export is
// never silently smaller than asked.
func (s *scan) matches(e Entry) bool {
	if s.filter == nil {
		return true
	}
	ok, err := s.filter.Match(e.Type, e.Resource)
	return ok || err != nil
}
