package search

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gofhir/fhirpath"
	"github.com/gofhir/fhirpath/types"

	"github.com/bulkstream/bulkstream/internal/fhir"
	"github.com/bulkstream/bulkstream/internal/fhirdefs"
	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// samplePath is the Synthea sample every differential test runs over.
const samplePath = "../../testdata/synthea-r4-100-patients.ndjson.gz"

// engineExceptions are the (type, parameter) pairs on which the FHIRPath
// engine is known to be wrong, so that the differential test does not
// compare them; each says why. Keep it narrow: an entry names one
// parameter of one type. None is needed with the sample as it is: the
// engine resolves choice elements without a model (by trying its list of
// type suffixes), which agrees with the generated per-type paths.
var engineExceptions = map[string]string{}

// stubResolver resolves a literal reference to a resource with only its
// type and id, which is all that "resolve() is T" looks at.
type stubResolver struct{}

func (stubResolver) Resolve(_ context.Context, ref string) ([]byte, error) {
	typ, id, ok := fhir.ParseReference([]byte(ref))
	if !ok {
		return nil, errors.New("not a literal reference")
	}
	return fmt.Appendf(nil, `{"resourceType":%q,"id":%q}`, typ, id), nil
}

// sampleByType reads the sample's resources, by type.
func sampleByType(t testing.TB) map[string][][]byte {
	t.Helper()
	f, err := os.Open(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][][]byte{}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		line := bytes.Clone(sc.Bytes())
		var r struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		out[r.ResourceType] = append(out[r.ResourceType], line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// key is the form in which the test compares one value: objects as
// canonical JSON (encoding/json re-encodes them with sorted keys), date
// and time values as the µs range they cover (fhir.DateRange: the engine
// renders time zones its own way), other primitives as their text.
func key(raw []byte) string {
	switch raw[0] {
	case '{':
		var v any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return "bad:" + string(raw)
		}
		b, _ := json.Marshal(v)
		return "o:" + string(b)
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "bad:" + string(raw)
		}
		return textKey(s)
	default: // numbers, booleans
		return "p:" + string(raw)
	}
}

func textKey(s string) string {
	if lo, hi, ok := fhir.DateRange(s); ok {
		return "d:" + strconv.FormatInt(lo, 10) + "," + strconv.FormatInt(hi, 10)
	}
	return "p:" + s
}

// engineKey is key for a value of the engine.
func engineKey(v types.Value) string {
	switch x := v.(type) {
	case *types.ObjectValue:
		return key(x.Data())
	case types.String:
		return textKey(x.Value())
	default: // Boolean, Integer, Decimal, Date, DateTime, Time
		return textKey(v.String())
	}
}

