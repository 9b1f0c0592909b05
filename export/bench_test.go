package export

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
	"github.com/bulkstream/bulkstream/internal/search"
	"github.com/bulkstream/bulkstream/internal/synth"
	"github.com/prometheus/client_golang/prometheus"
)

// benchScales are copies of the Synthea sample (38,483 resources, about
// 120 MB as NDJSON, each).
var benchScales = []int{1, 3}

// benchIndex returns an on-disk index holding scale copies of the sample,
// with the number of resources and their stored bytes (NDJSON, with '\n').
// It returns once Pebble's compactions of the load have settled (none
// finished for 3 s), so that no figure is measured against them.
func benchIndex(b *testing.B, scale int) (x *index.Index, n, size int64) {
	b.Helper()
	reg := prometheus.NewRegistry()
	x, err := index.Open(b.TempDir(), &index.Options{NoSync: true, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { x.Close() })
	f := newFeeder(x)
	g := &synth.Generator{Sample: sample(b), Seed: 1, Scale: scale}
	batch := make([]index.Change, 0, 500)
	flush := func() {
		if _, err := x.Apply(context.Background(), batch, 0); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	err = g.Each(func(typ, id string, line []byte) error {
		batch = append(batch, f.change(typ, id, slices.Clone(line)))
		if len(batch) == cap(batch) {
			flush()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(batch) > 0 {
		flush()
	}
	n, size = indextest.WriteLiveFile(b, x, filepath.Join(b.TempDir(), "probe.ndjson"))
	compactions := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "bulkstream_index_pebble_compactions_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		b.Fatal("no bulkstream_index_pebble_compactions_total")
		return 0
	}
	for last, since := compactions(), time.Now(); time.Since(since) < 3*time.Second; {
		time.Sleep(250 * time.Millisecond)
		if c := compactions(); c != last {
			last, since = c, time.Now()
		}
	}
	return x, n, size
}

// BenchmarkExport measures a full export through the Manager (kick-off to
// completed manifest: snapshot, scans, split and fsynced files, manifest
// persisted) against BenchmarkRawScanWrite.
func BenchmarkExport(b *testing.B) {
	for _, scale := range benchScales {
		b.Run(fmt.Sprint("scale=", scale), func(b *testing.B) {
			x, n, size := benchIndex(b, scale)
			m := startOver(b, x)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				id, _ := exportAll(b, m, 100*time.Microsecond)
				b.StopTimer()
				if err := m.Cancel("", id); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
		})
	}
}

// BenchmarkRawScanWrite is BenchmarkExport's physical limit: the same index
// scanned from one snapshot into one bufio file, nothing else.
func BenchmarkRawScanWrite(b *testing.B) {
	for _, scale := range benchScales {
		b.Run(fmt.Sprint("scale=", scale), func(b *testing.B) {
			x, n, size := benchIndex(b, scale)
			path := filepath.Join(b.TempDir(), "raw.ndjson")
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				indextest.WriteLiveFile(b, x, path)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
		})
	}
}

// BenchmarkFinishedJobMemory measures the Go heap a finished job holds
// while it is kept for download (README, Memory: what
// --max-finished-exports bounds): jobs with two output files over a small
// store, run to completion, heap compared after GC. "plain" is a GET
// kick-off without parameters; "worst" is the largest kick-off the limits
// allow, all at once: a request URL of 8 KiB (httpapi.MaxURLBytes), _type
// with MaxTypeEntries entries, _elements with MaxElementsEntries names of
// the longest length, and MaxIgnored ignored parameters with long values
// (lenient), so an error file too.
//
//	go test -run '^$' -bench FinishedJobMemory -benchtime 3000x ./export/
func BenchmarkFinishedJobMemory(b *testing.B) {
	types, elems := make([]string, 0, MaxTypeEntries), make([]string, 0, MaxElementsEntries)
	for i := range MaxTypeEntries {
		types = append(types, []string{"Patient", "Observation"}[i%2])
	}
	for i := range MaxElementsEntries {
		elems = append(elems, fmt.Sprintf("e%0*d", maxElementName-1, i))
	}
	worst := Kickoff{Lenient: true, Client: "client-with-a-typical-id",
		RequestURL: "http://x/$export?_elements=" + strings.Repeat("a", 8<<10-27),
		Params:     ps("_type", strings.Join(types, ","), "_elements", strings.Join(elems, ","))}
	for i := range MaxIgnored {
		worst.Params = append(worst.Params, Param{Name: fmt.Sprint("unknown", i), Value: strings.Repeat("v", 200)})
	}
	for _, bc := range []struct {
		name string
		k    Kickoff
	}{
		{"plain", Kickoff{RequestURL: "http://x/$export"}},
		{"worst", worst},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// An index on disk, as in production: an in-memory one would
			// count the job records' WAL and tables as heap.
			x, err := index.Open(filepath.Join(b.TempDir(), "index"), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { x.Close() }) // after the manager's
			e := &testEnv{x: x, f: newFeeder(x), head: &fakeHead{}, dir: b.TempDir()}
			var rs []resource
			for i := range 20 {
				for _, typ := range []string{"Patient", "Observation"} {
					id := fmt.Sprint(typ, "-", i)
					rs = append(rs, resource{typ, id, fmt.Appendf(nil, `{"resourceType":%q,"id":%q}`, typ, id)})
				}
			}
			e.f.apply(b, rs...)
			m := e.manager(b, Config{MaxActiveJobs: 1 << 20, MaxFinishedJobs: -1, MaxFinishedJobsPerClient: -1}, nil)
			heap := func() uint64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			before := heap()
			for b.Loop() {
				id, err := m.Kickoff(context.Background(), bc.k)
				if err != nil {
					b.Fatal(err)
				}
				wait(b, m, id)
			}
			b.StopTimer()
			b.ReportMetric(float64(heap()-before)/float64(b.N), "heap-bytes/job")
		})
	}
}

// BenchmarkTypeFilter measures what _typeFilter costs on top of the scan
// it rides on, on one index of about a million resources (scale copies of
// the sample; TYPEFILTER_BENCH_SCALE, default 26 ≈ 1.0M) built once:
//
//   - scan: Snapshot.Scan of every Observation, reading each entry's
//     bytes and nothing else (the physical limit of any Observation
//     export: one ordered Pebble range scan);
//   - match/<query>: the same scan plus the query's Match on each
//     resource; its ns/resource minus scan's is the evaluation cost,
//     reported next to the scan's as a percentage (goal ≤ 25 %);
//   - export/<query>: a Manager export of _type=Observation with and
//     without the query, kick-off to completed manifest (files written
//     and fsynced).
//
// The kinds run alternated, round after round (b.N rounds), so that a
// slower stretch of the machine falls on all of them; each figure is the
// median over the rounds.
//
//	go test -run '^$' -bench TypeFilter -benchtime 3x ./export/
func BenchmarkTypeFilter(b *testing.B) {
	scale := 26
	if s := os.Getenv("TYPEFILTER_BENCH_SCALE"); s != "" {
		var err error
		if scale, err = strconv.Atoi(s); err != nil || scale < 1 {
			b.Fatalf("TYPEFILTER_BENCH_SCALE=%q: want a positive integer", s)
		}
	}
	x, n, _ := benchIndex(b, scale)
	m := startOver(b, x)
	queries := []string{"Observation?category=laboratory", "Observation?date=ge2020-01-01"}
	filters := make([]*search.Filter, len(queries))
	for i, q := range queries {
		f, err := compileTypeFilters([]string{q})
		if err != nil {
			b.Fatal(err)
		}
		filters[i] = f
	}
	snap, err := x.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	ctx := context.Background()
	// scanPass scans every Observation, matching each against f (nil: no
	// filter), and returns the time, the entries and the matches.
	scanPass := func(f *search.Filter) (d time.Duration, entries, matched int) {
		start := time.Now()
		var sum byte
		err := snap.Scan(ctx, "Observation", 0, index.Unbounded, func(e index.Entry) error {
			entries++
			if len(e.Resource) > 0 {
				sum += e.Resource[len(e.Resource)/2] // read the bytes, as a write would
			}
			if f != nil {
				ok, err := f.Match("Observation", e.Resource)
				if err != nil {
					return err
				}
				if ok {
					matched++
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		_ = sum
		return time.Since(start), entries, matched
	}
	exportPass := func(q string) (time.Duration, int64) {
		req := fullRequest()
		req.Types = []string{"Observation"}
		if q != "" {
			req.TypeFilters = []string{q}
		}
		start := time.Now()
		id := submit(b, m, req)
		mf := waitManifest(b, m, id)
		d := time.Since(start)
		var written int64
		for _, fi := range mf.Output {
			written += fi.Count
		}
		if err := m.Cancel("", id); err != nil {
			b.Fatal(err)
		}
		return d, written
	}
	var scanT []time.Duration
	matchT := make([][]time.Duration, len(queries))
	exportT := make([][]time.Duration, len(queries)+1) // [0]: unfiltered
	var obs int
	matched := make([]int, len(queries))
	written := make([]int64, len(queries)+1)
	b.ResetTimer()
	for b.Loop() {
		d, entries, _ := scanPass(nil)
		scanT, obs = append(scanT, d), entries
		for i, f := range filters {
			d, _, k := scanPass(f)
			matchT[i], matched[i] = append(matchT[i], d), k
		}
		for i, q := range append([]string{""}, queries...) {
			d, w := exportPass(q)
			exportT[i], written[i] = append(exportT[i], d), w
		}
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	perRes := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(obs) }
	scanNs := perRes(med(scanT))
	b.ReportMetric(float64(n), "resources")
	b.ReportMetric(float64(obs), "observations")
	b.ReportMetric(scanNs, "scan-ns/resource")
	b.ReportMetric(float64(med(exportT[0]).Milliseconds()), "export-all-ms")
	for i, q := range queries {
		name := strings.NewReplacer("Observation?", "", "=", "-").Replace(q)
		cost := perRes(med(matchT[i])) - scanNs
		b.ReportMetric(cost, name+"-eval-ns/resource")
		b.ReportMetric(100*cost/scanNs, name+"-eval-%-of-scan")
		b.ReportMetric(float64(med(exportT[i+1]).Milliseconds()), name+"-export-ms")
		b.ReportMetric(float64(written[i+1]), name+"-written")
		if int64(matched[i]) != written[i+1] {
			b.Errorf("%s: the scan matched %d, the export wrote %d", q, matched[i], written[i+1])
		}
	}
	if written[0] != int64(obs) {
		b.Errorf("the unfiltered export wrote %d of %d Observations", written[0], obs)
	}
}
