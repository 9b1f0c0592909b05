package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/jsstore"
)

// The cluster benchmarks (make bench-cluster, scripts/bench-cluster.sh)
// are configured by environment variables:
//
//	CLUSTER_BENCH_RESOURCES   resources of BenchmarkClusterExport: gen
//	                          writes ceil(n / 38,483) copies of the Synthea
//	                          sample (default 200k: 6 copies, 230,898)
//	CLUSTER_BENCH_CONCURRENT  exports at once in its concurrent part
//	                          (default 4)
const (
	clusterBenchResourcesEnv  = "CLUSTER_BENCH_RESOURCES"
	clusterBenchConcurrentEnv = "CLUSTER_BENCH_CONCURRENT"
	defaultClusterResources   = "200k"
	// clusterBenchLease is --job-lease of the cluster-mode replicas: short,
	// so that a takeover is measured in seconds.
	clusterBenchLease = 2 * time.Second
	// clusterLeaseGrace is export.DefaultLeaseGrace: how long after the
	// lease a replica waits before it takes a job over (the README's
	// --job-lease row).
	clusterLeaseGrace = 5 * time.Second
)

// BenchmarkClusterObjectStoreFile is jsstore's BenchmarkObjectStoreFile
// on a 3-node NATS cluster (nats-server processes on loopback) with an R3
// bucket, as serve --replicas 3 --file-store objectstore creates it: a
// 64 MiB export file written through jsstore.FileStore (handed 256 KiB at
// a time, as an export writes) and read back whole, next to a raw
// ObjectStore.Put and Get of the same bytes in one object of the same
// bucket. SetBytes makes MB/s comparable.
func BenchmarkClusterObjectStoreFile(b *testing.B) {
	const (
		size   = 64 << 20
		chunk  = 256 << 10
		bucket = "bench_files"
	)
	c := startNATSCluster(b, 3)
	_, js := connectJS(b, c.URLs())
	fs, err := jsstore.NewFileStore(b.Context(), js, jsstore.FileOptions{Bucket: bucket, Replicas: 3})
	if err != nil {
		b.Fatal(err)
	}
	obs, err := js.ObjectStore(b.Context(), bucket)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 0, size)
	for i := 0; len(data) < size; i++ {
		data = fmt.Appendf(data, "line %d\n", i)
	}
	data = data[:size]
	put := func(b *testing.B, job, name string) {
		w, err := fs.Create(job, name)
		if err != nil {
			b.Fatal(err)
		}
		for p := data; len(p) > 0; {
			n := min(chunk, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	for _, job := range []string{"put", "get"} {
		if err := fs.NewJob(job); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("FileStore/put", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			put(b, "put", "f"+strconv.Itoa(i))
		}
	})
	b.Run("FileStore/get", func(b *testing.B) {
		put(b, "get", "f")
		b.SetBytes(size)
		for b.Loop() {
			f, err := fs.Open("get", "f")
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, f); err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			f.Close()
		}
	})
	b.Run("raw/put", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			if _, err := obs.Put(b.Context(), jetstream.ObjectMeta{Name: "raw" + strconv.Itoa(i)}, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw/get", func(b *testing.B) {
		if _, err := obs.Put(b.Context(), jetstream.ObjectMeta{Name: "raw-get"}, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		for b.Loop() {
			// A read right after the put may reach a follower that has
			// not applied it: retry "not found" as FileStore does.
			r, err := obs.Get(b.Context(), "raw-get")
			for try := 0; errors.Is(err, jetstream.ErrObjectNotFound) && try < 20; try++ {
				time.Sleep(50 * time.Millisecond)
				r, err = obs.Get(b.Context(), "raw-get")
			}
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			r.Close()
		}
	})
}

// benchReplica is one serve process of BenchmarkClusterExport.
type benchReplica struct {
	name string
	// owner is the benchmark that started the processes: a replica
	// restarted in a sub-benchmark must outlive it.
	owner testing.TB
	args  []string // serve's, kept for a restart on the same data dir
	p     *proc
	addr  string
	c     *benchClient
}

func (r *benchReplica) start(b *testing.B) {
	b.Helper()
	r.p = startBin(r.owner, binPath, r.args...)
	r.addr = r.p.serving(b).HTTP
	r.c.base = "http://" + r.addr + "/fhir"
	r.c.pid = r.p.cmd.Process.Pid
	waitReady(b, r.addr)
}

// exited says, if r's process has ended, how, with the end of its
// stderr; "" while it runs.
func (r *benchReplica) exited() string {
	select {
	case err := <-r.p.done:
		r.p.done <- err
		out := r.p.stderr.String()
		return fmt.Sprintf("\nreplica %s exited: %v; stderr (last 16 KB):\n%s", r.name, err, out[max(0, len(out)-16<<10):])
	default:
		return ""
	}
}

// runsStarted is how many export runs r has logged starting: more than
// the jobs kicked off when a run was started again (a takeover, or a
// failed run retried in cluster mode).
func (r *benchReplica) runsStarted() int {
	return strings.Count(r.p.stderr.String(), `msg="export job started"`)
}

// rerunLogs is, for each replica, the last few log lines of its stderr
// that say why an export run ended early (warnings, errors, takeovers,
// requeues).
func rerunLogs(rs []*benchReplica) string {
	var out strings.Builder
	for _, r := range rs {
		var lines []string
		for line := range strings.Lines(r.p.stderr.String()) {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
				strings.Contains(line, "taken over") || strings.Contains(line, "again") || strings.Contains(line, "lost") {
				lines = append(lines, strings.TrimSpace(line))
			}
		}
		fmt.Fprintf(&out, "\n  replica %s: %d such log lines", r.name, len(lines))
		for _, l := range lines[max(0, len(lines)-6):] {
			fmt.Fprintf(&out, "\n    %.400s", l)
		}
		// The last job this replica started more than once, its lines.
		starts := map[string]int{}
		again := ""
		for line := range strings.Lines(r.p.stderr.String()) {
			if _, after, ok := strings.Cut(line, `msg="export job started" component=export job=`); ok {
				id, _, _ := strings.Cut(after, " ")
				if starts[id]++; starts[id] > 1 {
					again = id
				}
			}
		}
		if again != "" {
			fmt.Fprintf(&out, "\n  replica %s started job %s %d times; its log lines:", r.name, again, starts[again])
			for line := range strings.Lines(r.p.stderr.String()) {
				if strings.Contains(line, again) && !strings.Contains(line, "route=/fhir/bulkstatus") && !strings.Contains(line, "route=/fhir/bulkfiles") {
					fmt.Fprintf(&out, "\n    %.400s", strings.TrimSpace(line))
				}
			}
		}
	}
	return out.String()
}

// written is the resources this replica has written to export files
// (bulkstream_export_resources_written_total, every type): which replica
// ran an export.
func (r *benchReplica) written() float64 {
	return scrapeSum(r.addr, "bulkstream_export_resources_written_total")
}

// scrapeSum adds up every series of metric name (any labels: with
// --replica-id each carries replica=<id>); -1 if the server does not
// answer.
func scrapeSum(addr, name string) float64 {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		series, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, _, _ := strings.Cut(series, "{"); n == name {
			f, _ := strconv.ParseFloat(v, 64)
			sum += f
		}
	}
	return sum
}

