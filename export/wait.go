package export

import (
	"context"
	"time"
)

// MaxWait caps how long [Manager.Wait] holds a status request, whatever
// the client's Prefer: wait asks (https://www.rfc-editor.org/rfc/rfc7240#section-4.3).
const MaxWait = 30 * time.Second

// MaxWaiters bounds the status requests [Manager.Wait] holds at once; past
// it Wait answers at once, as if no wait was asked.
const MaxWaiters = 1000

// waitersChan returns the channel closed when the job next leaves queued
// or running (completed, failed, removed, or requeued by Close).
// Manager.mu is held.
func (j *job) waitersChan() <-chan struct{} {
	if j.changed == nil {
		j.changed = make(chan struct{})
	}
	return j.changed
}

// signalWaiters wakes every waiter of the job. Manager.mu is held;
// closing a channel does not block.
func (j *job) signalWaiters() {
	if j.changed != nil {
		close(j.changed)
		j.changed = nil
	}
}

// Wait is Status after holding the caller until the job is finished
// (completed or failed), removed (cancelled, expired), the manager
// closes, ctx is done, or d (capped at MaxWait) passes, whichever comes
// first. d ≤ 0, or MaxWaiters callers already waiting, means no wait.
// A caller that asked to wait is exempt from the first-poll rule of
// Status: a job that is finished is reported finished.
func (m *Manager) Wait(ctx context.Context, client, id string, d time.Duration) (Status, error) {
	if err := m.lookupShared(id); err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	j, mctx := m.all[id], m.ctx
	var changed <-chan struct{}
	if j != nil && j.ownedBy(client) && (j.rec.State == Queued || j.rec.State == Running) {
		changed = j.waitersChan()
	}
	m.mu.Unlock()
	if j == nil {
		return Status{}, ErrNotFound
	}
	if changed != nil && d > 0 {
		if m.waiters.Add(1) <= MaxWaiters {
			var closing <-chan struct{}
			if mctx != nil {
				closing = mctx.Done()
			}
			t := time.NewTimer(min(d, MaxWait))
			select {
			case <-changed:
			case <-closing:
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		m.waiters.Add(-1)
	}
	return m.status(client, id, d > 0)
}
