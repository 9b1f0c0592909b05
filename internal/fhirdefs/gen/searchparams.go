package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// fhirTypeExt is the extension that gives the FHIR type of an element
// whose type code is a FHIRPath system type (Resource.id, Element.id,
// Extension.url, a primitive's value).
const fhirTypeExt = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

// evaluated are the search parameter types bulkstream evaluates; a
// parameter of any other type is in the table as Unsupported.
var evaluated = map[string]bool{"token": true, "date": true, "reference": true, "string": true, "uri": true}

// allTypes lists the parameters that apply to every resource type but are
// not searches on the resource's content, so search-parameters.json does
// not define them (https://hl7.org/fhir/R4/search.html#all): they are in
// the table as Unsupported, so that a query naming one is told so.
var allTypes = []spParam{
	{Code: "_has", Type: "special", unsupported: "reverse chaining is not supported"},
	{Code: "_list", Type: "special", unsupported: "a search on a List's members is not supported"},
	{Code: "_type", Type: "special", unsupported: "a search across types is not supported (use the export's _type)"},
}

// spParam is one entry of the table being built.
type spParam struct {
	Code, Type, Expression string
	paths                  []spPath
	unsupported            string
}

// spPath is a SearchPath being built.
type spPath struct {
	steps   []spStep
	typ     string
	targets []string
}

type spStep struct {
	name         string
	field, value string // a where(field='value') filter, when field != ""
}

// element is what the generator knows of one ElementDefinition.
type element struct {
	types      []string // type codes (a system type's FHIR type from fhirTypeExt)
	contentRef string   // the path of the element whose definition it reuses ("Questionnaire.item")
}

// model is the element definitions of every core type and resource, by
// type name and then element path ("Observation.effective[x]").
type model map[string]map[string]element

// searchParamsTable is the generated table: for each concrete R4
// resource type, its parameters sorted by code.
type searchParamsTable map[string][]spParam

