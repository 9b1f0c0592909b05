package ingest_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

const synthea = "../testdata/synthea-r4-100-patients.ndjson.gz"

func readNDJSON(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 4<<20)
	var lines [][]byte
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// withoutMeta decodes a resource with UseNumber and drops meta.
func withoutMeta(t testing.TB, b []byte) (map[string]any, string, string) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	delete(m, "meta")
	return m, m["resourceType"].(string), m["id"].(string)
}

var lastUpdatedRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

func metaOf(t testing.TB, b []byte) (versionID, lastUpdated string) {
	t.Helper()
	var r struct {
		Meta struct {
			VersionID   string `json:"versionId"`
			LastUpdated string `json:"lastUpdated"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r.Meta.VersionID, r.Meta.LastUpdated
}

func TestSyntheaEndToEnd(t *testing.T) {
	lines := readNDJSON(t, synthea)
	if len(lines) != 38483 {
		t.Fatalf("sample has %d resources, want 38483", len(lines))
	}
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{})

	start := time.Now()
	p := newPublisher(t, js)
	for _, l := range lines {
		if err := p.Upsert(t.Context(), l); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	published := time.Since(start)
	head := waitCaughtUp(t, c, idx)
	t.Logf("%d resources: published in %v, applied in %v (head %d)", len(lines), published, time.Since(start), head)
	if st := p.Stats(); st.Published != uint64(len(lines)) || st.Failed != 0 {
		t.Errorf("publisher stats %+v", st)
	}

	want := map[string]map[string]map[string]any{} // type → id → resource without meta
	for _, l := range lines {
		m, typ, id := withoutMeta(t, l)
		if want[typ] == nil {
			want[typ] = map[string]map[string]any{}
		}
		want[typ][id] = m
	}
	if len(want) != 19 {
		t.Errorf("sample has %d types, want 19", len(want))
	}
	total := 0
	for typ, byID := range want {
		entries := scanAll(t, idx, typ)
		if len(entries) != len(byID) {
			t.Errorf("%s: scanned %d entries, want %d", typ, len(entries), len(byID))
		}
		if res, _ := countOf(idx, typ); res != int64(len(byID)) {
			t.Errorf("%s: count %d, want %d", typ, res, len(byID))
		}
		var prev uint64
		for _, e := range entries {
			total++
			if e.CommitTime <= prev {
				t.Fatalf("%s: commit time %d after %d", typ, e.CommitTime, prev)
			}
			prev = e.CommitTime
			if e.Deleted {
				t.Fatalf("%s/%s: unexpected tombstone", typ, e.ID)
			}
			got, gotTyp, gotID := withoutMeta(t, e.Resource)
			if gotTyp != typ || gotID != e.ID {
				t.Fatalf("entry %s/%s holds %s/%s", typ, e.ID, gotTyp, gotID)
			}
			if !reflect.DeepEqual(got, byID[e.ID]) {
				t.Fatalf("%s/%s differs from the input", typ, e.ID)
			}
			v, lu := metaOf(t, e.Resource)
			// versionId is the stream sequence of the publish.
			if n, err := strconv.ParseUint(v, 10, 64); err != nil || n == 0 || n > head || !lastUpdatedRE.MatchString(lu) || lu != index.FormatInstant(e.CommitTime) {
				t.Fatalf("%s/%s: meta versionId %q lastUpdated %q (commit time %d)", typ, e.ID, v, lu, e.CommitTime)
			}
		}
	}
	if total != len(lines) {
		t.Errorf("scanned %d resources, want %d", total, len(lines))
	}
}

func TestUpdateAndDelete(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{})
	p := newPublisher(t, js)
	ctx := t.Context()

	publish := func(fn func() error) {
		t.Helper()
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		waitCaughtUp(t, c, idx)
	}
	upsert := func(body string) func() error {
		return func() error { return p.Upsert(ctx, []byte(body)) }
	}
	publish(upsert(`{"resourceType":"Patient","id":"p.1","gender":"female"}`))
	publish(upsert(`{"resourceType":"Patient","id":"p2","gender":"male"}`))
	first := scanAll(t, idx, "Patient")
	if len(first) != 2 || first[0].ID != "p.1" {
		t.Fatalf("got %+v", first)
	}

	publish(upsert(`{"resourceType":"Patient","id":"p.1","gender":"other"}`))
	got := scanAll(t, idx, "Patient")
	if len(got) != 2 || got[0].ID != "p2" || got[1].ID != "p.1" {
		t.Fatalf("after update: %+v", got)
	}
	// versionId is the stream sequence of the update, the third event.
	if v, _ := metaOf(t, got[1].Resource); v != "3" || !bytes.Contains(got[1].Resource, []byte(`"gender":"other"`)) {
		t.Fatalf("after update: %s", got[1].Resource)
	}
	if got[1].CommitTime <= first[1].CommitTime {
		t.Errorf("updated commit time %d not after %d", got[1].CommitTime, first[1].CommitTime)
	}

	publish(func() error { return p.Delete(ctx, "Patient", "p.1") })
	got = scanAll(t, idx, "Patient")
	if len(got) != 2 || got[1].ID != "p.1" || !got[1].Deleted || got[1].Resource != nil {
		t.Fatalf("after delete: %+v", got)
	}
	if res, tomb := countOf(idx, "Patient"); res != 1 || tomb != 1 {
		t.Errorf("counts %d resources %d tombstones, want 1 and 1", res, tomb)
	}

	// Re-create and delete again: neither is deduplicated away.
	publish(upsert(`{"resourceType":"Patient","id":"p.1","gender":"unknown"}`))
	publish(func() error { return p.Delete(ctx, "Patient", "p.1") })
	got = scanAll(t, idx, "Patient")
	if len(got) != 2 || !got[1].Deleted {
		t.Fatalf("after re-create and delete: %+v", got)
	}
	if st := p.Stats(); st.Published != 6 || st.Duplicates != 0 {
		t.Errorf("publisher stats %+v", st)
	}
}

// crashingApplier commits the first batch and then fails, as if the
// process died between commit and ack. With lag set, AppliedSeq reports
// the sequence from before that commit until the next Apply, so the
// consumer is positioned behind the index and the committed messages are
// delivered and handed to Apply again, which must skip them.
type crashingApplier struct {
	*index.Index
	lag     bool
	crashed atomic.Bool
	before  atomic.Uint64 // applied seq before the crashed commit, until used
	skipped atomic.Int64
}

func (a *crashingApplier) AppliedSeq() uint64 {
	if seq := a.before.Load(); seq != 0 {
		return seq - 1
	}
	return a.Index.AppliedSeq()
}

func (a *crashingApplier) Apply(ctx context.Context, changes []index.Change, lastSeq uint64) ([]index.Result, error) {
	before := a.Index.AppliedSeq()
	a.before.Store(0)
	res, err := a.Index.Apply(ctx, changes, lastSeq)
	for _, r := range res {
		if r.Skipped {
			a.skipped.Add(1)
		}
	}
	if err == nil && a.crashed.CompareAndSwap(false, true) {
		if a.lag {
			a.before.Store(before + 1)
		}
		return nil, errors.New("simulated crash after commit")
	}
	return res, err
}

func TestRedeliveryNotAppliedTwice(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	reg := prometheus.NewRegistry()
	cfg := ingest.Config{BatchSize: 20, Registerer: reg}
	if err := ingest.EnsureStreams(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js)
	const n = 50
	publishPatients(t, p, n)
	idx := openIndex(t)
	app := &crashingApplier{Index: idx, lag: true}
	c := startConsumer(t, js, app, cfg)
	waitCaughtUp(t, c, idx)
	if !app.crashed.Load() {
		t.Fatal("the applier never crashed")
	}
	if got := app.skipped.Load(); got != 20 {
		t.Errorf("Apply skipped %d redelivered changes, want the 20 of the committed batch", got)
	}
	checkOneVersionEach(t, scanAll(t, idx, "Patient"), n)
	if res, _ := countOf(idx, "Patient"); res != n {
		t.Errorf("count %d, want %d", res, n)
	}
	// The consumer sets the gauge once Apply has returned, a moment after
	// the index shows the commit that waitCaughtUp waited for.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if v := gauge(t, reg, "bulkstream_ingest_applied_sequence"); v != n {
			return fmt.Errorf("applied_sequence metric %v, want %d", v, n)
		}
		return nil
	})
}

// checkOneVersionEach checks that each of entries, resources published
// once each as stream sequences 1..n, has the versionId of its own event
// (the stream sequence), and that no two share one.
func checkOneVersionEach(t testing.TB, entries []index.Entry, n int) {
	t.Helper()
	seen := map[string]string{}
	for _, e := range entries {
		v, _ := metaOf(t, e.Resource)
		if seq, err := strconv.Atoi(v); err != nil || seq < 1 || seq > n {
			t.Fatalf("%s has version %q after redelivery, want its stream sequence in 1..%d", e.ID, v, n)
		}
		if other, dup := seen[v]; dup {
			t.Fatalf("%s and %s both have version %s", e.ID, other, v)
		}
		seen[v] = e.ID
	}
}

// gauge returns the value of an unlabelled counter or gauge.
func gauge(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestCrashBetweenCommitAndAck(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	if err := ingest.EnsureStreams(t.Context(), js, ingest.Config{BatchSize: 20}); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js)
	const n = 50
	for i := range n {
		body := `{"resourceType":"Observation","id":"o` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `","status":"final"}`
		if err := p.Upsert(t.Context(), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	app := &crashingApplier{Index: idx}
	c := startConsumer(t, js, app, ingest.Config{BatchSize: 20})
	waitCaughtUp(t, c, idx)
	if !app.crashed.Load() {
		t.Fatal("the applier never crashed")
	}
	entries := scanAll(t, idx, "Observation")
	if len(entries) != n {
		t.Fatalf("got %d observations, want %d", len(entries), n)
	}
	checkOneVersionEach(t, entries, n)
	if res, _ := countOf(idx, "Observation"); res != n {
		t.Errorf("count %d, want %d", res, n)
	}
}

func TestDeadLetters(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	cfg := ingest.Config{MaxEventBytes: 4096}
	if err := ingest.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	del := nats.Header{ingest.HeaderOp: {ingest.OpDelete}}
	type event struct {
		subject string
		hdr     nats.Header
		body    string
		reason  string // "" = good
	}
	good := func(id string) event {
		return event{"fhir.Patient." + id, nil, `{"resourceType":"Patient","id":"` + id + `"}`, ""}
	}
	events := []event{
		good("g1"),
		{"fhir.Patient.b1", nil, `not json`, ingest.ReasonNotJSON},
		good("g2"),
		{"fhir.Patient.b2", nil, `[{"resourceType":"Patient","id":"b2"}]`, ingest.ReasonNotObject},
		{"fhir.Patient.b3", nil, `{"resourceType":"Patientx","id":"b3"}`, ingest.ReasonUnknownType},
		{"fhir.Foo.b4", del, ``, ingest.ReasonUnknownType},
		{"fhir.Patient.b_5", nil, `{"resourceType":"Patient","id":"b_5"}`, ingest.ReasonBadID},
		{"fhir.Patient.b6", nil, `{"resourceType":"Observation","id":"b6"}`, ingest.ReasonTypeMismatch},
		{"fhir.Patient.b7", nil, `{"resourceType":"Patient","id":"other"}`, ingest.ReasonIDMismatch},
		{"fhir.Patient.b8", nil, `{"resourceType":"Patient","id":"b8","x":"` + strings.Repeat("x", 5000) + `"}`, ingest.ReasonTooLarge},
		{"fhir.Patient.%zz", nil, `{"resourceType":"Patient","id":"b9"}`, ingest.ReasonBadSubject},
		{"fhir.Patient.b10", nats.Header{ingest.HeaderOp: {"purge"}}, ``, ingest.ReasonBadOp},
		{"fhir.Patient.b11", nil, "{\"resourceType\":\"Patient\",\"id\":\"b11\",\"name\":\"\xc3\x28\"}", ingest.ReasonInvalidUTF8},
		{"fhir.Patient.b12", nil, `{"resourceType":"Patient","id":"b12","id":"b12"}`, ingest.ReasonDuplicateKey},
		{"fhir.Patient.b13", nil, `{"resourceType":"Patient","id":"b13","x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, ingest.ReasonTooDeep},
		{"fhir.Patient.b14", nil, `{"resourceType":"Patient"}`, ingest.ReasonMissingID},
		{"fhir.Patient.b15", nil, `{"id":"b15"}`, ingest.ReasonMissingType},
		{"fhir.Patient.b16", nil, `{"resourceType":"Patient","id":"b16","meta":"x"}`, ingest.ReasonBadMeta},
		{"fhir.Patient.b17", nil, `{"resourceType":"Patient","id":"b17","meta":{"tag":"not-an-array"}}`, ingest.ReasonBadMeta},
		{"fhir.Patient.%20", del, ``, ingest.ReasonBadID}, // blank delete target ("fhir.Patient." is not even stored)
		good("g3"),
	}
	seqs := map[uint64]event{}
	for _, e := range events {
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: e.subject, Header: e.hdr, Data: []byte(e.body)})
		if err != nil {
			t.Fatalf("publish %q: %v", e.subject, err)
		}
		seqs[ack.Sequence] = e
	}
	idx := openIndex(t)
	c := startConsumer(t, js, idx, cfg)
	waitCaughtUp(t, c, idx)

	if res, _ := countOf(idx, "Patient"); res != 3 {
		t.Errorf("applied %d patients, want the 3 good ones", res)
	}
	dlq, err := js.Stream(ctx, ingest.DefaultDLQStream)
	if err != nil {
		t.Fatal(err)
	}
	wantDead := 0
	for _, e := range events {
		if e.reason != "" {
			wantDead++
		}
	}
	if n := dlq.CachedInfo().State.Msgs; n != uint64(wantDead) {
		t.Fatalf("dead-letter stream holds %d messages, want %d", n, wantDead)
	}
	for i := uint64(1); i <= uint64(wantDead); i++ {
		m, err := dlq.GetMsg(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		seq := m.Header.Get(ingest.HeaderDLQSequence)
		var orig event
		for s, e := range seqs {
			if seq == strconvU(s) {
				orig = e
			}
		}
		if orig.reason == "" {
			t.Fatalf("dead letter %d points at seq %s, not a bad event", i, seq)
		}
		if got := m.Header.Get(ingest.HeaderDLQReason); got != orig.reason || m.Subject != "bulkstream.dlq."+orig.reason {
			t.Errorf("%s: dead letter on %s with reason %s, want %s (detail %s)", orig.subject, m.Subject, got, orig.reason, m.Header.Get(ingest.HeaderDLQDetail))
		}
		if m.Header.Get(ingest.HeaderDLQSubject) != orig.subject || m.Header.Get(ingest.HeaderDLQDetail) == "" {
			t.Errorf("dead letter headers %v", m.Header)
		}
		if string(m.Data) != orig.body {
			t.Errorf("%s: dead letter body %.40q, want %.40q", orig.subject, m.Data, orig.body)
		}
		if orig.hdr != nil && m.Header.Get(ingest.HeaderOp) != orig.hdr.Get(ingest.HeaderOp) {
			t.Errorf("%s: original header lost: %v", orig.subject, m.Header)
		}
	}
}

func strconvU(n uint64) string { return jsonNumber(n) }

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestReconnect(t *testing.T) {
	opts := ingesttest.Options(t)
	s := ingesttest.RunServer(t, opts)
	nc := ingesttest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	idx := openIndex(t)
	c := startConsumer(t, js, idx, ingest.Config{FetchWait: 200 * time.Millisecond})
	p := newPublisher(t, js)
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			body := `{"resourceType":"Patient","id":"p` + jsonNumber(uint64(i)) + `"}`
			if err := p.Upsert(t.Context(), []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	publish(0, 100)
	waitCaughtUp(t, c, idx)

	ingesttest.Restart(t, s, opts)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !nc.IsConnected() {
			return errorf("not reconnected")
		}
		return nil
	})
	publish(100, 200)
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if res, _ := countOf(idx, "Patient"); res != 200 {
			return errorf("%d patients applied, want 200", res)
		}
		return nil
	})
	waitCaughtUp(t, c, idx)
}

