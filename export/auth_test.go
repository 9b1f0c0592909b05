package export

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// kickoffAs starts an export as client.
func kickoffAs(t *testing.T, m *Manager, k Kickoff) string {
	t.Helper()
	if k.RequestURL == "" {
		k.RequestURL = "http://x/$export"
	}
	id, err := m.Kickoff(t.Context(), k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestJobsBelongToTheirClient: another client's (or an anonymous caller's)
// status, file and cancel requests see nothing, and change nothing.
func TestJobsBelongToTheirClient(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	m := e.manager(t, Config{}, nil)
	id := kickoffAs(t, m, Kickoff{Client: "a"})
	mf := waitManifest(t, m, id)
	name := mf.Output[0].Name

	for _, other := range []string{"b", "", "A", "a "} {
		if _, err := m.Status(other, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Status as %q = %v, want ErrNotFound", other, err)
		}
		if f, err := m.OpenFile(other, id, name); !errors.Is(err, ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Errorf("OpenFile as %q = %v, want ErrNotFound", other, err)
		}
		if err := m.Cancel(other, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Cancel as %q = %v, want ErrNotFound", other, err)
		}
	}
	// Still there for its owner, files and all.
	if st, err := m.Status("a", id); err != nil || st.State != Completed {
		t.Fatalf("Status as owner = %+v, %v", st, err)
	}
	f, err := m.OpenFile("a", id, name)
	if err != nil {
		t.Fatalf("OpenFile as owner: %v", err)
	}
	f.Close()
	if err := m.Cancel("a", id); err != nil {
		t.Fatalf("Cancel as owner: %v", err)
	}
	if _, err := m.Status("a", id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status after cancel = %v, want ErrNotFound", err)
	}
}

func TestClientQuota(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 400)...)
	hook, blocked := blockAfter(10)
	m := e.manager(t, Config{Workers: 1, MaxActiveJobs: 5}, func(m *Manager) { m.hookScan = hook })
	a1 := kickoffAs(t, m, Kickoff{Client: "a", MaxJobs: 2})
	kickoffAs(t, m, Kickoff{Client: "a", MaxJobs: 2})
	<-blocked
	_, err := m.Kickoff(t.Context(), Kickoff{Client: "a", MaxJobs: 2, RequestURL: "http://x/$export"})
	var tm *TooManyJobsError
	if !errors.As(err, &tm) || tm.Reason != ReasonClientQuota || tm.Limit != 2 ||
		tm.RetryAfter < time.Second || tm.RetryAfter > time.Minute {
		t.Fatalf("third kick-off of a = %#v, want *TooManyJobsError client_quota, limit 2", err)
	}
	// Other clients are not affected by a's quota...
	kickoffAs(t, m, Kickoff{Client: "b", MaxJobs: 2})
	kickoffAs(t, m, Kickoff{Client: "b", MaxJobs: 2})
	kickoffAs(t, m, Kickoff{Client: "c", MaxJobs: 1})
	// ...but the server limit (5) still holds for everyone.
	_, err = m.Kickoff(t.Context(), Kickoff{Client: "d", MaxJobs: 2, RequestURL: "http://x/$export"})
	if !errors.As(err, &tm) || tm.Reason != ReasonServerLimit || tm.Limit != 5 {
		t.Fatalf("sixth kick-off = %#v, want *TooManyJobsError server_limit, limit 5", err)
	}
	if got := testutil.ToFloat64(m.met.throttled.WithLabelValues(ReasonClientQuota)); got != 1 {
		t.Errorf("throttled{client_quota} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.met.throttled.WithLabelValues(ReasonServerLimit)); got != 1 {
		t.Errorf("throttled{server_limit} = %v, want 1", got)
	}
	// Cancelling one of a's jobs gives a its slot back.
	if err := m.Cancel("a", a1); err != nil {
		t.Fatal(err)
	}
	kickoffAs(t, m, Kickoff{Client: "a", MaxJobs: 2})
}

func TestAllowedTypes(t *testing.T) {
	e := newEnv(t)
	e.f.apply(t, syntheaResources(t, 100)...)
	m := e.manager(t, Config{}, nil)
	allowed := []string{"Observation", "Patient"}

	// _type outside the allowed set: 403, whether or not lenient.
	for _, lenient := range []bool{false, true} {
		_, err := m.Kickoff(t.Context(), Kickoff{Client: "a", AllowedTypes: allowed, Lenient: lenient,
			Params: []Param{{Name: "_type", Value: "Patient,Condition,Observation,Encounter"}}, RequestURL: "http://x/$export"})
		var fe *ForbiddenError
		if !errors.As(err, &fe) || !slices.Equal(fe.Types, []string{"Condition", "Encounter"}) {
			t.Errorf("lenient %v: kick-off = %v, want *ForbiddenError [Condition Encounter]", lenient, err)
		}
	}

	// Without _type: only the allowed types.
	mf := waitManifest(t, m, kickoffAs(t, m, Kickoff{Client: "a", AllowedTypes: allowed}))
	var got []string
	for _, fi := range mf.Output {
		if !slices.Contains(got, fi.Type) {
			got = append(got, fi.Type)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, allowed) {
		t.Errorf("types exported without _type = %v, want %v", got, allowed)
	}

	// A _type inside the set is fine; nil allows everything.
	kickoffAs(t, m, Kickoff{Client: "a", AllowedTypes: allowed, Params: []Param{{Name: "_type", Value: "Patient"}}})
	mf = waitManifest(t, m, kickoffAs(t, m, Kickoff{Client: "a"}))
	if len(mf.Output) <= 2 {
		t.Errorf("an unrestricted export wrote %d files, want every type", len(mf.Output))
	}
}
