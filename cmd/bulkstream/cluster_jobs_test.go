package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/ingest"
)

// sharedReplica is one `serve` of TestClusterSharedJobs: cluster mode,
// jobs in the shared KV bucket, files in the shared Object Store.
type sharedReplica struct {
	id   string
	dir  string // --data-dir, kept across a restart
	addr string // HTTP listener; "" while stopped
	p    *proc
}

// sharedCluster is the replicas of TestClusterSharedJobs and the client
// that sends each request to a replica picked at random.
type sharedCluster struct {
	t    *testing.T
	urls string // every NATS node
	reps []*sharedReplica
	rng  *rand.Rand
	hc   *http.Client // no transparent gzip: the test sees Content-Encoding

	retried503 int // kick-offs, polls and downloads answered 503 and retried
	// stale404 counts file downloads a replica answered 404 although
	// another replica had served the job's manifest (it is retried until
	// it succeeds, so the rest of the test still runs, and fails the test
	// at the end).
	stale404 int
}

const sharedLease = 2 * time.Second

func (sc *sharedCluster) startReplica(r *sharedReplica) {
	t := sc.t
	t.Helper()
	r.p = start(t, "serve", "--nats-url", sc.urls, "--replicas", "3",
		"--replica-id", r.id, "--job-store", "kv", "--file-store", "objectstore",
		"--job-lease", sharedLease.String(), "--file-max-resources", "5000",
		"--data-dir", r.dir, "--listen", anyPort)
	r.addr = r.p.serving(t).HTTP
	waitReady(t, r.addr)
}

func (sc *sharedCluster) kill9(r *sharedReplica) {
	r.p.kill9()
	r.p, r.addr = nil, ""
}

func (sc *sharedCluster) live() []*sharedReplica {
	var out []*sharedReplica
	for _, r := range sc.reps {
		if r.p != nil {
			out = append(out, r)
		}
	}
	return out
}

// pick is a running replica at random, other than not when another runs.
func (sc *sharedCluster) pick(not ...*sharedReplica) *sharedReplica {
	all := sc.live()
	cands := slices.DeleteFunc(slices.Clone(all), func(r *sharedReplica) bool { return slices.Contains(not, r) })
	if len(cands) == 0 {
		cands = all
	}
	return cands[sc.rng.IntN(len(cands))]
}

func (sc *sharedCluster) base(r *sharedReplica) string { return "http://" + r.addr + "/fhir" }

// on is u (a status or file URL) on replica r.
func (sc *sharedCluster) on(u string, r *sharedReplica) string { return onAddr(sc.t, u, r.addr) }

// retryAfter sleeps for a 503's Retry-After (at most 2 s) and counts it.
func (sc *sharedCluster) retryAfter(resp *http.Response) {
	sc.retried503++
	d := time.Second
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		d = min(time.Duration(s)*time.Second, 2*time.Second)
	}
	time.Sleep(d)
}

// kickoff starts an export on r, retrying a 503 or 429 after its
// Retry-After, and returns the status URL.
func (sc *sharedCluster) kickoff(r *sharedReplica, query string) string {
	t := sc.t
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, body := kickoffResponse(t, sc.hc, sc.base(r), query)
		switch resp.StatusCode {
		case http.StatusAccepted:
			return resp.Header.Get("Content-Location")
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			if time.Now().After(deadline) {
				t.Fatalf("kick-off %s on replica %s: still %d after a minute: %s", query, r.id, resp.StatusCode, body)
			}
			sc.retryAfter(resp)
		default:
			t.Fatalf("kick-off %s on replica %s: %d %s", query, r.id, resp.StatusCode, body)
		}
	}
}