// ours returns the keys of the values the compiled paths of p reach in
// body, sorted and deduplicated (a FHIRPath union is a set).
func ours(t *testing.T, body []byte, p *fhirdefs.SearchParam) []string {
	var out []string
	for i := range p.Paths {
		if err := eachValue(body, &p.Paths[i], func(v []byte) bool {
			out = append(out, key(v))
			return true
		}); err != nil {
			t.Fatalf("eachValue: %v", err)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// theirs returns the keys of the values expression gives on body.
func theirs(expr *fhirpath.Expression, body []byte) ([]string, error) {
	col, err := expr.EvaluateWithOptions(body, fhirpath.WithResolver(stubResolver{}), fhirpath.WithTimeout(0))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range col {
		out = append(out, engineKey(v))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// branchesOn returns the branches of expression ("|" union) that start
// with typ, Resource or DomainResource, or with an element name, so that
// the engine need not evaluate, on every resource, the branches of the
// other types a shared expression names (on which it would find
// nothing). It splits on the '|' outside parentheses and quotes.
func branchesOn(typ, expression string) string {
	var keep []string
	depth, start, quoted := 0, 0, false
	add := func(b string) {
		b = strings.TrimSpace(b)
		name := strings.TrimLeft(b, "(")
		for _, prefix := range []string{typ + ".", "Resource.", "DomainResource."} {
			if strings.HasPrefix(name, prefix) {
				keep = append(keep, b)
				return
			}
		}
		if name != "" && 'a' <= name[0] && name[0] <= 'z' {
			keep = append(keep, b)
		}
	}
	for i := 0; i < len(expression); i++ {
		switch c := expression[i]; {
		case quoted && c == '\\':
			i++
		case c == '\'':
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '|' && depth == 0:
			add(expression[start:i])
			start = i + 1
		}
	}
	add(expression[start:])
	if len(keep) == 0 {
		return expression // let the engine find nothing
	}
	return strings.Join(keep, " | ")
}

// firstSteps returns the element names that the branches of src (from
// branchesOn) start with after the type name: "Observation.code.coding |
// (Observation.value.ofType(string))" gives code and value. ok is false
// when a branch is not of that form.
func firstSteps(typ, src string) (names []string, ok bool) {
	for b := range strings.SplitSeq(src, " | ") {
		b = strings.TrimLeft(strings.TrimSpace(b), "(")
		for _, prefix := range []string{typ + ".", "Resource.", "DomainResource."} {
			b = strings.TrimPrefix(b, prefix)
		}
		n := 0
		for n < len(b) && ('a' <= b[n] && b[n] <= 'z' || 'A' <= b[n] && b[n] <= 'Z' || '0' <= b[n] && b[n] <= '9') {
			n++
		}
		if n == 0 || 'a' > b[0] || b[0] > 'z' {
			return nil, false
		}
		names = append(names, b[:n])
	}
	return names, true
}

// trim returns body with only resourceType and the top-level members
// whose names start with one of names: all that a FHIRPath navigation
// from the root through those names reads (a choice element's typed
// names, valueQuantity for value, start with its name). The engine looks
// for a missing element under every choice type suffix it knows, each a
// scan of the object, which on whole resources makes the test take
// minutes; on the trimmed body it is quick, and the same bodies recur.
func trim(body []byte, names []string) []byte {
	out := []byte{'{'}
	jsonobj.Each(body, func(k string, ks, _, ve int) bool {
		keep := k == "resourceType"
		for _, n := range names {
			keep = keep || strings.HasPrefix(k, n)
		}
		if keep {
			if len(out) > 1 {
				out = append(out, ',')
			}
			out = append(out, body[ks:ve]...)
		}
		return true
	})
	return append(out, '}')
}

// TestFHIRPathDifferential runs every compiled search parameter of every
// type in the Synthea sample over each of its resources, with eachValue
// on the generated paths and with a FHIRPath engine on the branches of
// the parameter's expression, as the definitions state it, that are on
// the resource's type (branchesOn), and wants the same values from both.
func TestFHIRPathDifferential(t *testing.T) {
	byType := sampleByType(t)
	compiled := map[string]*fhirpath.Expression{}
	var pairs, nonEmpty, compared, skipped, engineRuns int
	var failures []string
	types := make([]string, 0, len(byType))
	for typ := range byType {
		types = append(types, typ)
	}
	slices.Sort(types)
	for _, typ := range types {
		for i := range fhirdefs.SearchParams(typ) {
			p := &fhirdefs.SearchParams(typ)[i]
			if p.Unsupported != "" {
				continue
			}
			pairs++
			if why, ok := engineExceptions[typ+"."+p.Code]; ok {
				t.Logf("%s %s not compared: %s", typ, p.Code, why)
				skipped++
				continue
			}
			src := branchesOn(typ, p.Expression)
			expr := compiled[src]
			if expr == nil {
				var err error
				if expr, err = fhirpath.Compile(src); err != nil {
					t.Errorf("%s %s: the engine cannot compile %s: %v", typ, p.Code, src, err)
					continue
				}
				compiled[src] = expr
			}
			names, trimmed := firstSteps(typ, src)
			memo := map[string][]string{} // the engine's answers by trimmed body
			seen, bad := false, 0
			for _, body := range byType[typ] {
				in := body
				if trimmed {
					in = trim(body, names)
				}
				want, done := memo[string(in)]
				if !done {
					var err error
					if want, err = theirs(expr, in); err != nil {
						t.Fatalf("%s %s: engine: %v", typ, p.Code, err)
					}
					memo[string(in)] = want
					engineRuns++
				}
				got := ours(t, body, p)
				compared++
				if len(want) > 0 || len(got) > 0 {
					seen = true
				}
				if !slices.Equal(got, want) {
					if bad++; bad <= 2 {
						failures = append(failures, fmt.Sprintf("%s %s (%s) on %.300s:\n  paths:  %q\n  engine: %q", typ, p.Code, p.Expression, body, got, want))
					} else if bad == 3 {
						failures = append(failures, fmt.Sprintf("%s %s: more resources differ", typ, p.Code))
					}
				}
			}
			if seen {
				nonEmpty++
			}
		}
	}
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d (type, parameter) pairs, %d with values in the sample, %d not compared (engineExceptions); %d comparisons, %d engine evaluations",
		pairs, nonEmpty, skipped, compared, engineRuns)
	// The sample must exercise the comparison: its 19 types have many
	// parameters with values.
	if nonEmpty < 150 {
		t.Errorf("only %d (type, parameter) pairs have values in the sample; the test compares too little", nonEmpty)
	}
}
