package search

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/bulkstream/bulkstream/internal/fhirdefs"
)

// firstToken returns a code that parameter d reaches in one of bodies
// (read with the validating walk), or "".
func firstToken(d *fhirdefs.SearchParam, bodies [][]byte) string {
	code := ""
	for _, body := range bodies {
		for i := range d.Paths {
			eachValue(body, &d.Paths[i], func(v []byte) bool {
				var x struct {
					Code, Value string
					Coding      []struct{ Code string }
				}
				var s string
				switch {
				case json.Unmarshal(v, &s) == nil:
					code = s
				case json.Unmarshal(v, &x) == nil:
					code = x.Code + x.Value
					if len(x.Coding) > 0 {
						code = x.Coding[0].Code
					}
				}
				return code == ""
			})
			if code != "" {
				return code
			}
		}
	}
	return ""
}

// The fast walk of a plain body (one walk of the members, stopped after
// the last wanted name, the plain walk, lazily skipped values, the quick
// rejects in the walked values) answers as the validating walk does: on
// every resource of the sample, for every supported search parameter of
// its type, :missing=false (every path, Where and target filters
// included) and, for tokens, a code the sample has. The validating walk
// runs on the same resource with an escape in a name no path reads, and
// on the resource indented (whitespace makes the fast walk give up).
func TestMatchFastAgrees(t *testing.T) {
	byType := matchSampleByType(t)
	queries, fast := 0, 0
	for typ, bodies := range byType {
		var qs []Query
		for _, d := range fhirdefs.SearchParams(typ) {
			raws := []string{d.Code + ":missing=false"}
			if d.Type == "token" {
				if c := firstToken(&d, bodies); c != "" {
					raws = append(raws, d.Code+"="+url.QueryEscape(c), d.Code+":not="+url.QueryEscape(c))
				}
			}
			for _, raw := range raws {
				q, err := ParseQuery(typ + "?" + raw)
				if err != nil {
					continue // unsupported, or a code that is no token
				}
				qs = append(qs, q)
			}
		}
		queries += len(qs)
		for _, body := range bodies {
			if bytes.IndexByte(body, '\\') >= 0 {
				continue
			}
			escaped := bytes.Replace(body, []byte(`"resourceType"`), []byte(`"resourc\u0065Type"`), 1)
			var indented bytes.Buffer
			if err := json.Indent(&indented, body, "", " "); err != nil {
				t.Fatal(err)
			}
			for i := range qs {
				q := &qs[i]
				got, err1 := q.Match(body)
				want, err2 := q.Match(escaped)
				ind, err3 := q.Match(indented.Bytes())
				if err1 != nil || err2 != nil || err3 != nil || got != want || ind != want {
					t.Fatalf("%s on %s: fast %v, %v; validating %v, %v; indented %v, %v", q.Raw, body, got, err1, want, err2, ind, err3)
				}
				if got {
					fast++
				}
			}
		}
	}
	if queries < 100 || fast == 0 {
		t.Fatalf("%d queries, %d matches: the test tests little", queries, fast)
	}
	t.Logf("%d queries, %d matches", queries, fast)
}

// The fast walk stops after the last place a wanted name is written, and
// a later duplicate member still wins, nested names do not count, and
// text it cannot walk goes to the validating walk.
func TestMatchFastEdges(t *testing.T) {
	lab := `[{"coding":[{"code":"laboratory"}]}]`
	other := `[{"coding":[{"code":"survey"}]}]`
	q := Query{Params: []Param{mParam(defCategory, "", tokV("laboratory"))}}
	for _, tc := range []struct {
		body string
		want bool
	}{
		{`{"category":` + lab + `}`, true},
		{`{"category":` + lab + `,"code":{"text":"x"},"category":` + other + `}`, false},
		{`{"category":` + other + `,"code":{"text":"x"},"category":` + lab + `}`, true},
		{`{"category":` + lab + `,"extension":[{"category":` + other + `}]}`, true},
		{`{"extension":[{"category":` + lab + `}],"category":` + other + `}`, false},
		{`{"extension":[{"category":` + lab + `}]}`, false},
		{`{"a":"]}","category":` + lab + `}`, true},
		{`{"category":[{"coding":[{"code":"x"}]},{"coding":[{"code":"laboratory"}]}]}`, true},
		{`{"category":[{"coding":[{"code":"x","display":"}]"}]},{"coding":[{"code":"laboratory"}]}]}`, true},
		{`{"category": ` + lab + `}`, true},
		{`{"category":[{"coding": [ {"code":"laboratory"} ] }]}`, true},
		{`{"category":[{"coding":[{"code" : "laboratory"}]}] , "x":1}`, true},
		{"{\n\"id\":\"x\",\n\"category\":" + other + "\n}", false},
		// The last place the text names a member is a value, or nested:
		// the members are walked.
		{`{"category":` + lab + `,"status":"category"}`, true},
		{`{"category":` + lab + `,"note":[{"text":"category"}]}`, true},
		{`{"category":` + other + `,"contained":[{"category":` + lab + `}]}`, false},
		{`{"a":"{[","category":` + lab + `}`, true},
		{`{"category":` + lab + `,"b":"]]}}"}`, true},
	} {
		got, err := q.Match([]byte(tc.body))
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.body, got, err, tc.want)
		}
	}
}
