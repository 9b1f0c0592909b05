package index_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/internal/synth"
)

// benchResource returns a compact resource of about size bytes.
func benchResource(typ, id string, size int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"resourceType":"` + typ + `","id":"` + id + `","meta":{"source":"#bench","profile":["http://example.org/StructureDefinition/p"]},"active":true,"name":[{"family":"Doe","given":["Jane","Q"]}],"birthDate":"1970-01-01","text":{"status":"generated","div":"`)
	for sb.Len() < size-3 {
		sb.WriteString("lorem ipsum ")
	}
	sb.WriteString(`"}}`)
	return []byte(sb.String())
}

// BenchmarkApply measures synced Apply batches of ~1.3 KB resources on a
// real disk: one op is one batch. Ids cycle through 100k. In the update
// and noop cases every id is written once before the timer starts; then
// each change is an update whose body differs from the stored one
// (update: delete the old c/ entry, write the new one) or equals it but
// for meta.versionId and meta.lastUpdated (noop: nothing is written).
func BenchmarkApply(b *testing.B) {
	for _, batch := range []int{500, 100} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) { benchApply(b, batch, "insert") })
	}
	for _, mode := range []string{"update", "noop"} {
		b.Run("batch=500/"+mode, func(b *testing.B) { benchApply(b, 500, mode) })
	}
}