// waitSettled waits until the replica has applied seq and its Pebble
// compactions have settled (none finished for 3 s), as waitApplied does
// for a server without --replica-id.
func (r *benchReplica) waitSettled(b *testing.B, seq uint64) {
	b.Helper()
	checkFor(b, 15*time.Minute, 100*time.Millisecond, func() error {
		if got := scrapeSum(r.addr, "bulkstream_ingest_applied_sequence"); got != float64(seq) {
			return fmt.Errorf("%s: applied sequence %v, want %d", r.name, got, seq)
		}
		return nil
	})
	last, since := -1.0, time.Now()
	checkFor(b, 5*time.Minute, 250*time.Millisecond, func() error {
		if n := scrapeSum(r.addr, "bulkstream_index_pebble_compactions_total"); n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) < 3*time.Second {
			return fmt.Errorf("%s: compactions still running (%v done)", r.name, last)
		}
		return nil
	})
}

// BenchmarkClusterExport measures export in cluster mode through the real
// binary on a 3-node NATS cluster (nats-server processes on loopback, the
// FHIR stream R3): three serve processes apply the same stream, each into
// its own index: "single" (--job-store pebble --file-store local, files
// on its disk) and replicas "a" and "b" (--replica-id, --job-store kv
// --file-store objectstore, jobs and files in R3 buckets of the same
// cluster; the default --job-lease until takeover restarts them with
// 2s). Loading (gen + publish of CLUSTER_BENCH_RESOURCES,
// every replica waited for until applied and settled) is untimed. Then:
//
//   - full: one op is a full export on single, then one on a (in the
//     other order on odd ops), each kick-off → status polls every 2 ms →
//     manifest → every file downloaded over HTTP from the replica that
//     was asked (2 at a time), after sync(2), the job deleted after it.
//     Reports both times to the last byte and cluster-%-of-single, the
//     rate of cluster mode as a percentage of single's.
//   - concurrent: one op runs CLUSTER_BENCH_CONCURRENT (K) full exports
//     at once on replica a alone (b stopped), then K at once kicked off
//     half on a and half on b (b restarted, caught up, outside the
//     timer), each client polling and downloading from the replica it
//     kicked off on; times are first kick-off → last byte of the last
//     export. Both replicas run --export-workers 2 (the default). On a
//     machine whose cores the replicas share, this measures what
//     spreading costs, not scale-out.
//   - takeover: one op kicks off a full export on a, finds the replica
//     that claimed it (the other's status answers "running on replica
//     <owner>"), kills the owner with SIGKILL, and times kill → the
//     survivor's status no longer naming the dead owner (takeover) →
//     manifest → last byte, next to --job-lease + the 5 s grace. The
//     killed replica is restarted on its data dir after the op.
//
// An export whose job fails (status 500) is started again, up to 3
// times, and counted (failed-exports); runs-started-again counts the
// runs the cluster replicas logged starting beyond one per export (a
// failed run retried by cluster mode, a job taken over). Every figure
// is the median over the ops (-benchtime Nx).
func BenchmarkClusterExport(b *testing.B) {
	if testing.Short() {
		b.Skip("runs a 3-node NATS cluster and three serve replicas")
	}
	spec := os.Getenv(clusterBenchResourcesEnv)
	if spec == "" {
		spec = defaultClusterResources
	}
	n, err := parseCount(spec)
	if err != nil {
		b.Fatalf("%s=%q: %v", clusterBenchResourcesEnv, spec, err)
	}
	scale := int((n + sampleResources - 1) / sampleResources)
	k := 4
	if s := os.Getenv(clusterBenchConcurrentEnv); s != "" {
		if k, err = strconv.Atoi(s); err != nil || k < 2 {
			b.Fatalf("%s=%q: want a number ≥ 2", clusterBenchConcurrentEnv, s)
		}
	}

	t0 := time.Now()
	nc := startNATSCluster(b, 3)
	urls := nc.URLs()
	tmp := b.TempDir()
	newReplica := func(name string, extra ...string) *benchReplica {
		args := append([]string{"serve", "--nats-url", urls, "--replicas", "3", "--listen", anyPort,
			"--data-dir", filepath.Join(tmp, name)}, extra...)
		return &benchReplica{name: name, owner: b, args: args, c: &benchClient{downloads: 2, http: &http.Client{
			Timeout:   2 * time.Minute,
			Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
		}}}
	}
	cluster := func(id string) *benchReplica {
		return newReplica(id, "--replica-id", id, "--job-store", "kv", "--file-store", "objectstore")
	}
	single := newReplica("single", "--durable", "bench-single", "--job-store", "pebble", "--file-store", "local")
	ra, rb := cluster("a"), cluster("b")
	for _, r := range []*benchReplica{single, ra, rb} { // one at a time: the first creates the stream and buckets
		r.start(b)
	}
	b.Logf("nats cluster and 3 replicas up in %v", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	gen := filepath.Join(tmp, "gen")
	runCmd(b, "gen", "--sample", genSample, "--scale", strconv.Itoa(scale), "--seed", "1", "--out", gen)
	t1 := time.Now()
	seq := publishLines(b, urls, false, filepath.Join(gen, genResourcesFile))
	published := time.Since(t1)
	for _, r := range []*benchReplica{single, ra, rb} {
		r.waitSettled(b, seq)
	}
	b.Logf("%s=%s: %d copies of the sample, %d resources: generated in %v, published to the R3 stream in %v (%.0f events/s), applied by the 3 replicas and settled %v after publishing began",
		clusterBenchResourcesEnv, spec, scale, seq, t1.Sub(t0).Round(time.Millisecond), published.Round(time.Millisecond),
		float64(seq)/published.Seconds(), time.Since(t1).Round(time.Millisecond))
	// One untimed export on each kind of replica: the first export after
	// the load writes into fresh page cache and cold buckets.
	single.c.export(b, url.Values{})
	ra.c.export(b, url.Values{})

	b.Run("full", func(b *testing.B) { benchSingleVsCluster(b, single, ra, rb) })
	b.Run("concurrent", func(b *testing.B) { benchConcurrent(b, k, ra, rb, seq) })
	b.Run("takeover", func(b *testing.B) { benchTakeover(b, ra, rb, seq) })
}

// parseCount reads a resource count: 20000, 200k, 1M.
func parseCount(s string) (int64, error) {
	mult, num := int64(1), s
	switch {
	case strings.HasSuffix(s, "k"):
		mult, num = 1_000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, num = 1_000_000, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a resource count like 20000, 200k or 1M")
	}
	return n * mult, nil
}

// exportAttempts is how often an export that failed (status 500) is
// started again before the benchmark fails.
const exportAttempts = 3

// exportOnce runs one full export on r: kick-off, status polls every
// exportBenchPoll, every file downloaded from r. A job that failed (500)
// is an error, after its DELETE.
func (r *benchReplica) exportOnce(b *testing.B) (exportTimes, error) {
	began := time.Now()
	status := r.c.kickoff(b, url.Values{})
	t := exportTimes{status: status}
	for {
		resp, err := r.c.http.Get(status)
		if err != nil {
			return t, fmt.Errorf("replica %s: %w%s", r.name, err, r.exited())
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			time.Sleep(exportBenchPoll)
			continue
		case http.StatusOK:
		default:
			r.c.remove(b, status)
			return t, fmt.Errorf("replica %s: status of %s: %d %s", r.name, status, resp.StatusCode, body)
		}
		t.manifest = time.Since(began)
		var mf benchManifest
		if err := json.Unmarshal(body, &mf); err != nil {
			return t, fmt.Errorf("replica %s: manifest: %w", r.name, err)
		}
		t.lines, t.bytes = r.c.download(b, mf)
		t.lastByte = time.Since(began)
		return t, nil
	}
}

// export runs a full export on r and returns its times (those of the
// attempt that completed, and all attempts together in lastByte when one
// failed) and how many attempts failed; it leaves the job for the caller
// to delete. Safe in a goroutine of its own but for the downloads, whose
// failure calls b.Fatal (which ends that goroutine, failing b).
func (r *benchReplica) export(b *testing.B) (exportTimes, int, error) {
	began := time.Now()
	var errs []string
	for range exportAttempts {
		t, err := r.exportOnce(b)
		if err == nil {
			if len(errs) > 0 {
				t.lastByte = time.Since(began)
			}
			return t, len(errs), nil
		}
		errs = append(errs, err.Error())
		b.Logf("EXPORT FAILED (started again): %v", err)
	}
	return exportTimes{}, len(errs), fmt.Errorf("%d exports failed in a row: %s", len(errs), strings.Join(errs, "; "))
}

// timedExport is one export on r after sync(2), its job deleted after.
func timedExport(b *testing.B, r *benchReplica, failed *int) exportTimes {
	b.Helper()
	syscall.Sync()
	t, n, err := r.export(b)
	*failed += n
	if err != nil {
		b.Fatal(err)
	}
	r.c.remove(b, t.status)
	return t
}

func benchSingleVsCluster(b *testing.B, single, cluster, other *benchReplica) {
	var ss, cs []exportTimes
	failed, i := 0, 0
	runs := -cluster.runsStarted() - other.runsStarted()
	for b.Loop() {
		if i%2 == 0 {
			ss = append(ss, timedExport(b, single, &failed))
			cs = append(cs, timedExport(b, cluster, &failed))
		} else {
			cs = append(cs, timedExport(b, cluster, &failed))
			ss = append(ss, timedExport(b, single, &failed))
		}
		b.Logf("op %d: single %v to manifest, %v to last byte; cluster %v, %v", i+1,
			ss[i].manifest.Round(time.Millisecond), ss[i].lastByte.Round(time.Millisecond),
			cs[i].manifest.Round(time.Millisecond), cs[i].lastByte.Round(time.Millisecond))
		i++
	}
	lb := func(t exportTimes) float64 { return t.lastByte.Seconds() }
	mf := func(t exportTimes) float64 { return t.manifest.Seconds() }
	sl, cl := median(ss, lb), median(cs, lb)
	b.ReportMetric(float64(ss[0].lines), "resources")
	b.ReportMetric(float64(ss[0].bytes)/1e6, "MB")
	b.ReportMetric(median(ss, mf)*1e3, "single-ms-to-manifest")
	b.ReportMetric(sl*1e3, "single-ms-to-last-byte")
	b.ReportMetric(median(cs, mf)*1e3, "cluster-ms-to-manifest")
	b.ReportMetric(cl*1e3, "cluster-ms-to-last-byte")
	b.ReportMetric(float64(ss[0].lines)/sl, "single-resources/s")
	b.ReportMetric(float64(cs[0].lines)/cl, "cluster-resources/s")
	b.ReportMetric(100*sl/cl, "cluster-%-of-single")
	b.ReportMetric(float64(failed), "failed-exports")
	b.ReportMetric(float64(runs+cluster.runsStarted()+other.runsStarted()-len(cs)), "runs-started-again")
}

// concurrentRun runs one export per replica in on at once (the same
// replica may appear several times) and returns the time from the first
// kick-off to the last byte of the last one, and the resources each
// replica of all wrote meanwhile.
func concurrentRun(b *testing.B, on []*benchReplica, all []*benchReplica, failed, reruns *int) (time.Duration, []float64) {
	b.Helper()
	before := make([]float64, len(all))
	runs := 0
	for i, r := range all {
		before[i] = r.written()
		runs -= r.runsStarted()
	}
	syscall.Sync()
	var wg sync.WaitGroup
	statuses := make([]string, len(on))
	fails := make([]int, len(on))
	errs := make([]error, len(on))
	began := time.Now()
	for i, r := range on {
		// A failed download calls b.Fatal, which ends this goroutine
		// (runtime.Goexit runs wg.Go's Done) and marks b failed.
		wg.Go(func() {
			var t exportTimes
			t, fails[i], errs[i] = r.export(b)
			statuses[i] = t.status
		})
	}
	wg.Wait()
	took := time.Since(began)
	for i := range on {
		*failed += fails[i]
		if errs[i] != nil {
			b.Error(errs[i])
		}
	}
	if b.Failed() {
		b.FailNow()
	}
	ran := make([]float64, len(all))
	for i, r := range all {
		ran[i] = r.written() - before[i]
		runs += r.runsStarted()
	}
	if runs > len(on) {
		b.Logf("%d runs started for %d exports: %d started again; the replicas said:%s", runs, len(on), runs-len(on), rerunLogs(all))
		*reruns += runs - len(on)
	}
	for i, r := range on {
		r.c.remove(b, statuses[i])
	}
	return took, ran
}

func benchConcurrent(b *testing.B, k int, a, bb *benchReplica, seq uint64) {
	var alone, spread []time.Duration
	all := []*benchReplica{a, bb}
	failed, reruns := 0, 0
	defer func() {
		if bb.p.cmd.ProcessState != nil { // stopped by a failed op
			bb.start(b)
		}
	}()
	for b.Loop() {
		bb.p.stop(b)
		var on []*benchReplica
		for range k {
			on = append(on, a)
		}
		d1, _ := concurrentRun(b, on, []*benchReplica{a}, &failed, &reruns)
		b.StopTimer()
		bb.start(b)
		bb.waitSettled(b, seq)
		b.StartTimer()
		on = on[:0]
		for i := range k {
			on = append(on, all[i%2])
		}
		d2, ran := concurrentRun(b, on, all, &failed, &reruns)
		alone, spread = append(alone, d1), append(spread, d2)
		b.Logf("op %d: %d exports on replica a alone %v; on a and b %v (resources written: a %.0f, b %.0f)",
			len(alone), k, d1.Round(time.Millisecond), d2.Round(time.Millisecond), ran[0], ran[1])
	}
	sec := func(d time.Duration) float64 { return d.Seconds() }
	m1, m2 := median(alone, sec), median(spread, sec)
	b.ReportMetric(float64(k), "exports")
	b.ReportMetric(m1*1e3, "one-replica-ms")
	b.ReportMetric(m2*1e3, "two-replicas-ms")
	b.ReportMetric(100*m1/m2, "two-%-of-one")
	b.ReportMetric(float64(failed), "failed-exports")
	b.ReportMetric(float64(reruns), "runs-started-again")
	b.ReportMetric(float64(a.c.retried503.Load()+bb.c.retried503.Load()), "downloads-retried-after-503")
}

// takeoverTimes is one takeover, timed from the kill.
type takeoverTimes struct {
	owner           string
	takenOver, done time.Duration // survivor's status stops naming the owner; manifest
	lastByte        time.Duration
	ranBeforeKill   time.Duration // kick-off → kill
	resources, size int64
}

func benchTakeover(b *testing.B, a, bb *benchReplica, seq uint64) {
	// Both replicas run with the short lease from here on: the owner
	// writes its lease, the survivor judges it.
	for _, r := range []*benchReplica{a, bb} {
		r.p.stop(b)
		r.args = append(r.args, "--job-lease", clusterBenchLease.String())
		r.start(b)
		r.waitSettled(b, seq)
	}
	var ops []takeoverTimes
	for b.Loop() {
		t, killed := takeover(b, a, bb)
		ops = append(ops, t)
		b.Logf("op %d: owner %s killed %v after kick-off; taken over %v after the kill, manifest %v, last byte %v (run on the survivor %v)",
			len(ops), t.owner, t.ranBeforeKill.Round(time.Millisecond), t.takenOver.Round(time.Millisecond),
			t.done.Round(time.Millisecond), t.lastByte.Round(time.Millisecond), (t.done - t.takenOver).Round(time.Millisecond))
		b.StopTimer()
		killed.start(b)
		killed.waitSettled(b, seq)
		b.StartTimer()
	}
	ms := func(f func(takeoverTimes) time.Duration) float64 {
		return median(ops, func(t takeoverTimes) float64 { return float64(f(t)) / 1e6 })
	}
	b.ReportMetric(float64(ops[0].resources), "resources")
	b.ReportMetric(ms(func(t takeoverTimes) time.Duration { return t.ranBeforeKill }), "ms-run-before-kill")
	b.ReportMetric(ms(func(t takeoverTimes) time.Duration { return t.takenOver }), "ms-kill-to-takeover")
	b.ReportMetric(ms(func(t takeoverTimes) time.Duration { return t.done - t.takenOver }), "ms-takeover-to-manifest")
	b.ReportMetric(ms(func(t takeoverTimes) time.Duration { return t.done }), "ms-kill-to-manifest")
	b.ReportMetric(ms(func(t takeoverTimes) time.Duration { return t.lastByte }), "ms-kill-to-last-byte")
	b.ReportMetric(float64((clusterBenchLease + clusterLeaseGrace).Milliseconds()), "ms-lease+grace")
}

// takeover runs one takeover: an export kicked off on a, its owner killed
// once known, the job followed on the survivor to its last byte. It
// returns the times and the killed replica (stopped).
func takeover(b *testing.B, a, bb *benchReplica) (takeoverTimes, *benchReplica) {
	b.Helper()
	syscall.Sync()
	began := time.Now()
	status := a.c.kickoff(b, url.Values{})
	id := status[strings.LastIndexByte(status, '/')+1:]
	on := func(r *benchReplica) string { return r.c.base + "/bulkstatus/" + id }
	var owner, survivor *benchReplica
	checkFor(b, time.Minute, 5*time.Millisecond, func() error {
		for _, r := range []*benchReplica{a, bb} {
			other := bb
			if r == bb {
				other = a
			}
			code, progress := statusProgress(b, r, id)
			if code == http.StatusOK {
				b.Fatal("the export completed before its owner could be killed: use more resources")
			}
			if progress == "running on replica "+other.name {
				owner, survivor = other, r
				return nil
			}
		}
		return fmt.Errorf("no replica reports the other running job %s yet", id)
	})
	owner.p.kill9()
	killed := time.Now()
	t := takeoverTimes{owner: owner.name, ranBeforeKill: killed.Sub(began)}
	dead := "running on replica " + owner.name
	var mfBody []byte
	checkFor(b, 5*time.Minute, 5*time.Millisecond, func() error {
		code, progress := statusProgress(b, survivor, id)
		if t.takenOver == 0 && progress != dead {
			t.takenOver = time.Since(killed)
		}
		if code == http.StatusOK {
			t.done = time.Since(killed)
			mfBody = getBodyBench(b, survivor.c.http, on(survivor))
			return nil
		}
		return fmt.Errorf("job %s on %s: %d %q", id, survivor.name, code, progress)
	})
	var mf benchManifest
	if err := json.Unmarshal(mfBody, &mf); err != nil {
		b.Fatal(err)
	}
	t.resources, t.size = survivor.c.download(b, mf)
	t.lastByte = time.Since(killed)
	survivor.c.remove(b, on(survivor))
	return t, owner
}

// statusProgress GETs job id's status on r and returns its code and
// X-Progress.
func statusProgress(b *testing.B, r *benchReplica, id string) (int, string) {
	b.Helper()
	status := r.c.base + "/bulkstatus/" + id
	resp, err := r.c.http.Get(status)
	if err != nil {
		b.Fatalf("replica %s: %v%s", r.name, err, r.exited())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted:
		return resp.StatusCode, resp.Header.Get("X-Progress")
	}
	b.Fatalf("GET %s: %d %s", status, resp.StatusCode, body)
	return 0, ""
}

func getBodyBench(b *testing.B, hc *http.Client, u string) []byte {
	b.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %s %v", u, resp.StatusCode, body, err)
	}
	return body
}
