package main

// Reliability suite, crash scenarios: kill -9 of the real binary during
// ingest (TestCrashLoopIngest) and during exports (TestCrashDuringExport).

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
)

// crashSeed is the seed of the random kill moments and of the generated
// changes; each test logs it. BULKSTREAM_CRASH_SEED replays a run.
func crashSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BULKSTREAM_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BULKSTREAM_CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with BULKSTREAM_CRASH_SEED=%d)", seed, seed)
	return seed
}

// crashClient bounds every request of these tests: a server that stops
// answering fails the test instead of hanging it.
var crashClient = &http.Client{Timeout: 15 * time.Second}

// runBounded is runCmd with a time limit.
func runBounded(t *testing.T, limit time.Duration, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bulkstream %s: %v (limit %v)\n%s", strings.Join(args, " "), err, limit, out)
	}
}

// ackedEvent is one entry of the publisher's log: what was sent and what
// JetStream acked.
type ackedEvent struct {
	key  string // Type/id
	del  bool
	body []byte // upserts

	seq uint64 // stream sequence of the ack (of the original for a duplicate)
	dup bool   // acked as a duplicate of an earlier Nats-Msg-Id
}

// wantVersion is the versionId the index gives a resource whose stored
// events are es, in stream order: the sequence of the last one that
// changed it.
func wantVersion(t *testing.T, es []*ackedEvent) uint64 {
	var v uint64
	var cur string
	live := false
	for _, e := range es {
		if e.del {
			v, live = e.seq, false
			continue
		}
		if b := withoutMeta(t, e.body); !live || b != cur {
			v, cur, live = e.seq, b, true
		}
	}
	return v
}

func (e *ackedEvent) msg() *nats.Msg {
	typ, id, _ := strings.Cut(e.key, "/")
	m := &nats.Msg{Subject: ingest.EncodeSubject(ingest.DefaultSubjectPrefix, typ, id), Header: nats.Header{}}
	if e.del {
		// A fresh id per delete, as ingest.Publisher does; retries reuse it.
		var n [8]byte
		_, _ = crand.Read(n[:])
		m.Header.Set(ingest.HeaderOp, ingest.OpDelete)
		m.Header.Set(jetstream.MsgIDHeader, e.key+"/delete/"+hex.EncodeToString(n[:]))
		return m
	}
	sum := sha256.Sum256(e.body)
	m.Header.Set(jetstream.MsgIDHeader, e.key+"/"+hex.EncodeToString(sum[:8]))
	m.Data = e.body
	return m
}

// withLanguage returns body with a top-level "language" member, so the
// resource changes (a new Nats-Msg-Id) while staying valid FHIR; ok is
// false if body already has one.
func withLanguage(body []byte, lang string) ([]byte, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return nil, false
	}
	if _, ok := top["language"]; ok {
		return nil, false
	}
	i := bytes.IndexByte(body, '{')
	out := append([]byte(nil), body[:i+1]...)
	out = fmt.Appendf(out, `"language":%q,`, lang)
	return append(out, body[i+1:]...), true
}

