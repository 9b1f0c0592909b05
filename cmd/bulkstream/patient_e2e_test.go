package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// sampleCompartments is what the Synthea sample holds for the Patient-
// and Group-level tests, computed from the published lines.
type sampleCompartments struct {
	patients []string            // Patient ids, in sample order
	members  map[string][]string // Group id → member patient ids
	obs      map[string][]string // patient id → Observation ids (by subject)
}

func compartmentsOf(t *testing.T, input map[string][]byte) sampleCompartments {
	t.Helper()
	sc := sampleCompartments{members: map[string][]string{}, obs: map[string][]string{}}
	for _, key := range slices.Sorted(maps.Keys(input)) {
		typ, id, _ := strings.Cut(key, "/")
		switch typ {
		case "Patient":
			sc.patients = append(sc.patients, id)
		case "Group":
			var g struct {
				Member []struct{ Entity struct{ Reference string } }
			}
			if err := json.Unmarshal(input[key], &g); err != nil {
				t.Fatal(err)
			}
			for _, m := range g.Member {
				pid, ok := strings.CutPrefix(m.Entity.Reference, "urn:uuid:")
				if !ok {
					t.Fatalf("%s: member %q is no urn:uuid reference", key, m.Entity.Reference)
				}
				sc.members[id] = append(sc.members[id], pid)
			}
		case "Observation":
			var o struct{ Subject struct{ Reference string } }
			if err := json.Unmarshal(input[key], &o); err != nil {
				t.Fatal(err)
			}
			if pid, ok := strings.CutPrefix(o.Subject.Reference, "Patient/"); ok {
				sc.obs[pid] = append(sc.obs[pid], id)
			}
		}
	}
	return sc
}

// levelKickoff sends a kick-off (GET without body, POST with a Parameters
// body) and returns the response with its body read.
func levelKickoff(t *testing.T, method, u, body string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", "respond-async")
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// levelExport kicks off, expects 202, polls the status URL until 200 and
// returns the manifest as sent.
func levelExport(t *testing.T, method, u, body string) []byte {
	t.Helper()
	resp, b := levelKickoff(t, method, u, body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%s %s: %d %s, want 202", method, u, resp.StatusCode, b)
	}
	status := resp.Header.Get("Content-Location")
	var raw []byte
	checkFor(t, 2*time.Minute, 10*time.Millisecond, func() error {
		resp, err := http.Get(status)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		switch resp.StatusCode {
		case http.StatusAccepted:
			return errors.New("still running")
		case http.StatusOK:
			raw = b
			return nil
		}
		t.Fatalf("status %s: %d %s", status, resp.StatusCode, b)
		return nil
	})
	return raw
}

// sameIDs fails the test unless got and want hold the same strings.
func sameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(g, w) {
		t.Errorf("%s: got %d %v\nwant %d %v", what, len(g), g, len(w), w)
	}
}