// poll polls status on r until the job completed and returns its
// manifest: with Prefer: wait=10, or plainly after each Retry-After.
func (sc *sharedCluster) poll(r *sharedReplica, status string, total time.Duration) manifest {
	t := sc.t
	t.Helper()
	u := sc.on(status, r)
	wait := sc.rng.IntN(2) == 0
	deadline := time.Now().Add(total)
	for time.Now().Before(deadline) {
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if wait {
			req.Header.Set("Prefer", "wait=10")
		}
		resp, err := sc.hc.Do(req)
		if err != nil {
			t.Fatalf("poll %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var m manifest
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("manifest from replica %s: %v\n%s", r.id, err, body)
			}
			return m
		case http.StatusAccepted:
			if resp.Header.Get("X-Progress") == "" || resp.Header.Get("Retry-After") == "" {
				t.Errorf("replica %s: 202 without X-Progress or Retry-After: %v", r.id, resp.Header)
			}
			if !wait {
				s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
				time.Sleep(time.Duration(max(s, 1)) * time.Second)
			}
		case http.StatusServiceUnavailable:
			sc.retryAfter(resp)
		default:
			t.Fatalf("poll %s on replica %s: %d %s", u, r.id, resp.StatusCode, body)
		}
	}
	t.Fatalf("export %s not complete on replica %s after %v", status, r.id, total)
	return manifest{}
}

// get sends GET u with headers h; a 503 is retried after its
// Retry-After.
func (sc *sharedCluster) get(u string, h http.Header) (*http.Response, []byte) {
	t := sc.t
	t.Helper()
	for range 30 {
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := sc.hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: reading the body: %v", u, err)
		}
		if sc.again(u, resp, b) {
			continue
		}
		return resp, b
	}
	t.Fatalf("GET %s: 503 or 404 thirty times", u)
	return nil, nil
}

// again reports whether GET u should be sent again after resp (body b):
// after a 503's Retry-After, or shortly after a file's 404, counted in
// stale404 (see there).
func (sc *sharedCluster) again(u string, resp *http.Response, b []byte) bool {
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		sc.retryAfter(resp)
		return true
	case resp.StatusCode == http.StatusNotFound && strings.Contains(u, "/bulkfiles/"):
		if sc.stale404++; sc.stale404 <= 5 {
			sc.t.Logf("GET %s: 404 %s; retrying", u, b)
		}
		time.Sleep(200 * time.Millisecond)
		return true
	}
	return false
}