// crashEvents builds the publisher's script from a gen output: every
// resource created; some republished unchanged (JetStream must drop them
// as duplicates); gen's updates; three more updates of some resources;
// gen's deletes; some deleted resources re-created, some of those deleted
// again.
func crashEvents(t *testing.T, gen string, rng *rand.Rand) []*ackedEvent {
	t.Helper()
	var evs []*ackedEvent
	var created []*ackedEvent
	readLines := func(name string) [][]byte {
		b, err := os.ReadFile(filepath.Join(gen, name))
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for l := range bytes.Lines(b) {
			if l = bytes.TrimSpace(l); len(l) > 0 {
				out = append(out, l)
			}
		}
		return out
	}
	keyOf := func(l []byte) string {
		var r struct{ ResourceType, ID string }
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		return r.ResourceType + "/" + r.ID
	}
	for _, l := range readLines(genResourcesFile) {
		e := &ackedEvent{key: keyOf(l), body: l}
		evs = append(evs, e)
		created = append(created, e)
	}
	for range 200 {
		c := created[rng.IntN(len(created))]
		evs = append(evs, &ackedEvent{key: c.key, body: c.body})
	}
	for _, l := range readLines(genUpdatesFile) {
		evs = append(evs, &ackedEvent{key: keyOf(l), body: l})
	}
	var deletes []string
	isDeleted := map[string]bool{}
	for _, l := range readLines(genDeletesFile) {
		deletes = append(deletes, string(l))
		isDeleted[string(l)] = true
	}
	var multi []*ackedEvent
	for len(multi) < 300 {
		c := created[rng.IntN(len(created))]
		if _, ok := withLanguage(c.body, "x"); ok && !isDeleted[c.key] {
			multi = append(multi, c)
		}
	}
	for round := range 3 {
		for _, c := range multi {
			b, _ := withLanguage(c.body, fmt.Sprintf("x-crash-%d", round))
			evs = append(evs, &ackedEvent{key: c.key, body: b})
		}
	}
	for _, k := range deletes {
		evs = append(evs, &ackedEvent{key: k, del: true})
	}
	body := map[string][]byte{}
	for _, c := range created {
		body[c.key] = c.body
	}
	var recreated []string
	for _, k := range deletes[:min(100, len(deletes))] {
		if b, ok := withLanguage(body[k], "x-recreated"); ok {
			evs = append(evs, &ackedEvent{key: k, body: b})
			recreated = append(recreated, k)
		}
	}
	for _, k := range recreated[:len(recreated)*2/5] {
		evs = append(evs, &ackedEvent{key: k, del: true})
	}
	return evs
}

