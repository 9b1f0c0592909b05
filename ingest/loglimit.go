package ingest

import (
	"sync"
	"time"
)

// logLimiter lets through one log line per key and logEvery; the lines
// it holds back are counted and reported with the next one let through.
// A flood of bad events or a flapping connection then writes a few lines
// a minute instead of one per event. It is safe for concurrent use (NATS
// calls its connection handlers from its own goroutines).
type logLimiter struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// allow reports whether a line for key may be logged at now, and how
// many lines for key were held back since the last one.
func (l *logLimiter) allow(key string, now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if t, seen := l.last[key]; seen && now.Sub(t) < logEvery {
		l.suppressed[key]++
		return 0, false
	}
	n := l.suppressed[key]
	l.last[key] = now
	l.suppressed[key] = 0
	return n, true
}
