package export

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
)

// TestExportMemory is a harness, not a test: it exports the index in
// $EXPORT_MEM_INDEX (a stopped server's <data-dir>/index, e.g. one kept by
// BenchmarkExportE2E with EXPORT_BENCH_KEEP) through a Manager in this
// process, $EXPORT_MEM_RUNS times (default 2), and logs how the process's
// memory evolves: RSS, the Go runtime's share (runtime/metrics) and the
// rest (C: Pebble's block cache, memtables and buffers, malloc arenas).
// $EXPORT_MEM_CACHE sets index.Options.CacheSize (bytes).
//
//	EXPORT_MEM_INDEX=/tmp/keep/1M/index go test -run ExportMemory -v ./export/
func TestExportMemory(t *testing.T) {
	dir := os.Getenv("EXPORT_MEM_INDEX")
	if dir == "" {
		t.Skip("EXPORT_MEM_INDEX not set")
	}
	runs := 2
	if s := os.Getenv("EXPORT_MEM_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	var opts index.Options
	if s := os.Getenv("EXPORT_MEM_CACHE"); s != "" {
		opts.CacheSize, _ = strconv.ParseInt(s, 10, 64)
	}
	x, err := index.Open(dir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() }) // after the manager's
	logMem(t, "opened")
	m := startOver(t, x)
	for i := range runs {
		done := make(chan struct{})
		peak := make(chan string, 1)
		go func() {
			var maxRSS float64
			var at string
			for {
				rss, goHeld, inuse := memNow()
				if rss > maxRSS {
					maxRSS = rss
					at = fmt.Sprintf("RSS %.0f MB = Go %.0f MB (heap in use %.0f MB) + non-Go %.0f MB", rss, goHeld, inuse, rss-goHeld)
				}
				select {
				case <-done:
					peak <- at
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		t0 := time.Now()
		id, j := exportAll(t, m, time.Millisecond)
		close(done)
		t.Logf("export %d: %v, lines %d; at max RSS: %s", i+1, time.Since(t0).Round(time.Millisecond), j.prog.written.Load(), <-peak)
		if err := m.Cancel("", id); err != nil {
			t.Fatal(err)
		}
		logMem(t, fmt.Sprintf("after export %d", i+1))
	}
	runtime.GC()
	debug.FreeOSMemory()
	logMem(t, "after FreeOSMemory")
}

// memNow returns RSS, the Go runtime's memory held from the OS and its
// heap in use, in MB.
func memNow() (rss, goHeld, heapInuse float64) {
	s := []rtmetrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	rtmetrics.Read(s)
	goHeld = float64(s[0].Value.Uint64()-s[1].Value.Uint64()) / (1 << 20)
	heapInuse = float64(s[2].Value.Uint64()+s[3].Value.Uint64()) / (1 << 20)
	raw, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			rss = n / 1024
		}
	}
	return rss, goHeld, heapInuse
}

func logMem(t *testing.T, when string) {
	rss, goHeld, inuse := memNow()
	t.Logf("%s: RSS %.0f MB = Go %.0f MB (heap in use %.0f MB) + non-Go %.0f MB", when, rss, goHeld, inuse, rss-goHeld)
}
