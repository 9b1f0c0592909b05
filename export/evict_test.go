package export

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/bulkstream/bulkstream/index"
)

// TestMaxFinishedJobs: past MaxFinishedJobs, the oldest finished jobs are
// removed (record, files, status) long before their TTL, and the newest
// stay served.
func TestMaxFinishedJobs(t *testing.T) {
	const limit, jobs = 4, 12
	e := newEnv(t)
	e.f.apply(t, resource{"Patient", "p1", []byte(`{"resourceType":"Patient","id":"p1"}`)})
	m := e.manager(t, Config{Workers: 1, MaxFinishedJobs: limit}, nil)
	var ids []string
	for range jobs {
		id := submit(t, m, fullRequest())
		waitManifest(t, m, id)
		ids = append(ids, id)
	}
	gone := func(id string) bool {
		_, err := m.Status("", id)
		return errors.Is(err, ErrNotFound)
	}
	// The sweep runs in the expiry loop, woken by each finish here (a
	// tenth of 4 rounds up to 1). A job leaves Status before remove
	// deletes its record and files, so those are polled for too.
	checkFor(t, 10*time.Second, func() error {
		for _, id := range ids[:jobs-limit] {
			if !gone(id) {
				return fmt.Errorf("job %s, one of the %d oldest, is still kept", id, jobs-limit)
			}
			if _, err := os.Stat(m.jobDir(id)); !os.IsNotExist(err) {
				return fmt.Errorf("evicted job %s: files still on disk (%v)", id, err)
			}
			if _, err := e.x.GetJob(id); !errors.Is(err, index.ErrNotFound) {
				return fmt.Errorf("evicted job %s: record still stored (%v)", id, err)
			}
		}
		return nil
	})
	for _, id := range ids[jobs-limit:] {
		if st, err := m.Status("", id); err != nil || st.State != Completed {
			t.Errorf("job %s, one of the %d newest: %+v %v, want completed", id, limit, st, err)
		}
	}
}