// publishLogged publishes evs in order of each resource (events of one
// resource go through one worker, one after another), paced to take about
// d, retrying each message with its Nats-Msg-Id until it is acked, and
// records every ack in evs. acked counts the acks so far.
func publishLogged(ctx context.Context, js jetstream.JetStream, evs []*ackedEvent, d time.Duration, acked *atomic.Int64) error {
	const workers = 16
	parts := make([][]int, workers)
	for i, e := range evs {
		h := fnv.New32a()
		h.Write([]byte(e.key))
		w := h.Sum32() % workers
		parts[w] = append(parts[w], i)
	}
	start := time.Now()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for _, part := range parts {
		wg.Go(func() {
			for _, i := range part {
				if due := start.Add(time.Duration(int64(d) * int64(i) / int64(len(evs)))); time.Until(due) > 0 {
					time.Sleep(time.Until(due))
				}
				e := evs[i]
				m := e.msg()
				for {
					ack, err := js.PublishMsg(ctx, m)
					if err == nil {
						e.seq, e.dup = ack.Sequence, ack.Duplicate
						acked.Add(1)
						break
					}
					if ctx.Err() != nil {
						errs <- fmt.Errorf("publish %s: %w", e.key, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// indexEntry is one resource or tombstone read from an index.
type indexEntry struct {
	version    string
	deleted    bool
	resource   []byte
	commitTime uint64 // µs
}

// readIndex returns every resource and tombstone of the index in dir (its
// process must have exited), by Type/id.
func readIndex(t testing.TB, dir string) map[string]indexEntry {
	t.Helper()
	x, err := index.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	snap, err := x.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	out := map[string]indexEntry{}
	for _, tc := range snap.Counts() {
		err := snap.Scan(context.Background(), tc.Type, 0, index.Unbounded, func(e index.Entry) error {
			k := e.Type + "/" + e.ID
			if _, dup := out[k]; dup {
				return fmt.Errorf("%s has two entries", k)
			}
			if e.Deleted {
				out[k] = indexEntry{deleted: true, commitTime: e.CommitTime}
				return nil
			}
			var r struct {
				Meta struct{ VersionID string } `json:"meta"`
			}
			if err := json.Unmarshal(e.Resource, &r); err != nil {
				return err
			}
			out[k] = indexEntry{version: r.Meta.VersionID, resource: bytes.Clone(e.Resource), commitTime: e.CommitTime}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestCrashLoopIngest (reliability suite: crash during ingest) kill -9s the
// real binary at least 20 times while a publisher streams creates,
// duplicates, updates, deletes and re-creates, restarting it each time. A
// third of the kills land at a random moment after start (startup, consumer
// setup, catch-up); the others wait until the applied sequence moves
// (ingest is committing batches) and kill within a few milliseconds.
// Afterwards the index must reflect every event JetStream acked exactly
// once (checked against the publisher's own log of acks: version numbers,
// final content, deletions) and equal a clean replay of the stream
// (rebuild), byte for byte.
func TestCrashLoopIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds data and kills processes")
	}
	const minKills = 24
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))

	ns := runNATS(t)
	gen := t.TempDir()
	runCmd(t, "gen", "--sample", genSample, "--scale", "1",
		"--seed", strconv.FormatUint(seed%1000+1, 10), "--changes", "3000", "--out", gen)
	evs := crashEvents(t, gen, rng)

	natsURL := ns.ClientURL()
	data := t.TempDir()
	idx := filepath.Join(data, "index")
	// Each run listens on a port of its own, which it logs (at info).
	serveArgs := []string{"serve", "--nats-url", natsURL, "--data-dir", data, "--listen", anyPort, "--batch-size", "100"}

	// The first serve creates the stream; then the publisher starts.
	p := start(t, serveArgs...)
	addr := p.serving(t).HTTP
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if scrape(addr, "bulkstream_index_applied_sequence") < 0 {
			return fmt.Errorf("not serving yet")
		}
		return nil
	})
	_, js := connectJS(t, natsURL)
	var acked atomic.Int64
	pubCtx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- publishLogged(pubCtx, js, evs, 6*time.Second, &acked) }()

	t0 := time.Now()
	var kills, duringPublish, committing, midIngest int
	var last uint64 // applied sequence after the last kill
	published := false
	for kills < minKills || !published {
		if kills > 0 {
			p = start(t, serveArgs...)
		}
		seen := float64(-1) // the applied sequence seen just before the kill
		if kills%3 == 0 {
			// Maybe before it serves: a kill while it opens.
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		} else {
			addr = p.serving(t).HTTP
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				if v := scrape(addr, "bulkstream_index_applied_sequence"); v > float64(last) {
					seen = v
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(time.Duration(rng.IntN(25)) * time.Millisecond)
		}
		sent := acked.Load()
		p.kill9()
		kills++
		select {
		case err := <-pubDone:
			if err != nil {
				t.Fatal(err)
			}
			published = true
		default:
		}
		if !published {
			duringPublish++
		}
		last = appliedSeq(t, idx)
		if seen >= 0 && float64(last) > seen {
			committing++ // a batch committed between the scrape and the kill
		}
		if last < uint64(sent) {
			midIngest++
		}
		if kills > 400 {
			t.Fatal("publisher did not finish")
		}
	}
	t.Logf("kill loop done after %v", time.Since(t0).Round(time.Millisecond))
	t.Logf("killed serve %d times: %d during the publish, %d within ms of a batch commit, %d with acked events not yet applied",
		kills, duringPublish, committing, midIngest)
	if duringPublish < minKills/2 || committing < 4 || midIngest < minKills/2 {
		t.Errorf("the kills missed the work: %d during the publish, %d at a commit, %d part-way", duringPublish, committing, midIngest)
	}

	// The publisher's log: every event acked, the stored ones numbered 1..n
	// without gaps (a duplicate ack carries its original's sequence).
	stored := map[uint64][]*ackedEvent{}
	dups := 0
	for _, e := range evs {
		if e.seq == 0 {
			t.Fatalf("%s was never acked", e.key)
		}
		stored[e.seq] = append(stored[e.seq], e)
		if e.dup {
			dups++
		}
	}
	n := uint64(len(stored))
	for s := uint64(1); s <= n; s++ {
		if stored[s] == nil {
			t.Fatalf("stream sequences acked: %d, but %d is missing", n, s)
		}
	}
	if dups < 200 {
		t.Errorf("%d duplicate acks, want at least the 200 republished resources", dups)
	}

	// Final run: catch up with the whole stream, then stop cleanly.
	p = start(t, serveArgs...)
	waitAppliedSeq(t, p.serving(t).HTTP, n, time.Minute)
	p.stop(t)

	// Every stored event reflected once: per resource, the version is the
	// stream sequence of the last stored event that changed it (an upsert
	// of the content it already has is a no-op) and the content is that
	// of the last one.
	want := map[string][]*ackedEvent{} // Type/id → stored events in stream order
	for s := uint64(1); s <= n; s++ {
		e := stored[s][0]
		want[e.key] = append(want[e.key], e)
	}
	got := readIndex(t, idx)
	if len(got) != len(want) {
		t.Errorf("index has %d resources and tombstones, the acked log %d", len(got), len(want))
	}
	bad := 0
	for k, es := range want {
		g, ok := got[k]
		lastEv := es[len(es)-1]
		var err string
		switch {
		case !ok:
			err = "missing"
		case lastEv.del && !g.deleted:
			err = "not deleted"
		case !lastEv.del && g.deleted:
			err = "deleted"
		case !lastEv.del && g.version != strconv.FormatUint(wantVersion(t, es), 10):
			err = fmt.Sprintf("version %s, want %d (stored events %d)", g.version, wantVersion(t, es), len(es))
		case !lastEv.del && withoutMeta(t, g.resource) != withoutMeta(t, lastEv.body):
			err = "content is not that of its last acked event"
		}
		if err != "" {
			if bad++; bad <= 5 {
				t.Errorf("%s: %s", k, err)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d resources differ from the acked log", bad, len(want))
	}
	t.Logf("checked %d acked events (%d stored, %d duplicates) over %d resources against the index", len(evs), n, dups, len(want))

	// A clean replay of the stream gives the same index, byte for byte.
	digest, keys := dumpIndex(t, idx)
	runBounded(t, time.Minute, "rebuild", "--nats-url", natsURL, "--data-dir", data, "--log-level", "warn")
	digest2, keys2 := dumpIndex(t, idx)
	if digest2 != digest || keys2 != keys {
		t.Errorf("rebuild: %d keys digest %s, want %d keys digest %s", keys2, digest2, keys, digest)
	}
}

// crashJob is an export kicked off in TestCrashDuringExport.
type crashJob struct {
	query  url.Values
	status string // Content-Location
	types  []string
	since  uint64 // µs; 0 for a full export
}

// ndjsonKeys downloads an NDJSON file (no compression) and returns the
// Type/id of each line; for a deleted file, the Type/id of each DELETE
// entry.
func ndjsonKeys(t *testing.T, u string, deleted bool) []string {
	t.Helper()
	resp, err := crashClient.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	var keys []string
	for l := range bytes.Lines(b) {
		if deleted {
			var bundle struct {
				Entry []struct{ Request struct{ Method, URL string } }
			}
			if err := json.Unmarshal(l, &bundle); err != nil {
				t.Fatalf("%s: %v", u, err)
			}
			for _, e := range bundle.Entry {
				keys = append(keys, e.Request.URL)
			}
			continue
		}
		var r struct{ ResourceType, ID string }
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		keys = append(keys, r.ResourceType+"/"+r.ID)
	}
	return keys
}

// TestCrashDuringExport (reliability suite: crash during export) kill -9s
// the real binary while export jobs scan the index and write their files
// (many small files: --file-max-resources 1500), kicking off a new job
// before each kill so jobs are interrupted at every stage, some several
// times. After the last restart every job must end within a bounded time,
// either completed with exactly the data at its transactionTime (every
// file's lines equal its manifest count; per type the resource and deletion
// ids equal the index's for the job's _type, _since and transactionTime) or
// failed with an OperationOutcome; never complete with partial files, never
// stuck at 202.
func TestCrashDuringExport(t *testing.T) {
	if testing.Short() {
		t.Skip("builds data and kills processes")
	}
	const kills = 16
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))

	ns := runNATS(t)
	gen := t.TempDir()
	runCmd(t, "gen", "--sample", genSample, "--scale", "1",
		"--seed", "5", "--changes", "2000", "--out", gen)
	natsURL := ns.ClientURL()
	data := t.TempDir()
	idx := filepath.Join(data, "index")
	// Each run listens on a port of its own, which it logs (at info);
	// waitUp reads it, and a status URL of an earlier run is moved to it.
	serveArgs := []string{"serve", "--nats-url", natsURL, "--data-dir", data, "--listen", anyPort,
		"--file-max-resources", "1500", "--max-export-jobs", "64"}
	var addr, base string
	waitUp := func(p *proc) {
		addr = p.serving(t).HTTP
		base = "http://" + addr + "/fhir"
		checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
			if scrape(addr, "bulkstream_index_applied_sequence") < 0 {
				return fmt.Errorf("not serving yet")
			}
			return nil
		})
	}

	// Ingest the data once; nothing is written after this.
	p := start(t, serveArgs...)
	waitUp(p)
	runBounded(t, time.Minute, "publish", "--nats-url", natsURL, filepath.Join(gen, genResourcesFile), filepath.Join(gen, genUpdatesFile))
	runBounded(t, time.Minute, "publish", "--nats-url", natsURL, "--delete", filepath.Join(gen, genDeletesFile))
	var total uint64
	for _, f := range []string{genResourcesFile, genUpdatesFile, genDeletesFile} {
		total += countLines(t, filepath.Join(gen, f))
	}
	waitAppliedSeq(t, addr, total, time.Minute)
	p.stop(t)

	// The index, for the expected contents: commit time and tombstone flag
	// of every entry by type.
	type entry struct {
		key     string
		ct      uint64
		deleted bool
	}
	byType := map[string][]entry{}
	var cts []uint64
	for key, e := range readIndex(t, idx) {
		typ, _, _ := strings.Cut(key, "/")
		byType[typ] = append(byType[typ], entry{key, e.commitTime, e.deleted})
		cts = append(cts, e.commitTime)
	}
	slices.Sort(cts)
	since := cts[len(cts)*9/10] // the last tenth: the updates and deletes
	queries := []crashJob{
		{},
		{types: []string{"Observation"}},
		{types: []string{"Patient", "Encounter", "Claim", "ExplanationOfBenefit"}},
		{since: since},
		{types: []string{"Observation", "Condition", "Procedure"}, since: since},
	}
	for i := range queries {
		q := url.Values{}
		if len(queries[i].types) > 0 {
			q.Set("_type", strings.Join(queries[i].types, ","))
		}
		if queries[i].since > 0 {
			q.Set("_since", index.FormatInstant(queries[i].since))
		}
		queries[i].query = q
	}

	var jobs []*crashJob
	var duringScan, partialFiles, queuedAtKill int
	for k := range kills {
		p := start(t, serveArgs...)
		waitUp(p)
		j := queries[k%len(queries)]
		j.status = kickoffExport(t, crashClient, base, j.query.Encode())
		jobs = append(jobs, &j)
		if k%4 == 0 {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		} else {
			// Wait until the new job scans, then kill within its run.
			for range 400 {
				resp, err := crashClient.Get(j.status)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted || strings.HasPrefix(resp.Header.Get("X-Progress"), "exporting") {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		}
		p.kill9()
		// The job records at the kill: an unfinished job with files on
		// disk was killed while writing them.
		x, err := index.Open(idx, nil)
		if err != nil {
			t.Fatal(err)
		}
		scanning, withFiles := false, false
		err = x.Jobs(func(id string, b []byte) error {
			var rec struct{ State string }
			if err := json.Unmarshal(b, &rec); err != nil {
				return err
			}
			switch rec.State {
			case "running":
				scanning = true
				if m, _ := filepath.Glob(filepath.Join(data, "exports", id, "*.ndjson")); len(m) > 0 {
					withFiles = true
				}
			case "queued":
				queuedAtKill++
			}
			return nil
		})
		x.Close()
		if err != nil {
			t.Fatal(err)
		}
		if scanning {
			duringScan++
		}
		if withFiles {
			partialFiles++
		}
	}
	t.Logf("killed serve %d times: %d with a job running, %d with a running job's partial files on disk; %d queued jobs at the kills",
		kills, duringScan, partialFiles, queuedAtKill)
	if duringScan < kills/3 || partialFiles < kills/4 {
		t.Errorf("the kills missed the exports: %d during a scan, %d with partial files", duringScan, partialFiles)
	}

	// After the last restart every job ends, within bounded polling.
	p = start(t, serveArgs...)
	waitUp(p)
	for _, j := range jobs {
		j.status = onAddr(t, j.status, addr)
	}
	var completed, failed, files, lines int
	deadline := time.Now().Add(60 * time.Second)
	for _, j := range jobs {
		var resp *http.Response
		var body []byte
		for {
			var err error
			if resp, err = crashClient.Get(j.status); err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still 202 (%s) 60s after the restart", j.status, resp.Header.Get("X-Progress"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if resp.StatusCode != http.StatusOK {
			outcomeIssue(t, j.status, body)
			t.Logf("%s (%s) failed: %d %s", j.status, j.query.Encode(), resp.StatusCode, body)
			failed++
			continue
		}
		var m manifest
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: %v", j.status, err)
		}
		tt := uint64(parseInstant(t, m.TransactionTime).UnixMicro())
		// What the job must hold: the index at its transactionTime.
		wantRes, wantDel := map[string][]string{}, map[string][]string{}
		types := j.types
		if len(types) == 0 {
			types = slices.Collect(maps.Keys(byType))
		}
		for _, typ := range types {
			for _, e := range byType[typ] {
				switch {
				case e.ct <= j.since || e.ct > tt:
				case e.deleted && j.since > 0:
					wantDel[typ] = append(wantDel[typ], e.key)
				case !e.deleted:
					wantRes[typ] = append(wantRes[typ], e.key)
				}
			}
		}
		gotRes, gotDel := map[string][]string{}, map[string][]string{}
		for _, o := range m.Output {
			ks := ndjsonKeys(t, o.URL, false)
			if len(ks) != o.Count {
				t.Errorf("%s: %s has %d lines, manifest count %d", j.status, o.URL, len(ks), o.Count)
			}
			gotRes[o.Type] = append(gotRes[o.Type], ks...)
			files++
			lines += len(ks)
		}
		for _, d := range m.Deleted {
			ks := ndjsonKeys(t, d.URL, true)
			if len(ks) != d.Count {
				t.Errorf("%s: %s has %d deletions, manifest count %d", j.status, d.URL, len(ks), d.Count)
			}
			for _, k := range ks {
				typ, _, _ := strings.Cut(k, "/")
				gotDel[typ] = append(gotDel[typ], k)
			}
			files++
			lines += len(ks)
		}
		for _, pair := range []struct {
			what      string
			got, want map[string][]string
		}{{"resources", gotRes, wantRes}, {"deletions", gotDel, wantDel}} {
			for typ := range pair.want {
				slices.Sort(pair.got[typ])
				slices.Sort(pair.want[typ])
				if !slices.Equal(pair.got[typ], pair.want[typ]) {
					t.Errorf("%s (%s): %s %s: %d, want %d at transactionTime %s", j.status, j.query.Encode(),
						typ, pair.what, len(pair.got[typ]), len(pair.want[typ]), m.TransactionTime)
				}
			}
			for typ := range pair.got {
				if _, ok := pair.want[typ]; !ok {
					t.Errorf("%s (%s): %d unexpected %s %s", j.status, j.query.Encode(), len(pair.got[typ]), typ, pair.what)
				}
			}
		}
		completed++
	}
	p.stop(t)
	t.Logf("%d jobs: %d completed and verified (%d files, %d lines), %d failed with an OperationOutcome",
		len(jobs), completed, files, lines, failed)
	// Exports of an unchanged index have no reason to fail.
	if failed > 0 {
		t.Errorf("%d jobs failed", failed)
	}
	// No directory is left of a job that does not exist.
	ents, _ := os.ReadDir(filepath.Join(data, "exports"))
	if len(ents) > len(jobs) {
		t.Errorf("%d export directories for %d jobs", len(ents), len(jobs))
	}
}
