package index

import "time"

// Micros converts t to the commit clock's unit, microseconds since the Unix
// epoch. Times before the epoch map to 0.
func Micros(t time.Time) uint64 {
	us := t.UnixMicro()
	if us < 0 {
		return 0
	}
	return uint64(us)
}

// TimeOf converts a commit time back to a UTC time.Time.
func TimeOf(us uint64) time.Time { return time.UnixMicro(int64(us)).UTC() }

// FormatInstant writes a commit time as a FHIR instant in UTC with exactly
// six fractional digits, so string order is time order
// (2026-11-26T17:58:41.120000Z).
func FormatInstant(us uint64) string {
	return string(appendInstant(nil, us))
}

// appendInstant appends FormatInstant(us) to dst.
func appendInstant(dst []byte, us uint64) []byte {
	return TimeOf(us).AppendFormat(dst, "2006-01-02T15:04:05.000000Z")
}

// nextClock is the commit clock: the commit time of a message with JetStream
// timestamp msg, given the commit time handed out before it.
//
//	clock(seq) = max(timestamp(seq), clock(seq-1) + 1µs)
//
// It is a pure function of the stream, so replicas and rebuilds agree.
func nextClock(prev uint64, msg time.Time) uint64 {
	return max(Micros(msg), prev+1)
}
