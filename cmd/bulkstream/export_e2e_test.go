package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/internal/synth"
)

// publishSample publishes the Synthea sample's resources of the given
// types (every type when none), waits for the acks, and returns the
// published lines by Type/id.
func (s *testServer) publishSample(t *testing.T, types ...string) map[string][]byte {
	t.Helper()
	sample, err := synth.OpenSample(genSample)
	if err != nil {
		t.Fatal(err)
	}
	published := map[string][]byte{}
	err = sample.Each(func(typ, id string, line []byte) error {
		if len(types) > 0 && !slices.Contains(types, typ) {
			return nil
		}
		published[typ+"/"+id] = bytes.Clone(line)
		return s.pub.Upsert(t.Context(), line)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	return published
}

// withoutMetas is withoutMeta of every resource of m.
func withoutMetas(t *testing.T, m map[string][]byte) map[string]string {
	t.Helper()
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = withoutMeta(t, v)
	}
	return out
}

// testServer is bulkstream serve, in this process or as the real binary,
// on its embedded NATS server, with a publisher connected to it.
type testServer struct {
	base string // http://addr/fhir
	addr string // the HTTP listen address
	proc *proc  // the serve process (binary only)
	pub  *ingest.Publisher
	nc   *nats.Conn
}

// serverOpts varies startServerWith.
type serverOpts struct {
	args    []string       // more serve flags
	scheme  string         // "https" when args turn TLS on
	client  *http.Client   // for the readiness probe (a TLS client trusting the cert)
	sighup  chan os.Signal // the SIGHUP hook (securityConfig.sighup)
	dataDir string         // default t.TempDir()
	binary  bool           // run the built binary instead of serve in this process (no sighup)
}

func startServer(t *testing.T) *testServer { return startServerWith(t, serverOpts{}) }

func startServerWith(t *testing.T, o serverOpts) *testServer {
	t.Helper()
	if o.scheme == "" {
		o.scheme = "http"
	}
	if o.client == nil {
		o.client = http.DefaultClient
	}
	var c serveConfig
	fs := newFlagSet("serve", io.Discard)
	bindServeFlags(fs, &c)
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	// Port 0 everywhere: serve logs what it bound, and its default public
	// URL carries the bound port.
	args := append([]string{"--data-dir", o.dataDir, "--listen", anyPort, "--nats-listen", anyPort}, o.args...)
	if err := parseFlags(fs, args); err != nil {
		t.Fatal(err)
	}
	c.Security.sighup = o.sighup
	done := make(chan error, 1)
	var p *proc
	var a servingAddrs
	if o.binary {
		p = start(t, append([]string{"serve"}, args...)...)
		done = p.done
		a = p.serving(t)
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		logs := &syncBuffer{}
		go func() { done <- serve(ctx, c, slog.New(slog.NewTextHandler(logs, nil))) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		a = waitServingLog(t, logs, done)
	}
	addr := a.HTTP
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		resp, err := o.client.Get(o.scheme + "://" + addr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	nc, js := connectJS(t, "nats://"+a.NATS)
	pub, err := ingest.NewPublisher(js, ingest.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{base: o.scheme + "://" + addr + "/fhir", addr: addr, proc: p, pub: pub, nc: nc}
}

type manifest struct {
	TransactionTime string `json:"transactionTime"`
	Request         string `json:"request"`
	Output          []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"output"`
	Deleted []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"deleted"`
	Error []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"error"`
}

// export runs one $export with the given query and returns the manifest,
// every output resource by Type/id, and the Type/id of every deletion.
func (s *testServer) export(t *testing.T, query url.Values) (manifest, map[string]json.RawMessage, []string) {
	t.Helper()
	status := kickoffExport(t, http.DefaultClient, s.base, query.Encode())
	var m manifest
	polls := 0
	checkFor(t, 2*time.Minute, 10*time.Millisecond, func() error {
		polls++
		resp, err := http.Get(status)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		switch resp.StatusCode {
		case http.StatusAccepted:
			if resp.Header.Get("X-Progress") == "" || resp.Header.Get("Retry-After") == "" {
				t.Errorf("202 without X-Progress or Retry-After: %v", resp.Header)
			}
			return fmt.Errorf("still running: %s", resp.Header.Get("X-Progress"))
		case http.StatusOK:
			if polls == 1 {
				t.Errorf("the first poll answered 200; it must be 202")
			}
			return json.Unmarshal(b, &m)
		default:
			t.Fatalf("status: %d %s", resp.StatusCode, b)
			return nil
		}
	})
	resources := downloadOutputs(t, m)
	var deleted []string
	for _, d := range m.Deleted {
		for _, l := range download(t, d.URL) {
			var b struct {
				ResourceType string
				Type         string
				Entry        []struct {
					Request struct{ Method, URL string }
				}
			}
			if err := json.Unmarshal(l, &b); err != nil {
				t.Fatal(err)
			}
			if b.ResourceType != "Bundle" || b.Type != "transaction" {
				t.Fatalf("deleted line is not a transaction Bundle: %s", l)
			}
			for _, e := range b.Entry {
				if e.Request.Method != "DELETE" {
					t.Fatalf("deleted entry method %q", e.Request.Method)
				}
				deleted = append(deleted, e.Request.URL)
			}
		}
	}
	return m, resources, deleted
}

// downloadOutputs downloads every output file of m and returns each
// resource by Type/id. A line count other than the manifest's, a resource
// in another type's file, or one exported twice fails the test.
func downloadOutputs(t *testing.T, m manifest) map[string]json.RawMessage {
	t.Helper()
	resources := map[string]json.RawMessage{}
	for _, o := range m.Output {
		lines := download(t, o.URL)
		if len(lines) != o.Count {
			t.Errorf("%s: %d lines, manifest count %d", o.URL, len(lines), o.Count)
		}
		for _, l := range lines {
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatalf("%s: %v", o.URL, err)
			}
			if r.ResourceType != o.Type {
				t.Errorf("%s: a %s in the %s file", o.URL, r.ResourceType, o.Type)
			}
			key := r.ResourceType + "/" + r.ID
			if _, dup := resources[key]; dup {
				t.Errorf("%s exported twice", key)
			}
			resources[key] = l
		}
	}
	return resources
}

// download fetches an NDJSON file, gzip-encoded to exercise that path.
func download(t *testing.T, u string) [][]byte {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent decompression
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+ndjson") {
		t.Errorf("GET %s: Content-Type %q", u, ct)
	}
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	var lines [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// withoutMeta decodes a resource (numbers kept as literals) without meta.
func withoutMeta(t *testing.T, b []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	delete(m, "meta")
	out, _ := json.Marshal(m)
	return string(out)
}

// TestExportSynthea publishes the Synthea sample through JetStream, exports
// it over HTTP, and compares every resource with the input; then checks
// _type, _since and _until against the published data.
func TestExportSynthea(t *testing.T) {
	s := startServer(t)
	input := s.publishSample(t)

	// No wait for ingest here: the job itself waits until everything
	// published before the kick-off is applied.
	m1, got, deleted := s.export(t, url.Values{})
	if len(got) != len(input) || len(deleted) != 0 {
		t.Fatalf("full export: %d resources, %d deleted; want %d, 0", len(got), len(deleted), len(input))
	}
	for key, want := range input {
		if withoutMeta(t, got[key]) != withoutMeta(t, want) {
			t.Fatalf("%s differs from the published resource:\n got %s\nwant %s", key, got[key], want)
		}
	}
	if !strings.HasSuffix(m1.Request, "/fhir/$export?") && !strings.HasSuffix(m1.Request, "/fhir/$export") {
		t.Errorf("manifest request = %q", m1.Request)
	}

	_, pats, _ := s.export(t, url.Values{"_type": {"Patient,Device"}})
	for key := range pats {
		if !strings.HasPrefix(key, "Patient/") && !strings.HasPrefix(key, "Device/") {
			t.Errorf("_type=Patient,Device exported %s", key)
		}
	}
	if len(pats) != 104 {
		t.Errorf("_type=Patient,Device: %d resources, want 104", len(pats))
	}

	// Change a few resources; a _since export returns exactly those.
	var patient struct {
		ID string `json:"id"`
	}
	for key, b := range pats {
		if strings.HasPrefix(key, "Patient/") {
			json.Unmarshal(b, &patient)
			break
		}
	}
	upd := bytes.Replace(input["Patient/"+patient.ID], []byte(`"resourceType":"Patient",`), []byte(`"resourceType":"Patient","active":false,`), 1)
	if err := s.pub.Upsert(t.Context(), upd); err != nil {
		t.Fatal(err)
	}
	if err := s.pub.Delete(t.Context(), "Device", firstID(pats, "Device/")); err != nil {
		t.Fatal(err)
	}
	if err := s.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	m2, changed, deleted := s.export(t, url.Values{"_since": {m1.TransactionTime}})
	if len(changed) != 1 || changed["Patient/"+patient.ID] == nil {
		t.Errorf("_since export: %d resources %v, want only Patient/%s", len(changed), keys(changed), patient.ID)
	}
	if len(deleted) != 1 || !strings.HasPrefix(deleted[0], "Device/") {
		t.Errorf("_since export deleted = %v, want one Device", deleted)
	}
	// _until = the first export's transactionTime (exclusive): the
	// patients last changed before it. The updated patient's only stored
	// version is later, so it is not there; nor is a patient committed at
	// exactly that instant.
	_, until, _ := s.export(t, url.Values{"_until": {m1.TransactionTime}, "_type": {"Patient"}})
	t1 := parseInstant(t, m1.TransactionTime)
	wantUntil := 0
	for key, b := range got {
		if !strings.HasPrefix(key, "Patient/") || key == "Patient/"+patient.ID {
			continue
		}
		var r struct{ Meta struct{ LastUpdated string } }
		json.Unmarshal(b, &r)
		if parseInstant(t, r.Meta.LastUpdated).Before(t1) {
			wantUntil++
			if until[key] == nil {
				t.Errorf("_until export misses %s (lastUpdated %s)", key, r.Meta.LastUpdated)
			}
		}
	}
	if wantUntil < 90 {
		t.Errorf("only %d patients before %s; the sample has 100", wantUntil, m1.TransactionTime)
	}
	if len(until) != wantUntil || until["Patient/"+patient.ID] != nil {
		t.Errorf("_until export: %d patients, want %d; updated one included: %v", len(until), wantUntil, until["Patient/"+patient.ID] != nil)
	}
	if m2.TransactionTime <= m1.TransactionTime {
		t.Errorf("transactionTime went from %s to %s", m1.TransactionTime, m2.TransactionTime)
	}
}

func parseInstant(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("instant %q: %v", s, err)
	}
	return ts
}

func firstID(m map[string]json.RawMessage, prefix string) string {
	for k := range m {
		if id, ok := strings.CutPrefix(k, prefix); ok {
			return id
		}
	}
	return ""
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestChainedIncrementalExports: while a writer keeps publishing creates,
// updates and deletes, a client chains _since exports on the previous
// transactionTime. Export 1 plus every later export, applied in order,
// must rebuild exactly the final state: nothing missed, nothing
// duplicated, nothing resurrected.
func TestChainedIncrementalExports(t *testing.T) {
	s := startServer(t)
	sample, err := synth.OpenSample(genSample)
	if err != nil {
		t.Fatal(err)
	}
	g := &synth.Generator{Sample: sample, Seed: 11, Scale: 1}
	var lines [][]byte
	g.Each(func(typ, id string, line []byte) error {
		if len(lines) < 3000 {
			lines = append(lines, bytes.Clone(line))
		}
		return nil
	})
	// The truth: what the writer published last for every resource.
	var mu sync.Mutex
	truth := map[string]string{} // Type/id → resource without meta, or "" when deleted
	publish := func(line []byte) {
		var r struct{ ResourceType, ID string }
		json.Unmarshal(line, &r)
		if err := s.pub.Upsert(t.Context(), line); err != nil {
			t.Error(err)
		}
		mu.Lock()
		truth[r.ResourceType+"/"+r.ID] = withoutMeta(t, line)
		mu.Unlock()
	}
	for _, l := range lines[:1000] {
		publish(l)
	}
	if err := s.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(t.Context())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ctx.Err() == nil && i < 1_000_000; i++ {
			switch i % 4 {
			case 0, 1: // create a new one, or update an old one
				l := lines[1000+i%2000]
				if i%4 == 1 {
					l = bytes.Replace(lines[i%1000], []byte(`"id":"`), []byte(fmt.Sprintf(`"extension":[{"url":"urn:rev","valueInteger":%d}],"id":"`, i)), 1)
				}
				publish(l)
			case 2: // delete
				var r struct{ ResourceType, ID string }
				json.Unmarshal(lines[(i*7)%1000], &r)
				if err := s.pub.Delete(ctx, r.ResourceType, r.ID); err == nil {
					mu.Lock()
					truth[r.ResourceType+"/"+r.ID] = ""
					mu.Unlock()
				}
			case 3:
				if err := s.pub.Flush(ctx); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		s.pub.Flush(context.Background())
	}()

	state := map[string]string{}
	apply := func(out map[string]json.RawMessage, deleted []string) {
		for k, v := range out {
			state[k] = withoutMeta(t, v)
		}
		for _, k := range deleted {
			delete(state, k)
		}
	}
	m, out, del := s.export(t, url.Values{})
	apply(out, del)
	exports := 1
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		m2, out, del := s.export(t, url.Values{"_since": {m.TransactionTime}})
		for _, k := range del {
			if _, ok := out[k]; ok {
				t.Errorf("%s both exported and deleted in one export", k)
			}
		}
		apply(out, del)
		m = m2
		exports++
	}
	stop()
	<-writerDone
	_, out, del = s.export(t, url.Values{"_since": {m.TransactionTime}})
	apply(out, del)
	exports++

	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{}
	for k, v := range truth {
		if v != "" {
			want[k] = v
		}
	}
	if len(state) != len(want) {
		t.Errorf("rebuilt state has %d resources, want %d", len(state), len(want))
	}
	for k, v := range want {
		if state[k] != v {
			t.Errorf("%s: rebuilt %.80s, want %.80s", k, state[k], v)
			break
		}
	}
	for k := range state {
		if _, ok := want[k]; !ok {
			t.Errorf("%s resurrected or invented", k)
			break
		}
	}
	t.Logf("%d chained exports, %d resources at the end", exports, len(want))
}
