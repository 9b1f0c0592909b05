package fhirdefs

// SearchParam is one FHIR R4 search parameter as it applies to one
// resource type (https://hl7.org/fhir/R4/searchparameter-registry.html),
// compiled from its FHIRPath expression by gen into element paths that
// can be read from a resource's JSON without a FHIRPath engine.
type SearchParam struct {
	// Code is the name used in a query ("category", "_lastUpdated").
	Code string
	// Type is the search parameter type: "token", "date", "reference",
	// "string", "uri", "number", "quantity", "composite" or "special".
	Type string
	// Expression is the parameter's FHIRPath expression as the definition
	// states it (every base's branches, "|"-joined).
	Expression string
	// Paths are the branches of Expression that apply to the type, one
	// per concrete element type (a choice element value[x] gives one path
	// per type it may have). A resource has a value for the parameter at
	// each place a path reaches. Empty when Unsupported is set.
	Paths []SearchPath
	// Unsupported says why the parameter cannot be evaluated (an
	// expression gen cannot compile, or a parameter type bulkstream does
	// not evaluate); "" when it can.
	Unsupported string
}

// SearchPath is one compiled branch of a search parameter's expression.
type SearchPath struct {
	// Steps are JSON member names from the resource's root, in order; at
	// every step the value may be one value or an array of them (each
	// element is followed).
	Steps []PathStep
	// Type is the FHIR data type of the values the path reaches
	// ("CodeableConcept", "Coding", "Identifier", "code", "boolean",
	// "string", "HumanName", "Address", "ContactPoint", "date",
	// "dateTime", "instant", "Period", "Timing", "Reference", "canonical",
	// "uri", ...), from the resource's StructureDefinition.
	Type string
	// Targets, for a Reference path, are the resource types the reference
	// must be to (from a .where(resolve() is T) filter); empty: any.
	Targets []string
}

// PathStep is one step of a SearchPath.
type PathStep struct {
	// Name is the JSON member name (a choice element's concrete name,
	// valueQuantity, never value[x]).
	Name string
	// Where, when not nil, keeps only the values (objects) of this step
	// whose member Where.Field is the string Where.Value (a
	// .where(field='literal') filter).
	Where *WhereEq
}

// WhereEq is a .where(Field = 'Value') filter on a step's values.
type WhereEq struct {
	Field string
	Value string
}

// SearchParams returns the search parameters of resource type typ,
// sorted by Code: its own and those defined on Resource and
// DomainResource that apply to every type (_id, _lastUpdated, _tag,
// _profile, _security, ...), supported or not. The slice and its
// contents are shared: callers must not modify them.
func SearchParams(typ string) []SearchParam {
	return searchParams[typ]
}

// LookupSearchParam returns the search parameter code of resource type
// typ; ok is false when the type has no such parameter.
func LookupSearchParam(typ, code string) (p *SearchParam, ok bool) {
	ps := searchParams[typ]
	// Binary search: ps is sorted by Code.
	lo, hi := 0, len(ps)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ps[m].Code < code {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(ps) && ps[lo].Code == code {
		return &ps[lo], true
	}
	return nil, false
}