func TestStreamConflict(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "FHIR", Subjects: []string{"fhir.>"}, Storage: jetstream.FileStorage, MaxAge: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ingest.EnsureStreams(ctx, js, ingest.Config{})
	if err == nil {
		t.Fatal("EnsureStreams accepted a conflicting stream")
	}
	for _, want := range []string{`stream "FHIR"`, "subjects [fhir.>]", "[fhir.*.*]", "max age 1h0m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// The consumer refuses to start the same way.
	c, err := ingest.New(ingest.Config{}, js, openIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err == nil || !strings.Contains(err.Error(), "subjects") {
		t.Errorf("Start: got %v, want the subjects conflict", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Error(err)
	}
}

func TestConsumerConflict(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	if err := ingest.EnsureStreams(ctx, js, ingest.Config{Durable: "other"}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "FHIR")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "bulkstream", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	err = ingest.EnsureStreams(ctx, js, ingest.Config{})
	if err == nil || !strings.Contains(err.Error(), `consumer "bulkstream"`) || !strings.Contains(err.Error(), "ack policy") {
		t.Errorf("got %v, want an ack policy conflict", err)
	}
}

func TestConfigValidation(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	for _, tc := range []struct {
		cfg   ingest.Config
		field string
	}{
		{ingest.Config{Stream: "a.b"}, "Stream"},
		{ingest.Config{Durable: "x y"}, "Durable"},
		{ingest.Config{DLQStream: "FHIR"}, "DLQStream"},
		{ingest.Config{Subjects: []string{"fhir..x"}}, "Subjects"},
		{ingest.Config{DLQSubjectPrefix: "fhir.dead"}, "DLQSubjectPrefix"},
		{ingest.Config{DLQSubjectPrefix: "dlq.*"}, "DLQSubjectPrefix"},
		{ingest.Config{Replicas: 7}, "Replicas"},
		{ingest.Config{BatchSize: -1}, "BatchSize"},
		{ingest.Config{MaxAge: -time.Second}, "MaxAge"},
		{ingest.Config{MaxEventBytes: -1}, "MaxEventBytes"},
		{ingest.Config{FetchWait: time.Millisecond}, "FetchWait"},
		{ingest.Config{AckWait: time.Millisecond}, "AckWait"},
	} {
		_, err := ingest.New(tc.cfg, js, idx)
		if err == nil || !strings.Contains(err.Error(), "config "+tc.field+":") {
			t.Errorf("New(%+v): got %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := ingest.New(ingest.Config{}, nil, idx); err == nil {
		t.Error("New accepted a nil JetStream")
	}
}

func TestCloseIdempotent(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	idx := openIndex(t)
	c, err := ingest.New(ingest.Config{}, js, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); !errors.Is(err, ingest.ErrStarted) {
		t.Errorf("second Start: got %v, want ErrStarted", err)
	}
	for range 2 {
		if err := c.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Start(t.Context()); !errors.Is(err, ingest.ErrClosed) {
		t.Errorf("Start after Close: got %v, want ErrClosed", err)
	}
}

func TestPublisher(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	if err := ingest.EnsureStreams(ctx, js, ingest.Config{}); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js)
	body := []byte(`{"resourceType":"Patient","id":"1", "active":true}`)
	for range 2 {
		if err := p.Upsert(ctx, body); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := p.Delete(ctx, "Patient", "1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{`nope`, `{"id":"1"}`, `{"resourceType":"Patient","id":"a b"}`, `[]`} {
		var rej *ingest.RejectError
		if err := p.Upsert(ctx, []byte(bad)); !errors.As(err, &rej) {
			t.Errorf("Upsert(%s): got %v, want a RejectError", bad, err)
		}
	}
	if err := p.Delete(ctx, "Nope", "1"); err == nil {
		t.Error("Delete of an unknown type accepted")
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Each call is a change of its own (a new Nats-Msg-Id): the same
	// body twice is stored twice (the index makes the second a no-op).
	st := p.Stats()
	if st.Published != 4 || st.Duplicates != 0 || st.Failed != 0 || st.InFlight != 0 {
		t.Errorf("stats %+v, want 4 published, no duplicate", st)
	}
	s, err := js.Stream(ctx, "FHIR")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 4 {
		t.Errorf("stream holds %d messages, want 4 (two upserts, two deletes)", n)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "fhir.Patient.1" || string(m.Data) != `{"resourceType":"Patient","id":"1","active":true}` ||
		!strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), "Patient/1/") {
		t.Errorf("published %s %v %s", m.Subject, m.Header, m.Data)
	}
}

func TestPublisherNoStream(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	p, err := ingest.NewPublisher(js, ingest.PublisherConfig{MaxRetries: 1, AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Upsert(t.Context(), []byte(`{"resourceType":"Patient","id":"1"}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(t.Context()); err == nil {
		t.Fatal("Flush: publishing without a stream succeeded")
	}
	if st := p.Stats(); st.Failed != 1 || st.Retried != 1 {
		t.Errorf("stats %+v, want 1 failed after 1 retry", st)
	}
}

// batchRecorder records the changes of every Apply.
type batchRecorder struct {
	*index.Index
	mu      sync.Mutex
	batches [][]uint64 // stream sequences of the applied changes
}

func (a *batchRecorder) Apply(ctx context.Context, changes []index.Change, lastSeq uint64) ([]index.Result, error) {
	seqs := make([]uint64, len(changes))
	for i, c := range changes {
		seqs[i] = c.Seq
	}
	a.mu.Lock()
	a.batches = append(a.batches, seqs)
	a.mu.Unlock()
	return a.Index.Apply(ctx, changes, lastSeq)
}

// TestBatchesFromOnePull: one pull request asks for several batches; they
// are still committed BatchSize at a time, in stream order, each message
// once.
func TestBatchesFromOnePull(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	cfg := ingest.Config{BatchSize: 7}
	if err := ingest.EnsureStreams(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js)
	const n = 100
	publishPatients(t, p, n)
	idx := openIndex(t)
	app := &batchRecorder{Index: idx}
	c := startConsumer(t, js, app, cfg)
	waitCaughtUp(t, c, idx)
	app.mu.Lock()
	defer app.mu.Unlock()
	var next uint64 = 1
	for _, b := range app.batches {
		if len(b) > cfg.BatchSize {
			t.Errorf("a batch of %d changes, BatchSize %d", len(b), cfg.BatchSize)
		}
		for _, seq := range b {
			if seq != next {
				t.Fatalf("applied seq %d, want %d (batches %v)", seq, next, app.batches)
			}
			next++
		}
	}
	if next != n+1 {
		t.Fatalf("applied up to seq %d, want %d", next-1, n)
	}
	if res, _ := countOf(idx, "Patient"); res != n {
		t.Errorf("count %d, want %d", res, n)
	}
}

// publishPatients publishes Patients p0…p<n-1> and waits for their acks.
func publishPatients(t *testing.T, p *ingest.Publisher, n int) {
	t.Helper()
	for i := range n {
		if err := p.Upsert(t.Context(), []byte(`{"resourceType":"Patient","id":"p`+jsonNumber(uint64(i))+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}