// TestPatientGroupExportE2E: the real binary loaded with the Synthea
// sample answers Group- and Patient-level kick-offs over HTTP with exactly
// the compartments the sample gives (computed here from the sample file),
// organizeOutputBy=Patient blocks that are whole, a 404 OperationOutcome
// for an unknown Group, `bulkstream fetch --group` downloads, and
// declares both operations in its CapabilityStatement.
func TestPatientGroupExportE2E(t *testing.T) {
	s := startServerWith(t, serverOpts{binary: true})
	input := s.publishSampleApplied(t)
	sc := compartmentsOf(t, input)

	const group = "NeighborhoodHealthPlan"
	members := sc.members[group]
	if len(members) != 7 {
		t.Fatalf("the sample's Group %s has %d members, want 7", group, len(members))
	}
	var memberObs []string
	for _, p := range members {
		memberObs = append(memberObs, sc.obs[p]...)
	}

	t.Run("group GET", func(t *testing.T) {
		kick := s.base + "/Group/" + group + "/$export"
		raw := levelExport(t, http.MethodGet, kick, "")
		var m manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if m.Request != kick {
			t.Errorf("manifest request %q, want the kick-off URL %q", m.Request, kick)
		}
		for _, o := range m.Output {
			if o.Type == "" {
				t.Errorf("output item without type: %s", o.URL)
			}
		}
		got := downloadOutputs(t, m) // counts, types, no duplicates
		var pats, obs []string
		for key, line := range got {
			typ, id, _ := strings.Cut(key, "/")
			switch typ {
			case "Patient":
				pats = append(pats, id)
			case "Observation":
				obs = append(obs, id)
				var o struct{ Subject struct{ Reference string } }
				json.Unmarshal(line, &o)
				if !slices.Contains(members, strings.TrimPrefix(o.Subject.Reference, "Patient/")) {
					t.Errorf("%s: subject %s is no member of %s", key, o.Subject.Reference, group)
				}
			}
			if want := input[key]; want == nil || withoutMeta(t, line) != withoutMeta(t, want) {
				t.Errorf("%s differs from the published resource", key)
			}
		}
		sameIDs(t, "exported Patients", pats, members)
		sameIDs(t, "exported Observations", obs, memberObs)
	})

	t.Run("patient POST organizeOutputBy", func(t *testing.T) {
		two := sc.patients[:2]
		body := `{"resourceType":"Parameters","parameter":[` +
			`{"name":"_type","valueString":"Patient,Observation"},` +
			`{"name":"organizeOutputBy","valueString":"Patient"},` +
			`{"name":"patient","valueReference":{"reference":"Patient/` + two[0] + `"}},` +
			`{"name":"patient","valueReference":{"reference":"Patient/` + two[1] + `"}}]}`
		kick := s.base + "/Patient/$export"
		raw := levelExport(t, http.MethodPost, kick, body)
		var m struct {
			Request           string           `json:"request"`
			OutputOrganizedBy string           `json:"outputOrganizedBy"`
			Output            []map[string]any `json:"output"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if m.OutputOrganizedBy != "Patient" || m.Request != kick || len(m.Output) == 0 {
			t.Fatalf("manifest: outputOrganizedBy %q, request %q, %d outputs; want Patient, %q, some:\n%s", m.OutputOrganizedBy, m.Request, len(m.Output), kick, raw)
		}
		blocks := map[string][]string{} // Patient/<id> → its block's Type/id lines
		for _, o := range m.Output {
			if _, ok := o["type"]; ok {
				t.Errorf("output item with a type: %v", o)
			}
			u, _ := o["url"].(string)
			lines := download(t, u)
			cur := ""
			for i, l := range lines {
				var r struct {
					ResourceType, ID string
					Parameter        []struct {
						Name           string
						ValueReference struct{ Reference string }
					}
				}
				if err := json.Unmarshal(l, &r); err != nil {
					t.Fatalf("%s line %d: %v", u, i+1, err)
				}
				if r.ResourceType == "Parameters" {
					if len(r.Parameter) != 1 || r.Parameter[0].Name != "header" {
						t.Fatalf("%s line %d: a Parameters line that is no block header: %s", u, i+1, l)
					}
					cur = r.Parameter[0].ValueReference.Reference
					if _, dup := blocks[cur]; dup {
						t.Errorf("%s line %d: a second block of %s (a block split or repeated)", u, i+1, cur)
					}
					blocks[cur] = []string{}
					continue
				}
				if i == 0 {
					t.Fatalf("%s does not start with a Parameters header line: %s", u, l)
				}
				blocks[cur] = append(blocks[cur], r.ResourceType+"/"+r.ID)
			}
		}
		if len(blocks) != 2 {
			t.Errorf("%d blocks %v, want the 2 patients'", len(blocks), slices.Sorted(maps.Keys(blocks)))
		}
		for _, p := range two {
			b, ok := blocks["Patient/"+p]
			if !ok {
				t.Errorf("no block of Patient/%s", p)
				continue
			}
			if len(b) == 0 || b[0] != "Patient/"+p {
				t.Errorf("block of Patient/%s does not start with the Patient: %.3v", p, b)
			}
			want := []string{"Patient/" + p}
			for _, o := range sc.obs[p] {
				want = append(want, "Observation/"+o)
			}
			sameIDs(t, "block of Patient/"+p, b, want)
		}
	})

	t.Run("unknown group 404", func(t *testing.T) {
		resp, b := levelKickoff(t, http.MethodGet, s.base+"/Group/does-not-exist/$export", "")
		var oo struct {
			ResourceType string
			Issue        []struct{ Severity, Code, Diagnostics string }
		}
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal(b, &oo) != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
			t.Errorf("unknown Group: %d %s; want 404 with an OperationOutcome", resp.StatusCode, b)
		}
	})

	t.Run("fetch --group", func(t *testing.T) {
		out, mirror := t.TempDir(), t.TempDir()
		state := filepath.Join(t.TempDir(), "state.json")
		stdout := runCmd(t, "fetch", "--url", s.base, "--group", group, "--out", out, "--state", state, "--apply", mirror)
		got := readNDJSONDir(t, out, "*.ndjson")
		var pats []string
		for key := range got {
			if id, ok := strings.CutPrefix(key, "Patient/"); ok {
				pats = append(pats, id)
			}
		}
		sameIDs(t, "fetched Patients", pats, members)
		if n := len(readNDJSONDir(t, mirror, "Observation.ndjson")); n != len(memberObs) {
			t.Errorf("mirror: %d Observations, want the members' %d", n, len(memberObs))
		}
		var m struct {
			TransactionTime, Request string
			Output                   []struct{ Type, URL string }
		}
		b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
		if err != nil || json.Unmarshal(b, &m) != nil || m.TransactionTime == "" || len(m.Output) == 0 ||
			m.Request != s.base+"/Group/"+group+"/$export" {
			t.Errorf("manifest.json: %v %s", err, b)
		}
		if !regexp.MustCompile(`(?m)^  Patient +7$`).MatchString(stdout) {
			t.Errorf("summary lacks Patient 7:\n%s", stdout)
		}
		// The state is kept under the Group's own key, and the next run is
		// an incremental one of the Group.
		sb, err := os.ReadFile(state)
		key := s.base + "/Group/" + group + "/$export"
		if err != nil || !bytes.Contains(sb, []byte(`"`+key+`"`)) || !bytes.Contains(sb, []byte(m.TransactionTime)) {
			t.Errorf("state file %v: %s; want the key %s with %s", err, sb, key, m.TransactionTime)
		}
		stdout = runCmd(t, "fetch", "--url", s.base, "--group", group, "--out", t.TempDir(), "--state", state, "--apply", mirror)
		if !strings.Contains(stdout, "exported 0 files") || !strings.Contains(stdout, "(incremental)") {
			t.Errorf("second --state run of the Group: want an empty incremental run:\n%s", stdout)
		}
		if n := len(readNDJSONDir(t, mirror, "Observation.ndjson")); n != len(memberObs) {
			t.Errorf("mirror after the incremental run: %d Observations, want %d", n, len(memberObs))
		}
	})

	t.Run("metadata", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.base+"/metadata", nil)
		req.Header.Set("Accept", "application/fhir+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var cs struct {
			Rest []struct {
				Resource []struct {
					Type      string
					Operation []struct{ Name, Definition string }
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil || len(cs.Rest) == 0 {
			t.Fatalf("metadata: %v, %+v", err, cs)
		}
		ops := map[string][]string{} // resource type → operation names
		for _, r := range cs.Rest[0].Resource {
			for _, o := range r.Operation {
				ops[r.Type] = append(ops[r.Type], o.Name)
			}
		}
		if !slices.Contains(ops["Patient"], "patient-export") || !slices.Contains(ops["Group"], "group-export") {
			t.Errorf("CapabilityStatement resource operations %v; want patient-export under Patient, group-export under Group", ops)
		}
	})
}

// TestFetchLevelFlags: the level flags are validated before any request,
// by errors naming the flags.
func TestFetchLevelFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--patient", "p1"}, "--patient needs --group or --patient-level"},
		{[]string{"--group", "g", "--patient-level"}, "--group g and --patient-level exclude each other"},
		{[]string{"--patient-level", "--patient", "Group/g"}, `--patient: "Group/g" is neither a patient id nor Patient/<id>`},
		{[]string{"--group", "g", "--patient", " , "}, `--patient " , " names no patient`},
	} {
		var stdout, stderr bytes.Buffer
		// Port 1 refuses connections: a request would fail differently.
		err := run(t.Context(), append([]string{"fetch", "--url", "http://127.0.0.1:1/fhir", "--out", t.TempDir()}, tc.args...), nil, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fetch %v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// publishSampleApplied publishes the whole Synthea sample and waits until
// ingest has applied all of it: a Group kick-off waits only briefly for
// ingest before it answers 404 for a Group it does not hold yet.
func (s *testServer) publishSampleApplied(t *testing.T) map[string][]byte {
	t.Helper()
	input := s.publishSample(t)
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	last, err := clusterLastSeq(js)
	if err != nil {
		t.Fatal(err)
	}
	waitAppliedSeq(t, s.addr, last, 2*time.Minute)
	return input
}
