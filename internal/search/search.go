package search

import (
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// Query is one parsed _typeFilter query, Type?name=value&...: a resource
// of Type matches when it matches every one of Params (AND).
type Query struct {
	// Type is the resource type before the '?'.
	Type string
	// Params are the query's parameters in the order given.
	Params []Param
	// Raw is the query as given (after the outer query string's
	// decoding), for messages.
	Raw string

	// plan is Match's fast walk of the query, worked out by ParseQuery;
	// a Query made otherwise gets one at each Match.
	plan *fastPlan
}

// Param is one name=value of a query: a resource matches when one of
// Values matches (OR), or, for :missing, when it has (Missing false) or
// lacks (Missing true) a value for the parameter.
type Param struct {
	// Name is the parameter as written, modifier included
	// ("category", "code:not").
	Name string
	// Def is the search parameter's definition for the query's type.
	Def *fhirdefs.SearchParam
	// Modifier is "" or one of "not" (token), "missing" (any type),
	// "exact" and "contains" (string).
	Modifier string
	// Missing is the value of a :missing modifier.
	Missing bool
	// Values are the comma-separated values (escapes decoded), ORed.
	// Empty for :missing.
	Values []Value
}

// Value is one parsed value of a Param; which fields are set depends on
// Def.Type.
type Value struct {
	// Raw is the value as given (after decoding), for messages.
	Raw string

	// token: "code", "system|code", "|code" (HasSystem, System ""),
	// "system|" (HasSystem, Code ""). Booleans are tokens "true"/"false".
	System, Code string
	HasSystem    bool

	// date: Prefix is one of eq ne gt lt ge le sa eb ap ("eq" when none
	// was written); Lo and Hi are the value's implicit range, the first
	// and last µs it covers (fhir.DateRange).
	Prefix string
	Lo, Hi int64

	// reference: RefType and RefID for "Type/id" (RefType "" for a bare
	// "id"); URL for an absolute URL (then RefType/RefID are its last
	// Type/id segments when it has them).
	RefType, RefID, URL string

	// string and uri: Text; for a string without :exact it is already
	// normalized (Fold) for a case- and accent-insensitive match.
	Text string
}
