package search

// Filter is the _typeFilter of one export
// (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#_typefilter-experimental-query-parameter):
// its queries grouped by resource type. A resource of a type with no
// query passes; one of a type with queries passes when one of them
// matches it (OR). A nil *Filter passes everything. A Filter is read-only
// once built and safe for concurrent use.
type Filter struct {
	byType map[string][]Query
}

// NewFilter groups queries by their Type, keeping their order within a
// type. The queries are copied (their Params and Values are shared and
// must not be modified afterwards).
func NewFilter(queries []Query) *Filter {
	f := &Filter{byType: make(map[string][]Query)}
	for _, q := range queries {
		f.byType[q.Type] = append(f.byType[q.Type], q)
	}
	return f
}

// Filters reports whether resources of type typ are filtered: whether
// some query is for typ.
func (f *Filter) Filters(typ string) bool {
	if f == nil {
		return false
	}
	return len(f.byType[typ]) > 0
}

// Match reports whether the resource body of type typ passes f: true when
// no query is for typ, else whether one of typ's queries matches
// (Query.Match). The error is Query.Match's: body is not a JSON object, or
// a query has a parameter Match does not evaluate.
func (f *Filter) Match(typ string, body []byte) (bool, error) {
	if f == nil {
		return true, nil
	}
	qs := f.byType[typ]
	if len(qs) == 0 {
		return true, nil
	}
	for i := range qs {
		ok, err := qs[i].Match(body)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}
