package jsstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bulkstream/bulkstream/export"
	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// The manager's cluster mode, on a real JetStream server: two (or more)
// export.Managers, each with its own NATS connection, share the "jobs" KV
// bucket and the "files" Object Store bucket, as replicas would. They
// read one index (each replica would have its own copy of the same data).

// gate blocks the scans of one replica's jobs while closed, and tells
// when a scan started and how it ended.
type gate struct {
	open    chan struct{} // closed: scans run freely
	started chan string   // the job's first scanned type, once per scan
	ended   chan error    // why a blocked scan stopped
}

func newGate(blocked bool) *gate {
	g := &gate{open: make(chan struct{}), started: make(chan string, 16), ended: make(chan error, 16)}
	if !blocked {
		close(g.open)
	}
	return g
}

// gatedSource is an export.Source whose scans pass through a gate.
type gatedSource struct {
	export.Source
	g *gate
}

func (s gatedSource) Snapshot() (export.Snapshot, error) {
	snap, err := s.Source.Snapshot()
	if err != nil {
		return nil, err
	}
	return gatedSnapshot{snap, s.g}, nil
}

type gatedSnapshot struct {
	export.Snapshot
	g *gate
}

func (s gatedSnapshot) Scan(ctx context.Context, typ string, since, until uint64, fn func(export.Entry) error) error {
	select {
	case s.g.started <- typ:
	default:
	}
	select {
	case <-s.g.open:
	case <-ctx.Done():
		s.g.ended <- context.Cause(ctx)
		return ctx.Err()
	}
	return s.Snapshot.Scan(ctx, typ, since, until, fn)
}

// testWriter logs through t.Log, prefixed with a replica's name.
type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// replica is one export.Manager of the cluster test and its connection.
type replica struct {
	name string
	m    *export.Manager
	nc   *nats.Conn
	jobs *JobStore
	g    *gate
}

// clusterIndex is an index holding n resources, half Patients, half
// Observations, and the ids it holds.
func clusterIndex(t *testing.T, n int) (*index.Index, map[string]bool) {
	t.Helper()
	x := indextest.Open(t)
	var changes []index.Change
	want := map[string]bool{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		typ := []string{"Patient", "Observation"}[i%2]
		id := fmt.Sprintf("r%d", i)
		body := fmt.Sprintf(`{"resourceType":%q,"id":%q,"note":%q}`, typ, id, strings.Repeat("x", i%50))
		changes = append(changes, index.Change{Seq: uint64(i + 1), Time: t0.Add(time.Duration(i) * time.Second), Type: typ, ID: id, Body: []byte(body)})
		want[typ+"/"+id] = true
	}
	if _, err := x.Apply(t.Context(), changes, 0); err != nil {
		t.Fatal(err)
	}
	return x, want
}

// clusterConfig is the managers' configuration: small files in several
// parts, and leases long enough that a replica slowed down by a busy test
// machine keeps its jobs (TestClusterTakeover shortens them).
func clusterConfig(t *testing.T, name string) export.Config {
	return export.Config{
		Dir: t.TempDir(), FileMaxBytes: 5000, MinFreeBytes: -1, ExportReserveBytes: -1,
		Replica: name, Lease: 5 * time.Second, LeaseGrace: time.Second,
	}
}

// shortLease makes a replica lose a job 0.8 s after its last renewal.
func shortLease(c *export.Config) { c.Lease, c.LeaseGrace = 600*time.Millisecond, 200*time.Millisecond }

