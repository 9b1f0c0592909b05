package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/internal/synth"
)

// clusterTruth is what a publisher knows once the stream acked its
// events: the last body of every live resource and every deleted one.
type clusterTruth struct {
	mu      sync.Mutex
	live    map[string][]byte // Type/id → last acked body
	deleted map[string]bool   // Type/id deleted by the last acked change
}

func (c *clusterTruth) upsert(key string, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[key] = body
	delete(c.deleted, key)
}

func (c *clusterTruth) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, key)
	c.deleted[key] = true
}

// ackedPublisher publishes one event at a time per caller and retries it,
// with its Nats-Msg-Id, until the stream acks it: through a node being
// killed, a leader election or a reconnect, an event either ends acked or
// the test fails; none is given up on.
type ackedPublisher struct {
	js      jetstream.JetStream
	acked   atomic.Int64
	retried atomic.Int64
}

func (p *ackedPublisher) publish(ctx context.Context, m *nats.Msg) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := p.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			p.acked.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s (Nats-Msg-Id %s) never acked: %w", m.Subject, m.Header.Get(jetstream.MsgIDHeader), err)
		}
		p.retried.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func upsertMsg(typ, id, msgID string, body []byte) *nats.Msg {
	return &nats.Msg{
		Subject: ingest.EncodeSubject(ingest.DefaultSubjectPrefix, typ, id),
		Header:  nats.Header{jetstream.MsgIDHeader: {msgID}},
		Data:    body,
	}
}

func deleteMsg(typ, id, msgID string) *nats.Msg {
	return &nats.Msg{
		Subject: ingest.EncodeSubject(ingest.DefaultSubjectPrefix, typ, id),
		Header:  nats.Header{jetstream.MsgIDHeader: {msgID}, ingest.HeaderOp: {ingest.OpDelete}},
	}
}

// sampleResource is one line of the Synthea sample.
type sampleResource struct {
	typ, id string
	body    []byte
}

