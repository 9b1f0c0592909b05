package ingest

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(0, 0)
	for _, c := range []struct {
		key            string
		at             time.Duration
		ok             bool
		wantSuppressed int
	}{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0}, // keys are independent
		{"a", 2 * time.Second, false, 0},
		{"a", logEvery, true, 2}, // reports what it held back
		{"a", logEvery + time.Second, false, 0},
	} {
		n, ok := l.allow(c.key, t0.Add(c.at))
		if ok != c.ok || n != c.wantSuppressed {
			t.Errorf("allow(%s, +%v) = %d, %v; want %d, %v", c.key, c.at, n, ok, c.wantSuppressed, c.ok)
		}
	}
}