func benchApply(b *testing.B, batch int, mode string) {
	x, err := index.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { x.Close() }() // x is replaced in the insert case
	const nIDs = 100_000
	ids := make([]string, nIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("patient-%06d", i)
	}
	// Two bodies per position in the batch: an update alternates between
	// them, so that it differs from the version it replaces.
	var bodies [2][][]byte
	var bytesPerBatch int64
	for k := range bodies {
		bodies[k] = make([][]byte, batch)
		for j := range bodies[k] {
			bodies[k][j] = benchResource("Patient", ids[j], 1300)
			if k == 1 {
				bodies[k][j] = bytes.Replace(bodies[k][j], []byte("Jane"), []byte("June"), 1)
			}
		}
	}
	for j := range bodies[0] {
		bytesPerBatch += int64(len(bodies[0][j]))
	}
	changes := make([]index.Change, batch)
	for j := range changes {
		changes[j] = index.Change{Type: "Patient"}
	}
	ctx := context.Background()
	msg := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	next := func() error {
		for j := range changes {
			seq++
			msg = msg.Add(100 * time.Microsecond)
			k := 0
			if mode == "update" {
				k = int((seq-1)/nIDs) % 2
			}
			changes[j].Seq, changes[j].Time, changes[j].ID = seq, msg, ids[int(seq)%nIDs]
			changes[j].Body = bodies[k][j]
		}
		_, err := x.Apply(ctx, changes, 0)
		return err
	}
	if mode != "insert" {
		for range nIDs / batch {
			if err := next(); err != nil {
				b.Fatal(err)
			}
		}
	}
	ops := 0
	b.SetBytes(bytesPerBatch)
	b.ReportAllocs()
	for b.Loop() {
		if mode == "insert" && seq >= nIDs {
			b.StopTimer() // fresh ids: the next batches would be updates
			x.Close()
			if x, err = index.Open(b.TempDir(), nil); err != nil {
				b.Fatal(err)
			}
			seq = 0
			b.StartTimer()
		}
		if err := next(); err != nil {
			b.Fatal(err)
		}
		ops++
	}
	b.ReportMetric(float64(ops*batch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRawPebbleSyncedBatch is the physical limit BenchmarkApply is
// measured against: plain Pebble batches of 500 × 1 KB values committed
// with pebble.Sync, on the same kind of directory.
func BenchmarkRawPebbleSyncedBatch(b *testing.B) {
	const batch = 500
	db, err := pebble.Open(b.TempDir(), rawPebbleOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	key := make([]byte, 0, 16)
	var n uint64
	ops := 0
	b.SetBytes(batch * int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		wb := db.NewBatch()
		for range batch {
			n++
			key = binary.BigEndian.AppendUint64(append(key[:0], "k/"...), n)
			if err := wb.Set(key, value, nil); err != nil {
				b.Fatal(err)
			}
		}
		if err := wb.Commit(pebble.Sync); err != nil {
			b.Fatal(err)
		}
		wb.Close()
		ops++
	}
	b.ReportMetric(float64(ops*batch)/b.Elapsed().Seconds(), "keys/s")
}

const scanResources = 100_000

// BenchmarkScan measures a full export scan of one type holding 100k
// resources of ~1.3 KB (plus 10k of another type around it) through a
// Snapshot; one op is one whole scan.
func BenchmarkScan(b *testing.B) {
	x, err := index.Open(b.TempDir(), &index.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	ctx := context.Background()
	msg := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	var changes []index.Change
	flush := func() {
		if _, err := x.Apply(ctx, changes, 0); err != nil {
			b.Fatal(err)
		}
		changes = changes[:0]
	}
	for i := range scanResources + scanResources/10 {
		typ := "Patient"
		if i%11 == 10 {
			typ = "Observation"
		}
		id := fmt.Sprintf("%s-%06d", strings.ToLower(typ), i)
		seq++
		changes = append(changes, index.Change{Seq: seq, Time: msg.Add(time.Duration(i) * time.Millisecond), Type: typ, ID: id, Body: benchResource(typ, id, 1300)})
		if len(changes) == 5000 {
			flush()
		}
	}
	flush()
	s, err := x.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var total int64
	n := 0
	if err := s.Scan(ctx, "Patient", 0, index.Unbounded, func(e index.Entry) error {
		total += int64(len(e.Resource))
		n++
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if n < scanResources*9/10 {
		b.Fatalf("scan found %d resources", n)
	}
	ops := 0
	b.SetBytes(total)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var got int
		if err := s.Scan(ctx, "Patient", 0, index.Unbounded, func(e index.Entry) error {
			got += len(e.Resource)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if int64(got) != total {
			b.Fatalf("scan read %d bytes, want %d", got, total)
		}
		ops++
	}
	b.ReportMetric(float64(ops*n)/b.Elapsed().Seconds(), "resources/s")
}

// BenchmarkRawPebbleScan is BenchmarkScan's limit: a bounded iteration over
// 100k 1.3 KB values in a plain Pebble DB snapshot.
func BenchmarkRawPebbleScan(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), rawPebbleOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	value := benchResource("Patient", "x", 1300)
	wb := db.NewBatch()
	for i := range uint64(scanResources) {
		if err := wb.Set(binary.BigEndian.AppendUint64([]byte("k/"), i), value, nil); err != nil {
			b.Fatal(err)
		}
		if wb.Len() > 8<<20 {
			if err := wb.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			wb.Close()
			wb = db.NewBatch()
		}
	}
	if err := wb.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	wb.Close()
	snap := db.NewSnapshot()
	defer snap.Close()
	ops := 0
	b.SetBytes(int64(scanResources * len(value)))
	b.ReportAllocs()
	for b.Loop() {
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte("k/"), UpperBound: []byte("k0")})
		if err != nil {
			b.Fatal(err)
		}
		var got int
		for valid := it.First(); valid; valid = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				b.Fatal(err)
			}
			got += len(v)
		}
		if err := it.Close(); err != nil {
			b.Fatal(err)
		}
		if got != scanResources*len(value) {
			b.Fatalf("scan read %d bytes", got)
		}
		ops++
	}
	b.ReportMetric(float64(ops*scanResources)/b.Elapsed().Seconds(), "resources/s")
}

// rawPebbleOptions are the raw-Pebble baselines' options: the index's
// format version, Pebble's defaults otherwise, no log lines.
func rawPebbleOptions() *pebble.Options {
	return &pebble.Options{FormatMajorVersion: pebble.FormatValueSeparation, Logger: quietLogger{}}
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// applySampleFile is the Synthea sample BenchmarkApplySample multiplies.
const applySampleFile = "../testdata/synthea-r4-100-patients.ndjson.gz"

// BenchmarkApplySample measures what the reference index (the patient
// compartment, Group member and Provenance target keys: Options without
// NoReferenceIndex, as the product always runs) costs Apply, on a realistic
// mix: copies of the Synthea sample (internal/synth, seed 1, fresh ids in
// every copy, so every change is an insert), each copy's resources in one
// fixed shuffled order (the sample is sorted by type; shuffled, every
// batch holds the sample's mix of types), in synced batches of 500.
//
// One op applies the same batch to two fresh indexes, one with the
// reference index and one without, in alternating order (on then off,
// off then on), and times each Apply on its own, so both run under the
// same disk and CPU conditions on a shared machine; ns/op is therefore
// the time of both. Reported: events/s, MB/s (resource bodies, 10^6
// bytes) and allocs/event of the index with references, the same with
// the prefix norefs- for the one without, and slower-%, how much lower
// the rate with references is (100 × (1 − on/off)). allocs/event counts
// the process's heap allocations during each Apply (Pebble's background
// work included). One untimed batch goes to each index first. Copies
// are generated when the previous one runs out, outside the timer; Apply
// keeps nothing of a Change's Body. At the end it checks that a Patient
// applied is in its own compartment in the index with references and in
// no compartment in the other.
func BenchmarkApplySample(b *testing.B) {
	const batch = 500
	s, err := synth.OpenSample(applySampleFile)
	if err != nil {
		b.Fatal(err)
	}
	const maxCopies = 1 << 16 // copies are generated on demand
	g := &synth.Generator{Sample: s, Seed: 1, Scale: maxCopies}
	perSample := int(g.Len() / maxCopies)
	order := rand.New(rand.NewPCG(1, 2)).Perm(perSample)
	var pending []index.Change
	copies := 0
	more := func() {
		arena := make([]byte, 0, g.Size()/maxCopies)
		msgs := make([]index.Change, 0, perSample)
		if err := g.EachCopy(copies, func(typ, id string, line []byte) error {
			start := len(arena)
			arena = append(arena, line...)
			msgs = append(msgs, index.Change{Type: typ, ID: id, Body: arena[start:len(arena):len(arena)]})
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		copies++
		next := make([]index.Change, 0, len(pending)+len(msgs))
		next = append(next, pending...)
		for _, i := range order {
			next = append(next, msgs[i])
		}
		pending = next
	}

	type side struct {
		x              *index.Index
		d              time.Duration
		allocs, events uint64
		bytes          int64
	}
	noRefs := index.Options{NoReferenceIndex: true}
	var sides [2]*side // on, off
	for i, opts := range []*index.Options{nil, &noRefs} {
		x, err := index.Open(b.TempDir(), opts)
		if err != nil {
			b.Fatal(err)
		}
		defer x.Close()
		sides[i] = &side{x: x}
	}
	allocs := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	readAllocs := func() uint64 {
		metrics.Read(allocs)
		return allocs[0].Value.Uint64()
	}
	ctx := context.Background()
	msg := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	changes := make([]index.Change, batch)
	var patient string // the first Patient applied, for the check at the end
	fill := func() (size int64) {
		if len(pending) < batch {
			b.StopTimer()
			more()
			b.StartTimer()
		}
		for j := range changes {
			seq++
			msg = msg.Add(100 * time.Microsecond)
			changes[j] = pending[j]
			changes[j].Seq, changes[j].Time = seq, msg
			size += int64(len(changes[j].Body))
		}
		pending = pending[batch:]
		for _, c := range changes {
			if c.Type == "Patient" && patient == "" {
				patient = c.ID
			}
		}
		return size
	}
	// One untimed batch on each first: the first commit of an index
	// pays for its WAL's first pages.
	fill()
	for _, sd := range sides {
		if _, err := sd.x.Apply(ctx, changes, 0); err != nil {
			b.Fatal(err)
		}
	}
	ops := 0
	for b.Loop() {
		size := fill()
		for k := range 2 {
			sd := sides[(ops+k)%2]
			a0 := readAllocs()
			t0 := time.Now()
			if _, err := sd.x.Apply(ctx, changes, 0); err != nil {
				b.Fatal(err)
			}
			sd.d += time.Since(t0)
			sd.allocs += readAllocs() - a0
			sd.events += batch
			sd.bytes += size
		}
		ops++
	}
	on, off := sides[0], sides[1]
	// Both measured what they should: a Patient is in its own
	// compartment with the reference index, in none without.
	if patient != "" {
		for i, sd := range sides {
			n := 0
			snap, err := sd.x.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			err = snap.ScanPatient(ctx, patient, "Patient", 0, index.Unbounded, func(index.Entry) error { n++; return nil })
			snap.Close()
			if err != nil {
				b.Fatal(err)
			}
			if want := 1 - i; n != want {
				b.Fatalf("index %d (0: with references): Patient/%s in its own compartment %d times, want %d", i, patient, n, want)
			}
		}
	}
	rate := func(sd *side) float64 { return float64(sd.events) / sd.d.Seconds() }
	b.ReportMetric(rate(on), "events/s")
	b.ReportMetric(float64(on.bytes)/1e6/on.d.Seconds(), "MB/s")
	b.ReportMetric(float64(on.allocs)/float64(on.events), "allocs/event")
	b.ReportMetric(rate(off), "norefs-events/s")
	b.ReportMetric(float64(off.bytes)/1e6/off.d.Seconds(), "norefs-MB/s")
	b.ReportMetric(float64(off.allocs)/float64(off.events), "norefs-allocs/event")
	b.ReportMetric(100*(1-rate(on)/rate(off)), "slower-%")
}