func loadSample(t testing.TB) []sampleResource {
	t.Helper()
	s, err := synth.OpenSample(genSample)
	if err != nil {
		t.Fatal(err)
	}
	var out []sampleResource
	err = s.Each(func(typ, id string, line []byte) error {
		out = append(out, sampleResource{typ, id, bytes.Clone(line)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// relanguage returns body with its language element set to lang: an
// update of any resource type that keeps it valid. Numbers are kept as
// written.
func relanguage(body []byte, lang string) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	m["language"] = lang
	return json.Marshal(m)
}

// churnPatient is version v of a Patient the churn publisher owns.
func churnPatient(id string, v int) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"active":true,"name":[{"family":"Churn","given":["v%d"]}]}`, id, v)
}

// clusterWork runs the publishers of TestClusterReplicasAgree: the sample
// spread over sampleWorkers, and churnWorkers that create, update and
// delete Patients of their own and take over sample resources already
// acked (each key has one writer at a time, so the order of its changes
// is the order they were acked in).
type clusterWork struct {
	pub        *ackedPublisher
	truth      *clusterTruth
	acked      chan sampleResource // sample resources acked, for the churn workers to take over
	sampleDone chan struct{}
	stopChurn  chan struct{}
	churned    atomic.Int64
	wg         sync.WaitGroup
	errs       chan error
}

// newClusterWork readies publishing through js for at most timeout;
// stop ends the churn and waits for every publisher (also at cleanup).
func newClusterWork(t *testing.T, js jetstream.JetStream, timeout time.Duration) (w *clusterWork, ctx context.Context, stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	w = &clusterWork{
		pub:        &ackedPublisher{js: js},
		truth:      &clusterTruth{live: map[string][]byte{}, deleted: map[string]bool{}},
		acked:      make(chan sampleResource, 1024),
		sampleDone: make(chan struct{}),
		stopChurn:  make(chan struct{}),
		errs:       make(chan error, 64),
	}
	var stopOnce sync.Once
	stop = func() {
		stopOnce.Do(func() { close(w.stopChurn) })
		w.wg.Wait()
	}
	t.Cleanup(func() { cancel(); stop() })
	return w, ctx, stop
}

func (w *clusterWork) runSample(ctx context.Context, sample []sampleResource, workers int) {
	var swg sync.WaitGroup
	for k := range workers {
		swg.Add(1)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer swg.Done()
			for i := k; i < len(sample); i += workers {
				r := sample[i]
				key := r.typ + "/" + r.id
				if err := w.pub.publish(ctx, upsertMsg(r.typ, r.id, "sample/"+key, r.body)); err != nil {
					w.errs <- err
					return
				}
				w.truth.upsert(key, r.body)
				select {
				case w.acked <- r:
				default:
				}
			}
		}()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		swg.Wait()
		close(w.sampleDone)
	}()
}

func (w *clusterWork) runChurn(ctx context.Context, workers int) {
	for k := range workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if err := w.churn(ctx, k); err != nil {
				w.errs <- err
			}
		}()
	}
}

// churn is one churn worker: it owns the keys in owned (their last acked
// body) until it deletes them.
func (w *clusterWork) churn(ctx context.Context, k int) error {
	rng := rand.New(rand.NewPCG(15, uint64(k)))
	type owned struct {
		typ, id string
		body    []byte
		v       int
	}
	var mine []*owned
	created := 0
	for n := 0; ; n++ {
		select {
		case <-w.stopChurn:
			return nil
		default:
		}
		msgID := fmt.Sprintf("churn/%d/%d", k, n)
		switch op := rng.IntN(100); {
		case op < 15: // take over a sample resource already acked
			select {
			case r := <-w.acked:
				mine = append(mine, &owned{typ: r.typ, id: r.id, body: r.body})
			default:
			}
			continue
		case op < 45 || len(mine) == 0: // create
			created++
			o := &owned{typ: "Patient", id: fmt.Sprintf("churn-%d-%05d", k, created), v: 1}
			o.body = churnPatient(o.id, o.v)
			if err := w.pub.publish(ctx, upsertMsg(o.typ, o.id, msgID, o.body)); err != nil {
				return err
			}
			w.truth.upsert(o.typ+"/"+o.id, o.body)
			mine = append(mine, o)
		case op < 80: // update
			o := mine[rng.IntN(len(mine))]
			o.v++
			body, err := relanguage(o.body, fmt.Sprintf("en-x%d", o.v))
			if err != nil {
				return err
			}
			if err := w.pub.publish(ctx, upsertMsg(o.typ, o.id, msgID, body)); err != nil {
				return err
			}
			o.body = body
			w.truth.upsert(o.typ+"/"+o.id, body)
		default: // delete: the key is not written again
			i := rng.IntN(len(mine))
			o := mine[i]
			if err := w.pub.publish(ctx, deleteMsg(o.typ, o.id, msgID)); err != nil {
				return err
			}
			w.truth.remove(o.typ + "/" + o.id)
			mine = append(mine[:i], mine[i+1:]...)
		}
		w.churned.Add(1)
	}
}

// clusterLastSeq is the FHIR stream's last sequence, asked through js.
func clusterLastSeq(js jetstream.JetStream) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, ingest.DefaultStream)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.LastSeq, nil
}

// waitStreamGrows waits until the stream's last sequence reaches at least
// from+n.
func waitStreamGrows(t testing.TB, js jetstream.JetStream, from, n uint64, total time.Duration) uint64 {
	t.Helper()
	var last uint64
	checkFor(t, total, 50*time.Millisecond, func() error {
		var err error
		if last, err = clusterLastSeq(js); err != nil {
			return err
		}
		if last < from+n {
			return fmt.Errorf("stream at %d, want ≥ %d", last, from+n)
		}
		return nil
	})
	return last
}

// getBytes downloads u whole, uncompressed on the wire (the file's own
// bytes, without the server's gzip work).
func getBytes(t testing.TB, u string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return b
}

// finishedManifest polls a status URL until the export completed.
func finishedManifest(t *testing.T, status string) manifest {
	t.Helper()
	code, body := pollExport(t, status, 2*time.Minute)
	if code != http.StatusOK {
		t.Fatalf("export %s: %d %s", status, code, body)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, body)
	}
	return m
}

// exported is what an export's files hold.
type exported struct {
	resources map[string]json.RawMessage // Type/id → resource, from the output files
	deleted   []string                   // Type/id of each deletion, from the deleted files
}

// parseExport reads the files of m, downloaded as files (output files,
// then deleted files, in manifest order). A line count other than the
// manifest's, a resource in another type's file or one exported twice
// fails the test.
func parseExport(t *testing.T, m manifest, files [][]byte) exported {
	t.Helper()
	e := exported{resources: map[string]json.RawMessage{}}
	lines := func(b []byte) (ls [][]byte) {
		for l := range bytes.Lines(b) {
			ls = append(ls, bytes.TrimSuffix(l, []byte("\n")))
		}
		return ls
	}
	for i, o := range m.Output {
		ls := lines(files[i])
		if len(ls) != o.Count {
			t.Errorf("%s: %d lines, manifest count %d", o.URL, len(ls), o.Count)
		}
		for _, l := range ls {
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatalf("%s: %v", o.URL, err)
			}
			if r.ResourceType != o.Type {
				t.Errorf("%s: a %s in the %s file", o.URL, r.ResourceType, o.Type)
			}
			key := r.ResourceType + "/" + r.ID
			if _, dup := e.resources[key]; dup {
				t.Errorf("%s exported twice", key)
			}
			e.resources[key] = l
		}
	}
	for i, d := range m.Deleted {
		ls := lines(files[len(m.Output)+i])
		if len(ls) != d.Count {
			t.Errorf("%s: %d lines, manifest count %d", d.URL, len(ls), d.Count)
		}
		for _, l := range ls {
			var b struct {
				ResourceType, Type string
				Entry              []struct{ Request struct{ Method, URL string } }
			}
			if err := json.Unmarshal(l, &b); err != nil {
				t.Fatal(err)
			}
			if b.ResourceType != "Bundle" || b.Type != "transaction" || len(b.Entry) != 1 || b.Entry[0].Request.Method != "DELETE" {
				t.Fatalf("%s: not a transaction Bundle of one DELETE: %s", d.URL, l)
			}
			e.deleted = append(e.deleted, b.Entry[0].Request.URL)
		}
	}
	return e
}

// downloadExport downloads and reads the files of m.
func downloadExport(t *testing.T, m manifest) exported {
	t.Helper()
	var files [][]byte
	for _, o := range m.Output {
		files = append(files, getBytes(t, o.URL))
	}
	for _, d := range m.Deleted {
		files = append(files, getBytes(t, d.URL))
	}
	return parseExport(t, m, files)
}

// sameExport checks that two replicas' manifests of the same request
// report the same transactionTime and the same files, byte for byte (the
// URLs differ: each replica names its own job), and returns what the
// files hold.
func sameExport(t *testing.T, what string, a, b manifest) exported {
	t.Helper()
	if a.TransactionTime != b.TransactionTime {
		t.Errorf("%s: transactionTime %s on one replica, %s on the other", what, a.TransactionTime, b.TransactionTime)
	}
	type file struct {
		typ   string
		count int
		url   string
	}
	list := func(m manifest) (fs []file) {
		for _, o := range m.Output {
			fs = append(fs, file{o.Type, o.Count, o.URL})
		}
		for _, o := range m.Deleted {
			fs = append(fs, file{"deleted " + o.Type, o.Count, o.URL})
		}
		for _, o := range m.Error {
			fs = append(fs, file{"error " + o.Type, -1, o.URL})
		}
		return fs
	}
	fa, fb := list(a), list(b)
	if len(fa) != len(fb) {
		t.Fatalf("%s: %d files on one replica, %d on the other", what, len(fa), len(fb))
	}
	var files [][]byte
	var size int
	for i := range fa {
		if fa[i].typ != fb[i].typ || fa[i].count != fb[i].count {
			t.Fatalf("%s: file %d is %s ×%d on one replica, %s ×%d on the other", what, i, fa[i].typ, fa[i].count, fb[i].typ, fb[i].count)
		}
		ba, bb := getBytes(t, fa[i].url), getBytes(t, fb[i].url)
		if !bytes.Equal(ba, bb) {
			t.Errorf("%s: %s differs from %s (%d and %d bytes)", what, fa[i].url, fb[i].url, len(ba), len(bb))
		}
		files = append(files, ba)
		size += len(ba)
	}
	t.Logf("%s: %d files, %d bytes, byte-identical on both replicas, transactionTime %s", what, len(fa), size, a.TransactionTime)
	return parseExport(t, a, files)
}

// matchesTruth checks that got (Type/id → exported resource) holds exactly
// the live resources of truth, each with its last acked body apart from
// meta.
func matchesTruth(t *testing.T, what string, got map[string]json.RawMessage, truth *clusterTruth) {
	t.Helper()
	truth.mu.Lock()
	defer truth.mu.Unlock()
	bad := 0
	for key, want := range truth.live {
		g, ok := got[key]
		switch {
		case !ok:
			t.Errorf("%s lacks %s, acked and not deleted", what, key)
		case withoutMeta(t, g) != withoutMeta(t, want):
			t.Errorf("%s: %s is not the last acked body:\n got %s\nwant %s", what, key, g, want)
		default:
			continue
		}
		if bad++; bad == 10 {
			t.Fatalf("%s: giving up after %d differences", what, bad)
		}
	}
	for key := range got {
		if _, ok := truth.live[key]; ok {
			continue
		}
		if truth.deleted[key] {
			t.Errorf("%s holds %s, deleted by an acked delete", what, key)
		} else {
			t.Errorf("%s holds %s, never published", what, key)
		}
		if bad++; bad == 10 {
			t.Fatalf("%s: giving up after %d differences", what, bad)
		}
	}
}

// TestClusterReplicasAgree runs a 3-node NATS JetStream cluster and two
// serve replicas, each applying the whole R3 stream into its own index
// through its own durable consumer. While the Synthea sample and a
// concurrent churn of creates, updates and deletes are published (each
// event retried until acked), a NATS node that does not lead the stream
// is killed with SIGKILL and restarted, then the stream leader is, with
// an export running. Then both replicas must have applied the stream
// head; their full and _since exports must be byte-identical (files and
// transactionTime), the full export must equal the publisher's truth
// (every acked upsert present with its last body apart from meta, every
// acked delete absent), and the export taken during the faults chained
// with a _since export from the other replica must equal it too.
func TestClusterReplicasAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and kills its nodes")
	}
	begin := time.Now()
	c := startNATSCluster(t, 3)
	urls := c.URLs()
	t.Logf("nats cluster up in %v: %s", time.Since(begin).Round(time.Millisecond), urls)

	var dirs []string
	var procs []*proc
	replica := func(durable string) (string, *proc) {
		dir := t.TempDir()
		p := start(t, "serve", "--nats-url", urls, "--replicas", "3", "--durable", durable,
			"--data-dir", dir, "--listen", anyPort)
		addr := p.serving(t).HTTP
		waitReady(t, addr)
		dirs, procs = append(dirs, dir), append(procs, p)
		return addr, p
	}
	addrA, _ := replica("bulkstream-a")
	addrB, _ := replica("bulkstream-b")
	baseA, baseB := "http://"+addrA+"/fhir", "http://"+addrB+"/fhir"

	_, js := connectJS(t, urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	w, ctx, stop := newClusterWork(t, js, 3*time.Minute)

	sample := loadSample(t)
	pubStart := time.Now()
	w.runSample(ctx, sample, 16)
	w.runChurn(ctx, 4)
	failed := func() {
		t.Helper()
		select {
		case err := <-w.errs:
			t.Fatal(err)
		default:
		}
	}

	// A node that does not lead the stream dies while events are
	// published, and comes back.
	seq := waitStreamGrows(t, js, 0, 3000, 30*time.Second)
	leader := c.waitStreamLeader(js, ingest.DefaultStream, 10*time.Second)
	victim := (leader + 1) % len(c.nodes)
	c.kill9(victim)
	t.Logf("killed %s (not the stream leader %s) at stream sequence %d", c.nodes[victim].name, c.nodes[leader].name, seq)
	seq = waitStreamGrows(t, js, seq, 2000, 30*time.Second)
	c.restart(victim)
	t.Logf("restarted %s at stream sequence %d; healthy", c.nodes[victim].name, seq)
	failed()

	// An export runs on replica A while the stream leader dies.
	midStatus := kickoffExport(t, http.DefaultClient, baseA, "")
	leader = c.waitStreamLeader(js, ingest.DefaultStream, 10*time.Second)
	seq, _ = clusterLastSeq(js)
	c.kill9(leader)
	killed := time.Now()
	t.Logf("killed the stream leader %s at stream sequence %d", c.nodes[leader].name, seq)
	newLeader := c.waitStreamLeader(js, ingest.DefaultStream, 30*time.Second)
	t.Logf("new stream leader %s after %v", c.nodes[newLeader].name, time.Since(killed).Round(time.Millisecond))
	seq = waitStreamGrows(t, js, seq, 2000, 30*time.Second)
	c.restart(leader)
	t.Logf("restarted %s at stream sequence %d; healthy", c.nodes[leader].name, seq)
	failed()

	// Publishing ends: the sample, then the churn.
	select {
	case <-w.sampleDone:
	case err := <-w.errs:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("the sample was not published in time")
	}
	stop()
	failed()
	last, err := clusterLastSeq(js)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("published in %v: %d events acked (%d sample, %d churn), %d attempts retried; stream last sequence %d",
		time.Since(pubStart).Round(time.Millisecond), w.pub.acked.Load(), len(sample), w.churned.Load(), w.pub.retried.Load(), last)
	if got := uint64(w.pub.acked.Load()); last < got {
		t.Errorf("stream last sequence %d < %d events acked", last, got)
	}

	// Both replicas apply the whole stream.
	waitAppliedSeq(t, addrA, last, time.Minute)
	waitAppliedSeq(t, addrB, last, time.Minute)
	t.Logf("both replicas applied sequence %d, %v after publishing began", last, time.Since(pubStart).Round(time.Millisecond))

	mid := finishedManifest(t, midStatus)
	midResources := downloadExport(t, mid).resources
	t.Logf("export during the leader's death: transactionTime %s, %d resources", mid.TransactionTime, len(midResources))

	// Full and _since exports on both replicas, byte for byte.
	since := url.Values{"_since": {mid.TransactionTime}}.Encode()
	fullA, fullB := kickoffExport(t, http.DefaultClient, baseA, ""), kickoffExport(t, http.DefaultClient, baseB, "")
	sinceA, sinceB := kickoffExport(t, http.DefaultClient, baseA, since), kickoffExport(t, http.DefaultClient, baseB, since)
	mFullA, mFullB := finishedManifest(t, fullA), finishedManifest(t, fullB)
	mSinceA, mSinceB := finishedManifest(t, sinceA), finishedManifest(t, sinceB)
	full := sameExport(t, "full export", mFullA, mFullB)
	changes := sameExport(t, "_since export", mSinceA, mSinceB)
	if mFullA.TransactionTime != mSinceA.TransactionTime {
		t.Errorf("transactionTime of the full export %s, of the _since export %s, on the same head", mFullA.TransactionTime, mSinceA.TransactionTime)
	}

	// The full export is the publisher's truth.
	if len(full.deleted) != 0 {
		t.Errorf("full export lists %d deletions", len(full.deleted))
	}
	matchesTruth(t, "full export", full.resources, w.truth)

	// The export taken during the faults (replica A), with the _since
	// export (the same on both replicas) applied to it, is the truth too.
	mirror := midResources
	for key, r := range changes.resources {
		var m struct{ Meta struct{ LastUpdated string } }
		if err := json.Unmarshal(r, &m); err != nil {
			t.Fatal(err)
		}
		if m.Meta.LastUpdated <= mid.TransactionTime {
			t.Errorf("_since export: %s lastUpdated %s, not after _since %s", key, m.Meta.LastUpdated, mid.TransactionTime)
		}
		mirror[key] = r
	}
	w.truth.mu.Lock()
	for _, ref := range changes.deleted {
		if !w.truth.deleted[ref] {
			t.Errorf("_since export lists the deletion of %s, which no acked delete left deleted", ref)
		}
		delete(mirror, ref)
	}
	w.truth.mu.Unlock()
	matchesTruth(t, "export during the faults + _since export", mirror, w.truth)

	// Both indexes hold the same keys and values, the patient compartment,
	// Group member and Provenance target keys included: each replica
	// derived them from the stream alone.
	for _, p := range procs {
		p.stop(t)
	}
	digestA, keysA := dumpIndex(t, filepath.Join(dirs[0], "index"))
	digestB, keysB := dumpIndex(t, filepath.Join(dirs[1], "index"))
	if digestA != digestB || keysA != keysB {
		t.Errorf("replica indexes differ: %d keys %s and %d keys %s", keysA, digestA, keysB, digestB)
	}
	t.Logf("_since %s: %d changed, %d deleted; indexes of %d keys agree; test took %v", mid.TransactionTime,
		len(changes.resources), len(changes.deleted), keysA, time.Since(begin).Round(time.Millisecond))
}
