package index

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// fuzzTypes are the types FuzzCompartmentOf reads a body as: every type
// of the compartment table, and one that is in none.
var fuzzTypes = append(slices.Sorted(func(yield func(string) bool) {
	for typ := range fhirdefs.PatientCompartment {
		if !yield(typ) {
			return
		}
	}
}), "Practitioner")

// FuzzCompartmentOf checks the extractors on arbitrary bytes (they must
// not panic) and, for a valid JSON object, that compartmentOf (as the
// type sel picks), provenanceTargets and groupMembers agree with the
// encoding/json reference implementation. It is seeded with one resource
// of each type of the Synthea sample and the reference forms of the
// table tests.
func FuzzCompartmentOf(f *testing.F) {
	seen := map[string]bool{}
	for _, l := range loadSampleLines(f) {
		if seen[l.typ] {
			continue
		}
		seen[l.typ] = true
		sel := slices.Index(fuzzTypes, l.typ)
		if sel < 0 {
			sel = len(fuzzTypes) - 1
		}
		f.Add(uint8(sel), l.body)
	}
	obs := uint8(slices.Index(fuzzTypes, "Observation"))
	for _, s := range []string{
		`{"subject":{"reference":"Patient/p1/_history/3"},"performer":[{"reference":"https://x/Patient/p2"},{"reference":"#c"}]}`,
		`{"subject":{"reference":"Patient\/p1"},"sub\u006aect":{"refer\u0065nce":"\u0050atient/p2"}}`,
		`{"subject":{"reference":"urn:uuid:p1"},"subject":[{"reference":"Patient/p1","reference":7}]}`,
		`{"subject":[[{"reference":"Patient/p1"}],{"reference":"Patient/\ud800"}], "performer" : {"reference":"http:///Patient/x"}}`,
		`{"target":[{"reference":"Observation/o"}],"member":[{"entity":{"reference":"urn:uuid:u1"},"inactive":true,"period":{"start":"2020","end":"2021-02-03T04:05:06.7+01:00"}}]}`,
		`{"subject":}`,
		`[{"subject":{"reference":"Patient/p1"}}]`,
	} {
		f.Add(obs, []byte(s))
	}
	f.Fuzz(func(t *testing.T, sel uint8, body []byte) {
		typ := fuzzTypes[int(sel)%len(fuzzTypes)]
		got, err := compartmentOf([]string{"keep"}, typ, "me", body)
		targets, terr := provenanceTargets(nil, body)
		members, merr := groupMembers(body)
		if len(got) == 0 || got[0] != "keep" {
			t.Fatalf("compartmentOf lost dst: %q", got)
		}
		if !json.Valid(body) || !isObject(body) {
			return // only checked for not panicking
		}
		want, rerr := refCompartment(typ, "me", body)
		if err != nil || rerr != nil || !slices.Equal(got[1:], want) {
			t.Fatalf("compartmentOf(%s) = %q, %v; reference %q, %v", typ, got[1:], err, want, rerr)
		}
		wantTargets, _ := refProvenance(body)
		if terr != nil || !slices.Equal(targets, wantTargets) {
			t.Fatalf("provenanceTargets = %q, %v; reference %q", targets, terr, wantTargets)
		}
		if bytes.Contains(body, []byte(":60")) || bytes.Contains(body, []byte(`\u`)) {
			return // leap seconds and escaped digits: the reference reads no dates then
		}
		wantMembers, _ := refGroup(body)
		if merr != nil || !slices.Equal(members, wantMembers) {
			t.Fatalf("groupMembers = %+v, %v; reference %+v", members, merr, wantMembers)
		}
	})
}
