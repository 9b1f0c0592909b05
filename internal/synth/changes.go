package synth

import (
	"fmt"
	"math/bits"
	"strconv"

	"github.com/bulkstream/bulkstream/internal/jsonobj"
)

// Op is the kind of a change event.
type Op uint8

const (
	Upsert Op = iota + 1 // create or update: Body is the whole resource
	Delete               // Body is nil
)

func (o Op) String() string {
	switch o {
	case Upsert:
		return "upsert"
	case Delete:
		return "delete"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// Event is one change to a generated resource.
type Event struct {
	Op   Op
	Type string
	ID   string
	Body []byte // Upsert: the resource, one line of JSON without '\n'; Delete: nil
}

// DeleteRatio is the share of deletes among the events of
// [Generator.Changes]: event i is a delete when a hash of (Seed, i) says
// so, so the actual share varies around it.
const DeleteRatio = 0.2

// ChangeExtensionURL is the url of the extension that updates add to
// resources that have no status or active flag to change.
const ChangeExtensionURL = "http://example.org/fhir/StructureDefinition/bulkstream-synth-revision"

// Changes calls fn with n change events over the generated resources, and
// stops at the first error, which it returns. The n events touch n distinct
// resources, chosen by a seeded pseudo-random permutation of all Len()
// generated resources, so n may not exceed Len(). About [DeleteRatio] of
// them are deletes; the others are updates of the generated resource (same
// resourceType and id) with one realistic change, in order of preference:
//
//   - a top-level "status" moved to another code valid for the type
//     (an Observation "final" becomes "amended", "corrected" or
//     "entered-in-error"; a Claim "active" becomes "cancelled", ...);
//   - a top-level boolean "active" flipped;
//   - otherwise an extension {"url": ChangeExtensionURL, "valueInteger": i+1}
//     added as the first element of the top-level "extension" array.
//
// meta is never touched (bulkstream owns meta.versionId and
// meta.lastUpdated). Every other byte is the generated resource's. Each
// Event and its Body are fn's to keep.
func (g *Generator) Changes(n int, fn func(Event) error) error {
	if err := g.validate(); err != nil {
		return err
	}
	total := g.Len()
	if n < 0 || int64(n) > total {
		return fmt.Errorf("synth: %d changes over %d resources: want 0 ≤ changes ≤ resources", n, total)
	}
	if n == 0 {
		return nil
	}
	s := g.Sample
	p := newPermutation(uint64(total), g.Seed)
	for i := range n {
		x := p.at(uint64(i))
		k, ln := int(x/uint64(len(s.lines))), &s.lines[x%uint64(len(s.lines))]
		ev := Event{
			Type: s.types[ln.typ],
			ID:   string(appendNewID(nil, g.Seed, k, s.ids[ln.id], s.uuid[ln.id])),
		}
		h := mix64(g.Seed ^ mix64(uint64(i)^0x6368616e6765)) // "change"
		if float64(h>>11)/(1<<53) < DeleteRatio {
			ev.Op = Delete
		} else {
			ev.Op = Upsert
			body, err := update(g.appendLineAt(nil, ln, k), ev.Type, i, h)
			if err != nil {
				return fmt.Errorf("synth: update %s/%s: %w", ev.Type, ev.ID, err)
			}
			ev.Body = body
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

// statusCodes lists, per resource type, the R4 status codes an update may
// set: the realistic transitions of a stored record (corrections,
// cancellations, entered-in-error).
var statusCodes = map[string][]string{
	"CarePlan":                 {"active", "on-hold", "revoked", "completed", "entered-in-error"},
	"CareTeam":                 {"active", "suspended", "inactive", "entered-in-error"},
	"Claim":                    {"active", "cancelled", "entered-in-error"},
	"Coverage":                 {"active", "cancelled", "entered-in-error"},
	"Device":                   {"active", "inactive", "entered-in-error"},
	"DiagnosticReport":         {"final", "amended", "corrected", "appended", "entered-in-error"},
	"DocumentReference":        {"current", "superseded", "entered-in-error"},
	"Encounter":                {"finished", "cancelled", "entered-in-error"},
	"ExplanationOfBenefit":     {"active", "cancelled", "entered-in-error"},
	"ImagingStudy":             {"available", "cancelled", "entered-in-error"},
	"Immunization":             {"completed", "not-done", "entered-in-error"},
	"MedicationAdministration": {"in-progress", "completed", "stopped", "entered-in-error"},
	"MedicationRequest":        {"active", "on-hold", "cancelled", "completed", "stopped", "entered-in-error"},
	"Observation":              {"final", "amended", "corrected", "entered-in-error"},
	"Procedure":                {"completed", "stopped", "entered-in-error"},
	"ServiceRequest":           {"active", "on-hold", "revoked", "completed", "entered-in-error"},
}

// update returns r, a resource of type typ, with one change (see
// [Generator.Changes]); h chooses among the possible changes.
func update(r []byte, typ string, i int, h uint64) ([]byte, error) {
	if codes := statusCodes[typ]; codes != nil {
		if vs, ve, ok := jsonobj.Lookup(r, "status"); ok && r[vs] == '"' {
			cur := string(r[vs+1 : ve-1])
			var alts []string
			for _, c := range codes {
				if c != cur {
					alts = append(alts, c)
				}
			}
			return splice(r, vs, ve, strconv.Quote(alts[h%uint64(len(alts))])), nil
		}
	}
	if vs, ve, ok := jsonobj.Lookup(r, "active"); ok {
		switch string(r[vs:ve]) {
		case "true":
			return splice(r, vs, ve, "false"), nil
		case "false":
			return splice(r, vs, ve, "true"), nil
		}
	}
	ext := `{"url":"` + ChangeExtensionURL + `","valueInteger":` + strconv.Itoa(i+1) + `}`
	if vs, ve, ok := jsonobj.Lookup(r, "extension"); ok {
		if r[vs] != '[' {
			return nil, fmt.Errorf("extension is not an array")
		}
		at := vs + 1
		if at < ve-1 {
			ext += ","
		}
		return splice(r, at, at, ext), nil
	}
	_, ve, ok := jsonobj.Lookup(r, "id")
	if !ok {
		return nil, fmt.Errorf("no id")
	}
	return splice(r, ve, ve, `,"extension":[`+ext+`]`), nil
}

// splice returns a new slice: b with b[vs:ve] replaced by s.
func splice(b []byte, vs, ve int, s string) []byte {
	out := make([]byte, 0, len(b)-(ve-vs)+len(s))
	out = append(out, b[:vs]...)
	out = append(out, s...)
	return append(out, b[ve:]...)
}

// AppendNDJSON appends the event's NDJSON line, with its '\n', as the
// `publish` command reads it: the resource for an upsert, "Type/id" for a
// delete (`publish --delete`).
func (e Event) AppendNDJSON(dst []byte) []byte {
	if e.Op == Delete {
		dst = append(dst, e.Type...)
		dst = append(dst, '/')
		dst = append(dst, e.ID...)
	} else {
		dst = append(dst, e.Body...)
	}
	return append(dst, '\n')
}

// permutation is a seeded bijection of [0, n): a 4-round Feistel network
// over the smallest even power of two ≥ n, cycle-walked back into [0, n).
type permutation struct {
	n    uint64
	half uint
	mask uint64
	keys [4]uint64
}

func newPermutation(n, seed uint64) permutation {
	half := max(uint(bits.Len64(n-1)+1)/2, 1)
	p := permutation{n: n, half: half, mask: 1<<half - 1}
	for r := range p.keys {
		p.keys[r] = mix64(seed ^ mix64(uint64(r)+0x7065726d)) // "perm"
	}
	return p
}

func (p permutation) at(i uint64) uint64 {
	x := i
	for {
		l, r := x>>p.half, x&p.mask
		for _, k := range p.keys {
			l, r = r, l^(mix64(r^k)&p.mask)
		}
		x = l<<p.half | r
		if x < p.n {
			return x
		}
	}
}

// mix64 is the SplitMix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
