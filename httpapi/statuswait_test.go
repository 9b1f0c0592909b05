package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/export"
)

func TestPreferWaitParse(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   time.Duration
	}{
		{nil, 0},
		{[]string{"wait=5"}, 5 * time.Second},
		{[]string{`respond-async, WAIT = "7" ; x=y`}, 7 * time.Second},
		{[]string{"handling=lenient", "wait=2"}, 2 * time.Second},
		{[]string{"wait=100"}, export.MaxWait},
		{[]string{"wait=99999999999999999999"}, 0},
		{[]string{"wait=0"}, 0},
		{[]string{"wait=-3"}, 0},
		{[]string{"wait=abc"}, 0},
		{[]string{"wait"}, 0},
		{[]string{"wait=3, wait=9"}, 3 * time.Second},
	} {
		if got := preferWait(tc.values); got != tc.want {
			t.Errorf("preferWait(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

// waitJobs is a fakeJobs whose Wait records the wait asked and blocks
// until the request's context ends or release is closed.
type waitJobs struct {
	*fakeJobs
	mu      sync.Mutex
	asked   []time.Duration
	waiting chan struct{} // receives when a Wait starts
	release chan struct{}
}

func (f *waitJobs) Wait(ctx context.Context, client, id string, d time.Duration) (export.Status, error) {
	f.mu.Lock()
	f.asked = append(f.asked, d)
	f.mu.Unlock()
	f.waiting <- struct{}{}
	select {
	case <-ctx.Done():
	case <-f.release:
	}
	return f.Status(client, id)
}

// within receives from ch, failing the test when nothing comes within 10 s
// (rather than hanging until the test binary's timeout).
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		panic("unreachable")
	}
}

func TestStatusPreferWaitFake(t *testing.T) {
	jobs := &waitJobs{fakeJobs: newFakeJobs(), waiting: make(chan struct{}, 10), release: make(chan struct{})}
	jobs.statuses["j1"] = export.Status{State: export.Running, RetryAfter: time.Second}
	h := newTestHandler(t, jobs, nil)

	// No wait asked, or an unusable one: Status at once.
	for _, p := range []string{"", "wait=0", "wait=x", "respond-async"} {
		rec := serve(h, request{method: "GET", target: "/fhir/bulkstatus/j1", header: http.Header{"Prefer": {p}}})
		if rec.Code != http.StatusAccepted || len(jobs.asked) != 0 {
			t.Fatalf("Prefer %q: %d, waits %v", p, rec.Code, jobs.asked)
		}
	}

	// A client that disconnects is released.
	ctx, cancel := context.WithCancel(t.Context())
	r := httptest.NewRequestWithContext(ctx, "GET", "/fhir/bulkstatus/j1", nil)
	r.Header.Set("Prefer", "wait=5")
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		done <- rec.Code
	}()
	within(t, jobs.waiting, "call to Wait")
	cancel()
	within(t, done, "answer after the disconnect")
	if len(jobs.asked) != 1 || jobs.asked[0] != 5*time.Second {
		t.Errorf("waits asked %v, want [5s]", jobs.asked)
	}

	// Released with the job completed: 200 with the manifest.
	r = httptest.NewRequest("GET", "/fhir/bulkstatus/j1", nil)
	r.Header.Set("Prefer", "wait=60")
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		done <- rec.Code
	}()
	within(t, jobs.waiting, "call to Wait")
	jobs.fakeJobs.mu.Lock()
	jobs.statuses["j1"] = export.Status{State: export.Completed, Manifest: &export.Manifest{TransactionTime: "2026-12-02T06:00:00Z"}}
	jobs.fakeJobs.mu.Unlock()
	close(jobs.release)
	if code := within(t, done, "answer after completion"); code != http.StatusOK {
		t.Errorf("after completion: %d, want 200", code)
	}
	if jobs.asked[1] != export.MaxWait {
		t.Errorf("wait=60 asked %v, want the cap %v", jobs.asked[1], export.MaxWait)
	}
}

// TestStatusPreferWaitFirstPoll: against a real manager, the very first
// poll of a job, asking to wait, gets the manifest (200), not the
// first-poll 202 a poll without the preference gets.
func TestStatusPreferWaitFirstPoll(t *testing.T) {
	h := conformanceServer(t)
	status := local(t, kickoffOK(t, h, request{method: "GET", target: "/fhir/$export", header: kickoffHeaders()}))
	rec := serve(h, request{method: "GET", target: status, header: http.Header{"Prefer": {"wait=10"}}})
	if rec.Code != http.StatusOK {
		t.Fatalf("first poll with Prefer: wait=10 = %d (%s), want 200", rec.Code, rec.Header().Get("X-Progress"))
	}
	var m manifestJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || len(m.Output) == 0 {
		t.Fatalf("manifest %s: %v", rec.Body, err)
	}
	// A second job polled without the preference keeps the first-poll 202.
	status = local(t, kickoffOK(t, h, request{method: "GET", target: "/fhir/$export?_type=Patient", header: kickoffHeaders()}))
	if rec := serve(h, request{method: "GET", target: status}); rec.Code != http.StatusAccepted {
		t.Errorf("first poll without Prefer: wait = %d, want 202", rec.Code)
	}
}