// startReplica starts a manager named name on srv through a connection of
// its own, sharing the "jobs" and "files" buckets; cfg may change its
// configuration.
func startReplica(t *testing.T, srv *server.Server, x *index.Index, name string, g *gate, cfg func(*export.Config)) *replica {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	files, err := NewFileStore(t.Context(), js, FileOptions{Bucket: "files", PartSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := NewJobStore(t.Context(), js, JobOptions{Bucket: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	c := clusterConfig(t, name)
	c.Files = files
	c.Logger = slog.New(slog.NewTextHandler(testWriter{t, name}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg != nil {
		cfg(&c)
	}
	m, err := export.NewManager(c, gatedSource{export.IndexSource(x), g}, zeroHead{}, jobs)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return &replica{name: name, m: m, nc: nc, jobs: jobs, g: g}
}

// record reads job id's record from the shared store.
func record(t *testing.T, s *JobStore, id string) (rec struct {
	State export.State `json:"state"`
	Owner string       `json:"owner"`
	Runs  int          `json:"runs"`
}, ok bool) {
	t.Helper()
	b, err := s.GetJob(id)
	if errors.Is(err, index.ErrNotFound) {
		return rec, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec, true
}

// waitFor polls cond every 10 ms for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// completed polls r until job id is completed and returns its manifest.
func completed(t *testing.T, r *replica, id string) *export.Manifest {
	t.Helper()
	var mf *export.Manifest
	waitFor(t, "job "+id+" to complete on "+r.name, func() bool {
		st, err := r.m.Status("", id)
		if err != nil {
			t.Fatalf("%s: status of %s: %v", r.name, id, err)
		}
		if st.State == export.Failed {
			t.Fatalf("%s: job %s failed: %s", r.name, id, st.Error)
		}
		mf = st.Manifest
		return st.State == export.Completed
	})
	return mf
}

// download reads every file of the manifest through r and checks that the
// lines are exactly the resources of want.
func download(t *testing.T, r *replica, id string, mf *export.Manifest, want map[string]bool) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	seen := map[string]bool{}
	for _, fi := range mf.Output {
		f, err := r.m.OpenFile("", id, fi.Name)
		if err != nil {
			t.Fatalf("%s: open %s: %v", r.name, fi.Name, err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil || int64(len(b)) != fi.Bytes {
			t.Fatalf("%s: %s: read %d bytes (%v), manifest says %d", r.name, fi.Name, len(b), err, fi.Bytes)
		}
		for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
			var res struct{ ResourceType, ID string }
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				t.Fatalf("%s: %s: %v", r.name, fi.Name, err)
			}
			key := res.ResourceType + "/" + res.ID
			if !want[key] || seen[key] {
				t.Fatalf("%s: %s: unexpected or repeated %s", r.name, fi.Name, key)
			}
			seen[key] = true
		}
		out[fi.Name] = b
	}
	if len(seen) != len(want) {
		t.Fatalf("%s: downloaded %d resources, want %d", r.name, len(seen), len(want))
	}
	return out
}

// TestClusterAnyReplica: a job kicked off on one replica is polled,
// downloaded (byte-identical) and cancelled on the other; the cancel
// removes it everywhere.
func TestClusterAnyReplica(t *testing.T) {
	srv := ingesttest.RunServer(t, ingesttest.Options(t))
	x, want := clusterIndex(t, 300)
	a := startReplica(t, srv, x, "a", newGate(false), nil)
	b := startReplica(t, srv, x, "b", newGate(false), nil)

	id, err := a.m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"})
	if err != nil {
		t.Fatal(err)
	}
	mf := completed(t, b, id)
	if len(mf.Output) < 2 {
		t.Fatalf("want several files, got %+v", mf.Output)
	}
	fromB := download(t, b, id, mf, want)
	fromA := download(t, a, id, completed(t, a, id), want)
	for name, data := range fromB {
		if !bytes.Equal(data, fromA[name]) {
			t.Errorf("%s differs between the replicas", name)
		}
	}
	// Range resume on the other replica: read half on a, the rest on b.
	fi := mf.Output[0]
	f, err := b.m.OpenFile("", id, fi.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(fi.Bytes/2, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(rest, fromA[fi.Name][fi.Bytes/2:]) {
		t.Errorf("%s: the second half read on b differs from a's", fi.Name)
	}
	rec, _ := record(t, a.jobs, id)
	if rec.State != export.Completed || rec.Runs != 1 || (rec.Owner != "a" && rec.Owner != "b") {
		t.Errorf("record %+v, want completed by a or b in one run", rec)
	}

	if err := b.m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to forget the cancelled job", func() bool {
		_, err := a.m.Status("", id)
		return errors.Is(err, export.ErrNotFound)
	})
	if _, ok := record(t, a.jobs, id); ok {
		t.Error("the cancelled job's record is still in the store")
	}
	if _, err := a.m.OpenFile("", id, fi.Name); !errors.Is(err, export.ErrNotFound) {
		t.Errorf("OpenFile of a cancelled job on a = %v, want ErrNotFound", err)
	}
}

// TestClusterCancelStopsOwner: a cancel on another replica stops the run
// on the owner.
func TestClusterCancelStopsOwner(t *testing.T) {
	srv := ingesttest.RunServer(t, ingesttest.Options(t))
	x, _ := clusterIndex(t, 20)
	a := startReplica(t, srv, x, "a", newGate(true), nil)
	b := startReplica(t, srv, x, "b", newGate(true), nil)
	id, err := a.m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"})
	if err != nil {
		t.Fatal(err)
	}
	var owner, other *replica
	select {
	case <-a.g.started:
		owner, other = a, b
	case <-b.g.started:
		owner, other = b, a
	case <-time.After(10 * time.Second):
		t.Fatal("no replica started the job")
	}
	if rec, _ := record(t, a.jobs, id); rec.State != export.Running || rec.Owner != owner.name {
		t.Fatalf("record %+v, want running on %s", rec, owner.name)
	}
	waitFor(t, other.name+" to see the job running", func() bool {
		st, err := other.m.Status("", id)
		return err == nil && st.State == export.Running && st.Progress == "running on replica "+owner.name
	})
	if err := other.m.Cancel("", id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-owner.g.ended:
		if err == nil {
			t.Fatal("the owner's scan ended without a cause")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the owner's run did not stop after the cancel on the other replica")
	}
	waitFor(t, "the owner to forget the job", func() bool {
		_, err := owner.m.Status("", id)
		return errors.Is(err, export.ErrNotFound)
	})
}

// TestClusterTakeover: a replica that dies while running a job (its
// connection gone, its scan stuck) loses it when its lease expires; the
// other replica runs it again and completes it, and the dead one's run
// stops itself.
func TestClusterTakeover(t *testing.T) {
	srv := ingesttest.RunServer(t, ingesttest.Options(t))
	x, want := clusterIndex(t, 100)
	a := startReplica(t, srv, x, "a", newGate(true), shortLease)
	id, err := a.m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"})
	if err != nil {
		t.Fatal(err)
	}
	<-a.g.started
	b := startReplica(t, srv, x, "b", newGate(false), shortLease) // started once a holds the job
	waitFor(t, "b to see the job running on a", func() bool {
		st, err := b.m.Status("", id)
		return err == nil && st.Progress == "running on replica a"
	})
	a.nc.Close() // a is cut off: it can neither renew nor write

	mf := completed(t, b, id)
	download(t, b, id, mf, want)
	rec, _ := record(t, b.jobs, id)
	if rec.State != export.Completed || rec.Owner != "b" || rec.Runs != 2 {
		t.Errorf("record %+v, want completed by b in its second run", rec)
	}
	select {
	case err := <-a.g.ended:
		if !strings.Contains(fmt.Sprint(err), "lease") {
			t.Errorf("a's run stopped with %v, want the lost lease", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a's run did not stop itself after losing its lease")
	}
}

// TestClusterClaimsOnce: jobs kicked off on both replicas, each with two
// workers, all complete, each in exactly one run.
func TestClusterClaimsOnce(t *testing.T) {
	srv := ingesttest.RunServer(t, ingesttest.Options(t))
	x, want := clusterIndex(t, 60)
	a := startReplica(t, srv, x, "a", newGate(false), func(c *export.Config) { c.MaxActiveJobs = 50 })
	b := startReplica(t, srv, x, "b", newGate(false), func(c *export.Config) { c.MaxActiveJobs = 50 })
	var ids []string
	for i := range 12 {
		r := []*replica{a, b}[i%2]
		id, err := r.m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	owners := map[string]int{}
	for _, id := range ids {
		download(t, a, id, completed(t, a, id), want)
		rec, _ := record(t, a.jobs, id)
		if rec.Runs != 1 {
			t.Errorf("job %s ran %d times", id, rec.Runs)
		}
		owners[rec.Owner]++
	}
	t.Logf("jobs completed by replica: %v", owners)
}

// TestClusterAdmission: the limit on active jobs counts every replica's
// jobs.
func TestClusterAdmission(t *testing.T) {
	srv := ingesttest.RunServer(t, ingesttest.Options(t))
	x, _ := clusterIndex(t, 10)
	one := func(c *export.Config) { c.MaxActiveJobs = 1 }
	a := startReplica(t, srv, x, "a", newGate(true), one)
	b := startReplica(t, srv, x, "b", newGate(true), one)
	id, err := a.m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to see a's job", func() bool {
		_, err := b.m.Status("", id)
		return err == nil
	})
	var tm *export.TooManyJobsError
	if _, err := b.m.Kickoff(t.Context(), export.Kickoff{RequestURL: "http://localhost/$export"}); !errors.As(err, &tm) {
		t.Fatalf("kick-off on b with a's job active = %v, want TooManyJobsError", err)
	}
}