// whole downloads file u from r, uncompressed on the wire, and returns
// its bytes and strong ETag.
func (sc *sharedCluster) whole(u string, r *sharedReplica) ([]byte, string) {
	t := sc.t
	t.Helper()
	resp, b := sc.get(sc.on(u, r), http.Header{"Accept-Encoding": {"identity"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s on replica %s: %d %s", u, r.id, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+ndjson") {
		t.Errorf("GET %s on replica %s: Content-Type %q", u, r.id, ct)
	}
	return b, resp.Header.Get("ETag")
}

// gzipped downloads file u from r gzip-encoded and returns it decoded.
func (sc *sharedCluster) gzipped(u string, r *sharedReplica) []byte {
	t := sc.t
	t.Helper()
	resp, b := sc.get(sc.on(u, r), http.Header{"Accept-Encoding": {"gzip"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s (gzip) on replica %s: %d %s", u, r.id, resp.StatusCode, b)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		if len(b) > 0 {
			t.Errorf("GET %s on replica %s: Accept-Encoding gzip answered Content-Encoding %q", u, r.id, resp.Header.Get("Content-Encoding"))
		}
		return b
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("GET %s (gzip) on replica %s: %v", u, r.id, err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("GET %s (gzip) on replica %s: %v", u, r.id, err)
	}
	return out
}

// resumed downloads file u as a client cut off half way does: the first
// half of its bytes from replica a, then the rest from replica b with
// Range: bytes=N- and If-Range the ETag a sent, which must answer 206.
func (sc *sharedCluster) resumed(u string, a, b *sharedReplica) []byte {
	t := sc.t
	t.Helper()
	var resp *http.Response
	for try := 0; ; try++ {
		var err error
		resp, err = sc.hc.Do(mustRequest(t, sc.on(u, a), http.Header{"Accept-Encoding": {"identity"}}))
		if err != nil {
			t.Fatalf("GET %s on replica %s: %v", u, a.id, err)
		}
		if resp.StatusCode == http.StatusOK || try == 30 {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !sc.again(sc.on(u, a), resp, b) {
			t.Fatalf("GET %s on replica %s: %d %s", u, a.id, resp.StatusCode, b)
		}
	}
	size := resp.ContentLength
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || size < 0 || etag == "" {
		resp.Body.Close()
		t.Fatalf("GET %s on replica %s: %d, Content-Length %d, ETag %q", u, a.id, resp.StatusCode, size, etag)
	}
	half := size / 2
	first := make([]byte, half)
	_, err := io.ReadFull(resp.Body, first)
	resp.Body.Close() // the client is cut off
	if err != nil {
		t.Fatalf("GET %s on replica %s: reading %d bytes: %v", u, a.id, half, err)
	}
	if half == size {
		return first
	}
	resp2, rest := sc.get(sc.on(u, b), http.Header{
		"Accept-Encoding": {"identity"},
		"Range":           {fmt.Sprintf("bytes=%d-", half)},
		"If-Range":        {etag},
	})
	if resp2.StatusCode != http.StatusPartialContent {
		t.Fatalf("resume of %s on replica %s (Range bytes=%d-, If-Range %s from replica %s): %d, want 206 (ETag there %q)",
			u, b.id, half, etag, a.id, resp2.StatusCode, resp2.Header.Get("ETag"))
	}
	if want := fmt.Sprintf("bytes %d-%d/%d", half, size-1, size); resp2.Header.Get("Content-Range") != want {
		t.Errorf("resume of %s on replica %s: Content-Range %q, want %q", u, b.id, resp2.Header.Get("Content-Range"), want)
	}
	return append(first, rest...)
}

func mustRequest(t testing.TB, u string, h http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	return req
}

// fileURLs is every file of m: outputs, then deletions, as parseExport
// reads them.
func fileURLs(m manifest) []string {
	var us []string
	for _, o := range m.Output {
		us = append(us, o.URL)
	}
	for _, d := range m.Deleted {
		us = append(us, d.URL)
	}
	return us
}

// fetchAny downloads every file of m, each from a replica other than
// those in not when one runs (picked at random), in a way picked at
// random: whole, gzipped, or cut half way and resumed on another replica.
func (sc *sharedCluster) fetchAny(m manifest, not ...*sharedReplica) [][]byte {
	var files [][]byte
	for _, u := range fileURLs(m) {
		r := sc.pick(not...)
		var b []byte
		switch sc.rng.IntN(3) {
		case 0:
			b, _ = sc.whole(u, r)
		case 1:
			b = sc.gzipped(u, r)
		default:
			b = sc.resumed(u, r, sc.pick(r))
		}
		files = append(files, b)
	}
	return files
}

// jobID is the id at the end of a status URL.
func jobID(status string) string { return path.Base(status) }

// sharedJobRecord is what the test reads of a job's record in the KV
// bucket (export's jobRecord).
type sharedJobRecord struct {
	State string `json:"state"`
	Owner string `json:"owner"`
	Runs  int    `json:"runs"`
}

// TestClusterSharedJobs runs three serve replicas in cluster mode (jobs
// in a JetStream KV bucket, files in an Object Store, --job-lease 2s) on
// a 3-node NATS cluster, and a client that sends each request to a
// replica picked at random:
//
//   - while the Synthea sample and a churn of creates, updates and
//     deletes are published (each retried until acked), it chains _since
//     exports — kick-off on one replica, status on another (Prefer: wait
//     or plain polls after Retry-After), each file from another still
//     (whole, gzipped, or cut half way and resumed with Range and If-Range
//     on another replica) — applying outputs and deletions to a mirror;
//     transactionTime never decreases along the chain, every file has its
//     manifest count of lines, and once the churn stopped and a last
//     export is chained, the mirror equals the publisher's truth: every
//     acked upsert with its last body (apart from meta), every acked
//     delete absent, every deletion listed an acked one. A NATS node that
//     does not lead the stream is killed with SIGKILL during one export
//     and restarted after it. A cancel on one replica removes the job on
//     every other;
//   - with the churn stopped, the replica running a full export is killed
//     with SIGKILL: another replica reports the job as running on the
//     dead one, then takes it over once the lease and its grace have
//     passed and completes it; every survivor serves the same manifest
//     and the same files byte for byte (same ETag, gzip, and a download
//     resumed across replicas), and the export equals the truth.
func TestClusterSharedJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and three serve replicas, and kills them")
	}
	begin := time.Now()
	c := startNATSCluster(t, 3)
	seed := uint64(time.Now().UnixNano())
	t.Logf("nats cluster up in %v; client seed %d", time.Since(begin).Round(time.Millisecond), seed)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	sc := &sharedCluster{
		t: t, urls: c.URLs(), rng: rand.New(rand.NewPCG(seed, 15)),
		hc: &http.Client{Transport: tr, Timeout: time.Minute},
	}
	defer func() {
		if sc.stale404 > 0 {
			t.Errorf("%d file downloads answered 404 on a replica after another had served the job's manifest (then 200 on a retry)", sc.stale404)
		}
	}()
	for _, id := range []string{"a", "b", "c"} {
		r := &sharedReplica{id: id, dir: t.TempDir()}
		sc.startReplica(r)
		sc.reps = append(sc.reps, r)
	}
	t.Logf("3 replicas ready after %v", time.Since(begin).Round(time.Millisecond))

	_, js := connectJS(t, sc.urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	w, ctx, stop := newClusterWork(t, js, 4*time.Minute)
	failed := func() {
		t.Helper()
		select {
		case err := <-w.errs:
			t.Fatal(err)
		default:
		}
	}

	sample := loadSample(t)
	pubStart := time.Now()
	w.runSample(ctx, sample, 16)
	w.runChurn(ctx, 4)

	// The chain of exports, while events are published.
	mirror := map[string]json.RawMessage{}
	var listedDeleted []string
	var last manifest
	var lastTT time.Time
	links := 0
	link := func(during func(status string)) {
		t.Helper()
		query := ""
		if links > 0 {
			query = url.Values{"_since": {last.TransactionTime}}.Encode()
		}
		kick := sc.pick()
		status := sc.kickoff(kick, query)
		if during != nil {
			during(status)
		}
		poller := sc.pick(kick)
		m := sc.poll(poller, status, 2*time.Minute)
		e := parseExport(t, m, sc.fetchAny(m, kick, poller))
		tt := parseInstant(t, m.TransactionTime)
		if tt.Before(lastTT) {
			t.Errorf("link %d: transactionTime %s before the previous one, %s", links, m.TransactionTime, last.TransactionTime)
		}
		for key, r := range e.resources {
			if links > 0 {
				var meta struct{ Meta struct{ LastUpdated string } }
				if err := json.Unmarshal(r, &meta); err != nil {
					t.Fatal(err)
				}
				if !parseInstant(t, meta.Meta.LastUpdated).After(lastTT) {
					t.Errorf("link %d: %s lastUpdated %s, not after _since %s", links, key, meta.Meta.LastUpdated, last.TransactionTime)
				}
			}
			mirror[key] = r
		}
		for _, ref := range e.deleted {
			if _, ok := e.resources[ref]; ok {
				t.Errorf("link %d: %s is both exported and listed deleted", links, ref)
			}
			delete(mirror, ref)
		}
		listedDeleted = append(listedDeleted, e.deleted...)
		t.Logf("link %d: kick-off on %s, status on %s, %d changed, %d deleted, transactionTime %s",
			links, kick.id, poller.id, len(e.resources), len(e.deleted), m.TransactionTime)
		last, lastTT = m, tt
		links++
	}

	link(nil) // the first: a full export
	failed()

	// A NATS node that does not lead the stream dies during an export
	// and comes back after it.
	leader := c.waitStreamLeader(js, ingest.DefaultStream, 10*time.Second)
	victim := (leader + 1) % len(c.nodes)
	link(func(string) {
		c.kill9(victim)
		t.Logf("killed nats %s (the stream leader is %s)", c.nodes[victim].name, c.nodes[leader].name)
	})
	link(nil)
	c.restart(victim)
	t.Logf("restarted nats %s; healthy", c.nodes[victim].name)
	failed()

	// A cancel on one replica removes the job on every other.
	{
		kick := sc.pick()
		status := sc.kickoff(kick, url.Values{"_since": {last.TransactionTime}}.Encode())
		canceller := sc.pick(kick)
		req, _ := http.NewRequest("DELETE", sc.on(status, canceller), nil)
		resp, err := sc.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("cancel on replica %s of a job kicked off on %s: %d %s", canceller.id, kick.id, resp.StatusCode, b)
		}
		// A replica whose job watch was served by the NATS node killed
		// above hears of the cancel only once the NATS client has
		// recreated the watch's ordered consumer: after two missed 5 s
		// heartbeats, and one 10 s check later if the cluster was not
		// ready for the first attempt.
		for _, r := range sc.live() {
			checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
				resp, b := sc.get(sc.on(status, r), nil)
				if resp.StatusCode != http.StatusNotFound {
					return fmt.Errorf("replica %s: status of a job cancelled on %s: %d %s", r.id, canceller.id, resp.StatusCode, b)
				}
				return nil
			})
		}
		t.Logf("cancelled on %s a job kicked off on %s: 404 on every replica", canceller.id, kick.id)
	}

	for {
		select {
		case <-w.sampleDone:
		case err := <-w.errs:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("the sample was not published in time")
		default:
			link(nil)
			continue
		}
		break
	}
	link(nil) // some churn after the sample
	stop()
	failed()
	t.Logf("published in %v: %d events acked (%d sample, %d churn), %d attempts retried",
		time.Since(pubStart).Round(time.Millisecond), w.pub.acked.Load(), len(sample), w.churned.Load(), w.pub.retried.Load())
	link(nil) // after the last acked change
	matchesTruth(t, fmt.Sprintf("mirror of %d chained exports", links), mirror, w.truth)
	w.truth.mu.Lock()
	for _, ref := range listedDeleted {
		if !w.truth.deleted[ref] {
			t.Errorf("the chain lists the deletion of %s, which no acked delete left deleted", ref)
		}
	}
	w.truth.mu.Unlock()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d chained exports equal the truth (%d resources); %v so far", links, len(mirror), time.Since(begin).Round(time.Millisecond))

	// The replica running a job dies; another takes the job over.
	kv, err := js.KeyValue(ctx, defaultJobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	var status string
	var dead *sharedReplica
	var killed time.Time
	var records *recordLog
	for attempt := 1; ; attempt++ {
		kick := sc.pick()
		status = sc.kickoff(kick, "")
		records = watchRecord(t, ctx, kv, jobID(status))
		run := records.waitFor(t, 30*time.Second, func(r sharedJobRecord) bool {
			return r.State == "running" && r.Owner != "" || r.State == "completed"
		})
		if run.State == "completed" {
			records.stop()
			if attempt == 3 {
				t.Fatalf("3 full exports completed before the test saw them running")
			}
			t.Logf("attempt %d: job %s completed before the watch saw it running; trying again", attempt, jobID(status))
			continue
		}
		owner := run.Owner
		i := slices.IndexFunc(sc.reps, func(r *sharedReplica) bool { return r.id == owner })
		if i < 0 {
			t.Fatalf("job %s runs on %q, not a replica", jobID(status), owner)
		}
		dead = sc.reps[i]
		sc.kill9(dead)
		killed = time.Now()
		// Whether the job outlived its owner: the owner may have written
		// the completed record just before it died.
		completedFirst := records.waitFor(t, 30*time.Second, func(r sharedJobRecord) bool { return r.State != "running" || r.Owner != owner }).State == "completed"
		if !completedFirst {
			break
		}
		records.stop()
		if attempt == 3 {
			t.Fatalf("3 full exports completed before their replica was killed")
		}
		t.Logf("attempt %d: replica %s completed job %s before it was killed; restarting it and trying again", attempt, owner, jobID(status))
		sc.startReplica(dead)
	}
	defer records.stop()
	t.Logf("killed replica %s running job %s", dead.id, jobID(status))
	// Until the lease and its grace have passed, the survivors report the
	// job as running on the dead replica.
	for _, r := range sc.live() {
		resp, b := sc.get(sc.on(status, r), nil)
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Progress") != "running on replica "+dead.id {
			if time.Since(killed) < 5*time.Second { // export.DefaultLeaseGrace: no takeover before
				t.Errorf("replica %s, right after replica %s died: %d X-Progress %q, want 202 \"running on replica %s\" (%s)",
					r.id, dead.id, resp.StatusCode, resp.Header.Get("X-Progress"), dead.id, b)
			}
		}
	}
	survivors := sc.live()
	m := sc.poll(survivors[0], status, time.Minute)
	done := time.Since(killed)
	final := records.waitFor(t, 10*time.Second, func(r sharedJobRecord) bool { return r.State == "completed" })
	if final.Owner == dead.id || final.Runs < 2 {
		t.Errorf("job %s completed by %q after %d runs; want another replica than %s, a second run", jobID(status), final.Owner, final.Runs, dead.id)
	}
	t.Logf("replica %s took job %s over and completed it %v after replica %s died; records seen: %s",
		final.Owner, jobID(status), done.Round(time.Millisecond), dead.id, records)

	// Every survivor serves it, byte for byte.
	manifests := []manifest{m}
	for _, r := range survivors[1:] {
		manifests = append(manifests, sc.poll(r, status, 10*time.Second))
	}
	var files [][]byte
	size := 0
	for i, u := range fileURLs(m) {
		var first []byte
		var etag string
		for k, r := range survivors {
			mk := manifests[k]
			if len(fileURLs(mk)) != len(fileURLs(m)) || mk.TransactionTime != m.TransactionTime {
				t.Fatalf("replica %s: manifest with %d files, transactionTime %s; replica %s: %d, %s",
					r.id, len(fileURLs(mk)), mk.TransactionTime, survivors[0].id, len(fileURLs(m)), m.TransactionTime)
			}
			b, tag := sc.whole(fileURLs(mk)[i], r)
			if k == 0 {
				first, etag = b, tag
				continue
			}
			if !bytes.Equal(b, first) {
				t.Errorf("%s: %d bytes on replica %s, %d different ones on %s", path.Base(u), len(b), r.id, len(first), survivors[0].id)
			}
			if tag != etag {
				t.Errorf("%s: ETag %s on replica %s, %s on %s", path.Base(u), tag, r.id, etag, survivors[0].id)
			}
		}
		for k, r := range survivors {
			if g := sc.gzipped(u, r); !bytes.Equal(g, first) {
				t.Errorf("%s gzipped on replica %s: %d bytes decoded, want the %d of the file", path.Base(u), r.id, len(g), len(first))
			}
			next := survivors[(k+1)%len(survivors)]
			if got := sc.resumed(u, r, next); !bytes.Equal(got, first) {
				t.Errorf("%s: first half from replica %s, rest from %s: %d bytes, not the file's %d", path.Base(u), r.id, next.id, len(got), len(first))
			}
		}
		files = append(files, first)
		size += len(first)
	}
	full := parseExport(t, m, files)
	if len(full.deleted) != 0 {
		t.Errorf("full export lists %d deletions", len(full.deleted))
	}

	matchesTruth(t, "export taken over", full.resources, w.truth)
	t.Logf("export taken over: %d files, %d bytes, %d resources, identical on replicas %s; %d answers 503 retried; test took %v",
		len(files), size, len(full.resources), replicaIDs(survivors), sc.retried503, time.Since(begin).Round(time.Millisecond))
}

func replicaIDs(rs []*sharedReplica) string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.id)
	}
	return strings.Join(ids, ",")
}

