package jsstore

import (
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// TestFileOptionsRetention: Replicas, MaxAge and MaxBytes out of range
// are errors naming the field.
func TestFileOptionsRetention(t *testing.T) {
	for _, c := range []struct {
		o     FileOptions
		field string
	}{
		{FileOptions{Bucket: "b", Replicas: 6}, "Replicas"},
		{FileOptions{Bucket: "b", Replicas: -1}, "Replicas"},
		{FileOptions{Bucket: "b", MaxAge: -time.Second}, "MaxAge"},
		{FileOptions{Bucket: "b", MaxAge: 10 * time.Millisecond}, "MaxAge"},
		{FileOptions{Bucket: "b", MaxBytes: -1}, "MaxBytes"},
	} {
		if err := c.o.validate(); err == nil || !strings.Contains(err.Error(), "FileOptions."+c.field) {
			t.Errorf("%+v: %v, want an error naming FileOptions.%s", c.o, err, c.field)
		}
	}
	o := FileOptions{Bucket: "b", Replicas: 5, MaxAge: time.Second, MaxBytes: 1}
	if err := o.validate(); err != nil || o.Replicas != 5 || o.MaxAge != time.Second || o.MaxBytes != 1 {
		t.Errorf("%+v: %v", o, err)
	}
}

// TestFileStoreMaxAge: NewFileStore sets the bucket's TTL, on an existing
// bucket too, and the server removes a file once it is older.
func TestFileStoreMaxAge(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	open := func(maxAge time.Duration) *FileStore {
		t.Helper()
		s, err := NewFileStore(t.Context(), js, FileOptions{Bucket: "files", MaxAge: maxAge, PartSize: 1000, ReadRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.obs.Status(t.Context())
		if err != nil || st.TTL() != maxAge {
			t.Fatalf("bucket TTL %v (%v), want %v", st.TTL(), err, maxAge)
		}
		return s
	}
	open(0)
	s := open(time.Second)
	if err := s.NewJob("j1"); err != nil {
		t.Fatal(err)
	}
	write(t, s, "j1", "Patient.ndjson", content(2500), 700)
	if _, err := s.Stat("j1", "Patient.ndjson"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := s.Stat("j1", "Patient.ndjson")
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stat 20 s after a write to a bucket with a TTL of 1 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	jobs, err := s.Jobs()
	if err != nil || len(jobs) != 0 {
		t.Errorf("Jobs after expiry = %v, %v; want none", jobs, err)
	}
}

// TestFileStoreMaxBytes: a file that would pass the bucket's MaxBytes
// fails to write and is not committed, and the file stored before it
// still reads back whole.
func TestFileStoreMaxBytes(t *testing.T) {
	_, _, js := ingesttest.RunJetStream(t)
	s, err := NewFileStore(t.Context(), js, FileOptions{Bucket: "files", MaxBytes: 20000, PartSize: 1000, ReadRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	small := content(3000)
	write(t, s, "j1", "small.ndjson", small, 1000)

	w, err := s.Create("j2", "big.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	big := content(50000)
	for p := big; len(p) > 0 && err == nil; p = p[min(len(p), 1000):] {
		_, err = w.Write(p[:min(len(p), 1000)])
	}
	if err == nil {
		err = w.Commit()
	}
	if err == nil {
		t.Fatal("a file of 50000 bytes committed to a bucket of MaxBytes 20000")
	}
	t.Logf("write past MaxBytes: %v", err)
	w.Abort()
	if _, err := s.Stat("j2", "big.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of the file that failed: %v, want fs.ErrNotExist", err)
	}
	f, err := s.Open("j1", "small.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := io.ReadAll(f); err != nil || string(got) != string(small) {
		t.Errorf("the file stored before: %d bytes, %v; want %d", len(got), err, len(small))
	}
}