// genSearchParams writes the searchParams table from
// search-parameters.json (a Bundle of SearchParameters) and
// profiles-resources.json and profiles-types.json (StructureDefinitions,
// for the types of the elements that paths go through and end at). Every
// concrete R4 resource type gets the parameters whose base is the type,
// Resource or DomainResource (the latter when the type specializes it),
// and the allTypes ones. A parameter is compiled from the branches of its
// expression ("|" union) on its type (see compileBranch); it is
// Unsupported when its type is not evaluated, it has no expression, or a
// branch on the type does not compile.
func genSearchParams(src [][]byte) ([]byte, error) {
	tab, err := searchParams(src[0], src[1], src[2])
	if err != nil {
		return nil, err
	}
	types := make([]string, 0, len(tab))
	for t := range tab {
		types = append(types, t)
	}
	slices.Sort(types)
	var compiled, uncompiled, other, defs int
	var uncompiledList []string
	for _, t := range types {
		for _, p := range tab[t] {
			defs++
			switch {
			case p.unsupported == "":
				compiled++
			case evaluated[p.Type] && p.Expression != "":
				uncompiled++
				uncompiledList = append(uncompiledList, t+"."+p.Code)
			default:
				other++
			}
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `// searchParams is every FHIR R4 search parameter of each resource type
// (see SearchParams): %d (type, parameter) pairs, of which %d are compiled
// into paths, %d are of a type bulkstream evaluates (token, date,
// reference, string, uri) but have an expression gen cannot compile, and
// %d are of another type or have no expression. The ones not compiled:
//
`, defs, compiled, uncompiled, other)
	for _, line := range wrap(strings.Join(uncompiledList, ", "), 75) {
		fmt.Fprintf(&b, "//\t%s\n", line)
	}
	b.WriteString("var searchParams = map[string][]SearchParam{\n")
	for _, t := range types {
		fmt.Fprintf(&b, "\t%q: {\n", t)
		for _, p := range tab[t] {
			fmt.Fprintf(&b, "\t\t{Code: %q, Type: %q", p.Code, p.Type)
			if p.Expression != "" {
				fmt.Fprintf(&b, ", Expression: %q", p.Expression)
			}
			if p.unsupported != "" {
				fmt.Fprintf(&b, ", Unsupported: %q},\n", p.unsupported)
				continue
			}
			b.WriteString(", Paths: []SearchPath{")
			for i, sp := range p.paths {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("{Steps: []PathStep{")
				for j, st := range sp.steps {
					if j > 0 {
						b.WriteString(", ")
					}
					fmt.Fprintf(&b, "{Name: %q", st.name)
					if st.field != "" {
						fmt.Fprintf(&b, ", Where: &WhereEq{Field: %q, Value: %q}", st.field, st.value)
					}
					b.WriteString("}")
				}
				fmt.Fprintf(&b, "}, Type: %q", sp.typ)
				if len(sp.targets) > 0 {
					q := make([]string, len(sp.targets))
					for k, t := range sp.targets {
						q[k] = fmt.Sprintf("%q", t)
					}
					fmt.Fprintf(&b, ", Targets: []string{%s}", strings.Join(q, ", "))
				}
				b.WriteString("}")
			}
			b.WriteString("}},\n")
		}
		b.WriteString("\t},\n")
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// wrap splits a comma-separated list into lines of at most width bytes.
func wrap(s string, width int) []string {
	var lines []string
	var cur string
	for w := range strings.SplitSeq(s, " ") {
		if cur != "" && len(cur)+1+len(w) > width {
			lines = append(lines, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}

// searchParams builds the table.
func searchParams(params, resources, types []byte) (searchParamsTable, error) {
	m := model{}
	concrete := map[string]bool{} // the concrete R4 resource types
	domain := map[string]bool{}   // those that specialize DomainResource
	for _, f := range []struct {
		name string
		b    []byte
	}{{"profiles-resources.json", resources}, {"profiles-types.json", types}} {
		if err := m.read(f.name, f.b, concrete, domain); err != nil {
			return nil, err
		}
	}
	if len(concrete) < 100 {
		return nil, fmt.Errorf("profiles-resources.json: only %d resource types", len(concrete))
	}
	for _, t := range []string{"Resource", "DomainResource", "Reference", "CodeableConcept", "Coding"} {
		if m[t] == nil {
			return nil, fmt.Errorf("no StructureDefinition of %s", t)
		}
	}

	defs, err := searchParameters(params)
	if err != nil {
		return nil, err
	}
	tab := searchParamsTable{}
	seen := map[string]string{} // type + " " + code → SearchParameter id
	add := func(typ string, p spParam, id string) error {
		k := typ + " " + p.Code
		if prev, dup := seen[k]; dup {
			return fmt.Errorf("search-parameters.json: %s has parameter %s twice (%s and %s)", typ, p.Code, prev, id)
		}
		seen[k] = id
		tab[typ] = append(tab[typ], p)
		return nil
	}
	for t := range concrete {
		tab[t] = nil
		for _, p := range allTypes {
			if err := add(t, p, "(all types)"); err != nil {
				return nil, err
			}
		}
	}
	for _, sp := range defs {
		if !isCode(sp.Code) || sp.Type == "" {
			return nil, fmt.Errorf("search-parameters.json: SearchParameter %s: code %q, type %q", sp.ID, sp.Code, sp.Type)
		}
		for _, base := range sp.Base {
			var on []string
			switch {
			case base == "Resource":
				for t := range concrete {
					on = append(on, t)
				}
			case base == "DomainResource":
				for t := range domain {
					on = append(on, t)
				}
			case concrete[base]:
				on = []string{base}
			default:
				continue // not an R4 resource type
			}
			slices.Sort(on)
			for _, t := range on {
				p := spParam{Code: sp.Code, Type: sp.Type, Expression: sp.Expression}
				switch {
				case !evaluated[sp.Type]:
					p.unsupported = sp.Type + " parameters are not supported"
				case sp.Expression == "":
					p.unsupported = "no FHIRPath expression"
				default:
					paths, err := m.compile(t, base, sp.Expression, len(sp.Base) == 1)
					if err != nil {
						p.unsupported = err.Error()
					} else {
						p.paths = paths
					}
				}
				if err := add(t, p, sp.ID); err != nil {
					return nil, err
				}
			}
		}
	}
	for t, ps := range tab {
		slices.SortFunc(ps, func(a, b spParam) int { return strings.Compare(a.Code, b.Code) })
		tab[t] = ps
	}
	return tab, nil
}

// isCode reports whether s can be a search parameter code.
func isCode(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// read adds the core StructureDefinitions of a Bundle to m, and the
// concrete R4 resource types to concrete (and domain, those that
// specialize DomainResource).
func (m model) read(name string, bundle []byte, concrete, domain map[string]bool) error {
	var bd struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(bundle, &bd); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if bd.ResourceType != "Bundle" {
		return fmt.Errorf("%s: resourceType %q, want Bundle", name, bd.ResourceType)
	}
	for i, e := range bd.Entry {
		var rt struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal(e.Resource, &rt); err != nil {
			return fmt.Errorf("%s: entry %d: %w", name, i, err)
		}
		if rt.ResourceType != "StructureDefinition" {
			continue
		}
		var sd struct {
			ResourceType   string `json:"resourceType"`
			URL            string `json:"url"`
			Type           string `json:"type"`
			Kind           string `json:"kind"`
			Abstract       bool   `json:"abstract"`
			Derivation     string `json:"derivation"`
			BaseDefinition string `json:"baseDefinition"`
			FHIRVersion    string `json:"fhirVersion"`
			Snapshot       struct {
				Element []struct {
					Path string `json:"path"`
					Type []struct {
						Code      string `json:"code"`
						Extension []struct {
							URL      string `json:"url"`
							ValueURL string `json:"valueUrl"`
						} `json:"extension"`
					} `json:"type"`
					ContentReference string `json:"contentReference"`
				} `json:"element"`
			} `json:"snapshot"`
		}
		if err := json.Unmarshal(e.Resource, &sd); err != nil {
			return fmt.Errorf("%s: entry %d: %w", name, i, err)
		}
		if sd.ResourceType != "StructureDefinition" || sd.FHIRVersion != fhirVersion || sd.URL != coreURL+sd.Type {
			continue // other resources, later versions, profiles
		}
		if sd.Derivation != "specialization" && !(sd.Abstract && sd.BaseDefinition == "") {
			continue // constraints (SimpleQuantity, ...); Base, Element, Resource have no base
		}
		if _, dup := m[sd.Type]; dup {
			return fmt.Errorf("%s: StructureDefinition %s is there twice", name, sd.Type)
		}
		els := map[string]element{}
		for _, el := range sd.Snapshot.Element {
			var x element
			if ref, ok := strings.CutPrefix(el.ContentReference, "#"); ok {
				x.contentRef = ref
			}
			for _, t := range el.Type {
				code := t.Code
				if strings.HasPrefix(code, "http://hl7.org/fhirpath/System.") {
					for _, ext := range t.Extension {
						if ext.URL == fhirTypeExt {
							code = ext.ValueURL
						}
					}
				}
				x.types = append(x.types, code)
			}
			els[el.Path] = x
		}
		m[sd.Type] = els
		if sd.Kind == "resource" && !sd.Abstract && sd.Derivation == "specialization" {
			concrete[sd.Type] = true
			if sd.BaseDefinition == coreURL+"DomainResource" {
				domain[sd.Type] = true
			}
		}
	}
	return nil
}

// compile returns the paths of the branches of expression on resource
// type typ, for a parameter defined on base (typ itself, Resource or
// DomainResource). A branch is on typ when it starts with base's name;
// when the parameter has only one base (single), a branch that starts
// with an element name is read from the resource's root too, as a
// FHIRPath engine reads it.
func (m model) compile(typ, base, expression string, single bool) ([]spPath, error) {
	var out []spPath
	for _, branch := range splitTop(expression, '|') {
		branch = strings.TrimSpace(branch)
		segs, err := segments(branch)
		if err != nil {
			return nil, fmt.Errorf("branch %s: %v", branch, err)
		}
		if len(segs) == 0 {
			return nil, fmt.Errorf("an empty branch")
		}
		switch first := segs[0]; {
		case first == base:
			segs = segs[1:]
		case single && isLetters(first) && 'a' <= first[0] && first[0] <= 'z':
		default:
			continue // a branch on another base
		}
		paths, err := m.compileBranch(typ, segs)
		if err != nil {
			return nil, fmt.Errorf("branch %s: %v", branch, err)
		}
		for _, p := range paths {
			if !slices.ContainsFunc(out, func(q spPath) bool { return samePath(p, q) }) {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no branch on %s", typ)
	}
	return out, nil
}

func samePath(a, b spPath) bool {
	return slices.Equal(a.steps, b.steps) && a.typ == b.typ && slices.Equal(a.targets, b.targets)
}

// splitTop splits s on sep outside parentheses and string literals.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	inStr := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '\'' {
				inStr = false
			}
		case c == '\'':
			inStr = true
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == sep && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// segments turns a branch into its dot-separated segments, with the
// parenthesized forms "(X)", "(X).y" and "(X as T)" flattened: "(X as T)"
// becomes X's segments then "as(T)".
func segments(branch string) ([]string, error) {
	branch = strings.TrimSpace(branch)
	if strings.HasPrefix(branch, "(") {
		end := closing(branch, 0)
		if end < 0 {
			return nil, fmt.Errorf("unbalanced parentheses")
		}
		inner := strings.TrimSpace(branch[1:end])
		var segs []string
		var err error
		if x, t, ok := strings.Cut(inner, " as "); ok && isLetters(strings.TrimSpace(t)) {
			if segs, err = segments(x); err != nil {
				return nil, err
			}
			segs = append(segs, "as("+strings.TrimSpace(t)+")")
		} else if segs, err = segments(inner); err != nil {
			return nil, err
		}
		rest := strings.TrimSpace(branch[end+1:])
		if rest == "" {
			return segs, nil
		}
		if rest[0] != '.' {
			return nil, fmt.Errorf("%s after a parenthesis", rest)
		}
		more, err := segments(rest[1:])
		if err != nil {
			return nil, err
		}
		return append(segs, more...), nil
	}
	if x, t, ok := strings.Cut(branch, " as "); ok && isLetters(strings.TrimSpace(t)) && !strings.ContainsAny(x, "() ") {
		segs, err := segments(x)
		if err != nil {
			return nil, err
		}
		return append(segs, "as("+strings.TrimSpace(t)+")"), nil
	}
	if len(splitTop(branch, ' ')) > 1 {
		return nil, fmt.Errorf("an operator expression, not a path")
	}
	return splitTop(branch, '.'), nil
}

// closing returns the index of the parenthesis closing the one at s[i],
// or -1.
func closing(s string, i int) int {
	depth := 0
	inStr := false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '\'' {
				inStr = false
			}
		case c == '\'':
			inStr = true
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// walkState is one way through a branch so far: the path built, and
// where its last step's values are defined (element path elPath in the
// definitions of type defType), with their type codes.
type walkState struct {
	path    spPath
	defType string   // the StructureDefinition the last step's element is in
	elPath  string   // its path there ("Observation.component")
	types   []string // its type codes; one once a choice is resolved
	choice  string   // the step's name without the type suffix, while a choice is unresolved
}

// compileBranch compiles the segments of one branch after the type name:
// element names; ofType(T), as(T) after a choice element (or an element
// of type T); where(field='literal') after an element; and, last,
// where(resolve() is T [or resolve() is U ...]). A choice element reached
// without a type selector gives one path per type it allows.
func (m model) compileBranch(typ string, segs []string) ([]spPath, error) {
	if len(segs) == 0 {
		return nil, fmt.Errorf("no element")
	}
	states := []walkState{{defType: typ, elPath: typ, types: []string{typ}}}
	for i, seg := range segs {
		seg = strings.TrimSpace(seg)
		switch {
		case isName(seg):
			var next []walkState
			for _, st := range states {
				ns, err := m.step(expandChoice(st), seg)
				if err != nil {
					return nil, err
				}
				next = append(next, ns...)
			}
			states = next
		case i > 0 && (isCall(seg, "ofType") || isCall(seg, "as")):
			t := callArg(seg)
			if !isLetters(t) {
				return nil, fmt.Errorf("%s: not a type name", seg)
			}
			var next []walkState
			for _, st := range states {
				if !slices.Contains(st.types, t) {
					continue // a path whose values are never of type t
				}
				st.types = []string{t}
				if st.choice != "" {
					st.path.steps = slices.Clone(st.path.steps)
					st.path.steps[len(st.path.steps)-1].name = st.choice + upperFirst(t)
					st.choice = ""
				}
				next = append(next, st)
			}
			if len(next) == 0 {
				return nil, fmt.Errorf("%s: no element of that type", seg)
			}
			states = next
		case i > 0 && isCall(seg, "where"):
			arg := callArg(seg)
			if targets, ok := resolveIs(arg); ok {
				if i != len(segs)-1 {
					return nil, fmt.Errorf("%s is not the last step", seg)
				}
				var next []walkState
				for _, st := range states {
					for _, s := range expandChoice(st) {
						if s.types[0] != "Reference" {
							continue // a choice's other types: resolve() is T drops them
						}
						s.path.targets = targets
						next = append(next, s)
					}
				}
				if len(next) == 0 {
					return nil, fmt.Errorf("%s on an element that is not a Reference", seg)
				}
				states = next
				continue
			}
			field, value, ok := whereEq(arg)
			if !ok {
				return nil, fmt.Errorf("%s: only where(field='literal') and where(resolve() is Type) are compiled", seg)
			}
			var next []walkState
			for _, st := range states {
				for _, s := range expandChoice(st) {
					last := &s.path.steps[len(s.path.steps)-1]
					if last.field != "" {
						return nil, fmt.Errorf("%s: a second filter on one step", seg)
					}
					s.path.steps = slices.Clone(s.path.steps)
					s.path.steps[len(s.path.steps)-1].field = field
					s.path.steps[len(s.path.steps)-1].value = value
					next = append(next, s)
				}
			}
			states = next
		default:
			return nil, fmt.Errorf("%s is not compiled", seg)
		}
	}
	var out []spPath
	for _, st := range states {
		for _, s := range expandChoice(st) {
			if len(s.types) != 1 {
				return nil, fmt.Errorf("%s: %d types", s.elPath, len(s.types))
			}
			s.path.typ = s.types[0]
			out = append(out, s.path)
		}
	}
	return out, nil
}

// expandChoice resolves an unresolved choice into one state per type.
func expandChoice(st walkState) []walkState {
	if st.choice == "" {
		return []walkState{st}
	}
	out := make([]walkState, 0, len(st.types))
	for _, t := range st.types {
		s := st
		s.path.steps = slices.Clone(st.path.steps)
		s.path.steps[len(s.path.steps)-1].name = st.choice + upperFirst(t)
		s.types = []string{t}
		s.choice = ""
		out = append(out, s)
	}
	return out
}

// step follows element name from st, whose values have one type.
func (m model) step(states []walkState, name string) ([]walkState, error) {
	var out []walkState
	for _, st := range states {
		if len(st.types) != 1 {
			return nil, fmt.Errorf("%s: %d types", st.elPath, len(st.types))
		}
		defType, base := st.defType, st.elPath
		if t := st.types[0]; t != "BackboneElement" && t != "Element" || !m.hasChildren(defType, base) {
			defType, base = t, t // into the data type's own definition
		}
		els := m[defType]
		if els == nil {
			return nil, fmt.Errorf("%s.%s: no definition of type %s", st.elPath, name, defType)
		}
		p := base + "." + name
		el, ok := els[p]
		choice := ""
		if !ok {
			if el, ok = els[p+"[x]"]; !ok {
				return nil, fmt.Errorf("%s has no element %s", defType, strings.TrimPrefix(p, defType+"."))
			}
			choice = name
		}
		for el.contentRef != "" {
			p = el.contentRef
			if el, ok = els[p]; !ok {
				return nil, fmt.Errorf("%s: contentReference #%s not found", defType, p)
			}
		}
		if len(el.types) == 0 {
			return nil, fmt.Errorf("%s: no type", p)
		}
		n := st
		n.path.steps = append(slices.Clone(st.path.steps), spStep{name: name})
		n.defType, n.elPath, n.types, n.choice = defType, p, el.types, choice
		if choice == "" && len(el.types) != 1 {
			return nil, fmt.Errorf("%s: %d types", p, len(el.types))
		}
		out = append(out, n)
	}
	return out, nil
}

// hasChildren reports whether the definitions of typ have elements under
// path.
func (m model) hasChildren(typ, path string) bool {
	prefix := path + "."
	for p := range m[typ] {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

func upperFirst(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// isName reports whether s is an element name.
func isName(s string) bool {
	if s == "" || !('a' <= s[0] && s[0] <= 'z') {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// isCall reports whether s is fn(...).
func isCall(s, fn string) bool {
	return strings.HasPrefix(s, fn+"(") && strings.HasSuffix(s, ")") && closing(s, len(fn)) == len(s)-1
}

func callArg(s string) string {
	return strings.TrimSpace(s[strings.IndexByte(s, '(')+1 : len(s)-1])
}

// resolveIs parses "resolve() is T" or "resolve() is T or resolve() is U
// ...".
func resolveIs(arg string) ([]string, bool) {
	var out []string
	for part := range strings.SplitSeq(arg, " or ") {
		t, ok := strings.CutPrefix(strings.TrimSpace(part), "resolve() is ")
		if !ok || !isLetters(t) {
			return nil, false
		}
		out = append(out, t)
	}
	return out, len(out) > 0
}

// whereEq parses "field='literal'" (the literal without escapes).
func whereEq(arg string) (field, value string, ok bool) {
	f, v, ok := strings.Cut(arg, "=")
	f, v = strings.TrimSpace(f), strings.TrimSpace(v)
	if !ok || !isName(f) || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' || strings.ContainsAny(v[1:len(v)-1], `'\`) {
		return "", "", false
	}
	return f, v[1 : len(v)-1], true
}

// searchParameterDef is one SearchParameter of search-parameters.json, with
// the fields the generators read.
type searchParameterDef struct {
	ResourceType string   `json:"resourceType"`
	ID           string   `json:"id"`
	Code         string   `json:"code"`
	Type         string   `json:"type"`
	Base         []string `json:"base"`
	Expression   string   `json:"expression"`
}

// searchParameters decodes search-parameters.json, a Bundle, into its
// SearchParameter entries (others are skipped).
func searchParameters(params []byte) ([]searchParameterDef, error) {
	var bd struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource searchParameterDef `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(params, &bd); err != nil {
		return nil, fmt.Errorf("search-parameters.json: %w", err)
	}
	if bd.ResourceType != "Bundle" {
		return nil, fmt.Errorf("search-parameters.json: resourceType %q, want Bundle", bd.ResourceType)
	}
	var out []searchParameterDef
	for _, e := range bd.Entry {
		if e.Resource.ResourceType == "SearchParameter" {
			out = append(out, e.Resource)
		}
	}
	return out, nil
}
