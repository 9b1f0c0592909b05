package smart

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

func TestReplayFile(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	path := tempPath(t, "replay.log")
	r, err := openReplayFile(path, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	seen := func(iss, jti string, forget time.Duration) bool {
		t.Helper()
		ok, err := r.Seen(iss, jti, clock.Now().Add(forget))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	steps := []struct {
		iss, jti string
		forget   time.Duration
		want     bool
	}{
		{"a", "1", time.Minute, false},
		{"a", "1", time.Minute, true},
		{"b", "1", time.Minute, false}, // same jti, other issuer
		{"a", "2", 10 * time.Second, false},
		{"a", "2", 10 * time.Second, true},
	}
	for i, s := range steps {
		if got := seen(s.iss, s.jti, s.forget); got != s.want {
			t.Fatalf("step %d Seen(%s, %s) = %v, want %v", i, s.iss, s.jti, got, s.want)
		}
	}

	// Survives a restart.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Seen("a", "9", clock.Now()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Seen after Close: %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	r, err = openReplayFile(path, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.len(); got != 3 {
		t.Fatalf("%d entries after reopen, want 3", got)
	}
	if !seen("a", "1", time.Minute) || !seen("a", "2", time.Minute) {
		t.Fatal("jti forgotten across a restart")
	}

	// Expiry: a-2 may be forgotten after 10 s, the others after 1 min.
	clock.Add(11 * time.Second)
	if seen("a", "2", 10*time.Second) {
		t.Fatal("expired entry still seen")
	}
	if !seen("a", "1", time.Minute) {
		t.Fatal("live entry forgotten")
	}
	clock.Add(2 * time.Minute)
	if got := r.len(); got != 3 {
		t.Fatalf("%d entries before pruning, want 3 (pruning happens on Seen)", got)
	}
	if seen("c", "1", time.Minute) {
		t.Fatal("new entry seen")
	}
	if got := r.len(); got != 1 {
		t.Fatalf("%d entries after pruning, want 1", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen compacts the file down to the live entries, and tolerates a
	// torn last line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"iss":"z","jti":"to`)
	f.Close()
	if n := countLines(t, path); n < 5 {
		t.Fatalf("file has %d lines before compaction, want ≥ 5", n)
	}
	r, err = openReplayFile(path, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := countLines(t, path); n != 1 {
		t.Fatalf("file has %d lines after compaction, want 1", n)
	}
	if !seen("c", "1", time.Minute) {
		t.Fatal("live entry lost in compaction")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("replay file mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	// Appending after compaction goes to the new file.
	if seen("d", "1", time.Minute) {
		t.Fatal("new entry seen")
	}
	if n := countLines(t, path); n != 2 {
		t.Fatalf("file has %d lines, want 2", n)
	}
}

func TestReplayFileConcurrent(t *testing.T) {
	r, err := OpenReplayFile(tempPath(t, "replay.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const n = 16
	var wg sync.WaitGroup
	fresh := make(chan bool, n)
	for range n {
		wg.Go(func() {
			ok, err := r.Seen("a", "same", time.Now().Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			fresh <- !ok
		})
	}
	wg.Wait()
	close(fresh)
	count := 0
	for f := range fresh {
		if f {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d of %d concurrent uses accepted, want exactly 1", count, n)
	}
}