// recordLog is every version of one job's record the KV watch delivered.
type recordLog struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on each record
	recs    []sharedJobRecord
	next    int // where waitFor looks next
	err     error
	w       jetstream.KeyWatcher
	done    chan struct{}
}

// watchRecord follows the record of job id in kv until stop.
func watchRecord(t *testing.T, ctx context.Context, kv jetstream.KeyValue, id string) *recordLog {
	t.Helper()
	kw, err := kv.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	l := &recordLog{changed: make(chan struct{}), w: kw, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for e := range kw.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var r sharedJobRecord
			err := json.Unmarshal(e.Value(), &r)
			l.mu.Lock()
			if err != nil && l.err == nil {
				l.err = fmt.Errorf("record of %s at revision %d: %v", id, e.Revision(), err)
			}
			l.recs = append(l.recs, r)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// waitFor returns the first record for which ok holds, in the order
// written, after the one waitFor returned last.
func (l *recordLog) waitFor(t *testing.T, total time.Duration, ok func(sharedJobRecord) bool) sharedJobRecord {
	t.Helper()
	timeout := time.After(total)
	for {
		l.mu.Lock()
		if l.err != nil {
			l.mu.Unlock()
			t.Fatal(l.err)
		}
		for i := l.next; i < len(l.recs); i++ {
			if r := l.recs[i]; ok(r) {
				l.next = i + 1
				l.mu.Unlock()
				return r
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no such job record within %v; seen: %s", total, l)
			return sharedJobRecord{}
		}
	}
}

func (l *recordLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []string
	for _, r := range l.recs {
		s = append(s, fmt.Sprintf("%s/%s/%d", r.State, r.Owner, r.Runs))
	}
	return strings.Join(s, " → ")
}

// stop ends the watch and waits for its goroutine.
func (l *recordLog) stop() {
	l.w.Stop() // closes Updates, which ends the goroutine
	<-l.done
}

// TestClusterFileAfterManifest is the smallest form of a download that
// TestClusterSharedJobs makes: two cluster-mode replicas on one NATS
// server, a small export kicked off on replica a and polled on b with
// Prefer: wait until b serves the manifest, then every file fetched at
// once from a and from b. Once any replica has handed out a manifest,
// every replica must serve its files: a client behind a load balancer
// downloads from whichever replica it reaches, and a 404 is final.
func TestClusterFileAfterManifest(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two serve replicas and a hundred exports")
	}
	ns := runNATS(t)
	urls := ns.ClientURL()
	sc := &sharedCluster{t: t, urls: urls, rng: rand.New(rand.NewPCG(1, 15)), hc: &http.Client{Timeout: time.Minute}}
	for _, id := range []string{"a", "b"} {
		r := &sharedReplica{id: id, dir: t.TempDir()}
		r.p = start(t, "serve", "--nats-url", urls, "--replicas", "1",
			"--replica-id", r.id, "--job-store", "kv", "--file-store", "objectstore",
			"--data-dir", r.dir, "--listen", anyPort)
		r.addr = r.p.serving(t).HTTP
		waitReady(t, r.addr)
		sc.reps = append(sc.reps, r)
	}
	a, b := sc.reps[0], sc.reps[1]
	_, js := connectJS(t, urls)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20 {
		id := fmt.Sprintf("after-%02d", i)
		if _, err := js.PublishMsg(ctx, upsertMsg("Patient", id, id, churnPatient(id, 1))); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, defaultJobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	owner := func(id string) string {
		e, err := kv.Get(ctx, id)
		if err != nil {
			return err.Error()
		}
		var r sharedJobRecord
		json.Unmarshal(e.Value(), &r)
		return fmt.Sprintf("%s by %s", r.State, r.Owner)
	}
	const rounds = 100
	missing := 0
	for i := range rounds {
		status := kickoffExport(t, sc.hc, sc.base(a), "_type=Patient")
		req := mustRequest(t, sc.on(status, b), http.Header{"Prefer": {"wait=10"}})
		var m manifest
		checkFor(t, time.Minute, 0, func() error {
			resp, err := sc.hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status on b: %d", resp.StatusCode)
			}
			return json.NewDecoder(resp.Body).Decode(&m)
		})
		for _, u := range fileURLs(m) {
			for _, r := range sc.reps {
				resp, body := sc.rawGet(sc.on(u, r))
				switch resp.StatusCode {
				case http.StatusOK:
				case http.StatusNotFound:
					if missing++; missing <= 3 {
						t.Errorf("round %d: replica b served the manifest of job %s (record: %s), then replica %s answered 404 for %s: %s",
							i, jobID(status), owner(jobID(status)), r.id, path.Base(u), body)
					}
				default:
					t.Fatalf("round %d: GET %s on replica %s: %d %s", i, u, r.id, resp.StatusCode, body)
				}
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d downloads answered 404 right after another replica served the manifest", missing, 2*rounds)
	}
}

// rawGet is one GET of u, its body read.
func (sc *sharedCluster) rawGet(u string) (*http.Response, []byte) {
	sc.t.Helper()
	resp, err := sc.hc.Do(mustRequest(sc.t, u, http.Header{"Accept-Encoding": {"identity"}}))
	if err != nil {
		sc.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestClusterExportThroughBucketLeaderKill kills with SIGKILL the NATS
// node that leads the Object Store bucket of the export files, kicks an
// export off at once, and checks that the kick-off is accepted (or
// answered 503 with Retry-After until it is) and the export completes:
// the two other nodes keep every stream's quorum, so a transient error
// while a new leader is elected must neither be a 500 nor fail the job.
func TestClusterExportThroughBucketLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and kills a node")
	}
	c := startNATSCluster(t, 3)
	urls := c.URLs()
	sc := &sharedCluster{t: t, urls: urls, rng: rand.New(rand.NewPCG(2, 15)), hc: &http.Client{Timeout: time.Minute}}
	for _, id := range []string{"a", "b"} {
		r := &sharedReplica{id: id, dir: t.TempDir()}
		sc.startReplica(r)
		sc.reps = append(sc.reps, r)
	}
	_, js := connectJS(t, urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20 {
		id := fmt.Sprintf("leader-%02d", i)
		if _, err := js.PublishMsg(ctx, upsertMsg("Patient", id, id, churnPatient(id, 1))); err != nil {
			t.Fatal(err)
		}
	}
	// One export first, so that the bucket holds files.
	a := sc.reps[0]
	sc.poll(a, sc.kickoff(a, ""), time.Minute)
	bucket := "OBJ_" + defaultFilesBucket
	victim := c.waitStreamLeader(js, bucket, 10*time.Second)
	c.kill9(victim)
	t.Logf("killed nats %s, leader of %s", c.nodes[victim].name, bucket)
	// A kick-off the replica cannot record now is a 503 with Retry-After
	// (the client tries again), never a 500.
	var status string
	checkFor(t, 30*time.Second, 0, func() error {
		resp, body := kickoffResponse(t, sc.hc, sc.base(a), "")
		switch resp.StatusCode {
		case http.StatusAccepted:
			status = resp.Header.Get("Content-Location")
			return nil
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			sc.retryAfter(resp)
		default:
			t.Errorf("kick-off while the leader of %s is dead: %d %s; want 202, or 503 with Retry-After", bucket, resp.StatusCode, body)
			time.Sleep(time.Second)
		}
		return fmt.Errorf("kick-off: %d", resp.StatusCode)
	})
	code, body := pollExport(t, status, 2*time.Minute)
	if code != http.StatusOK {
		t.Errorf("export kicked off as the leader of %s died: %d %s", bucket, code, body)
	}
}
