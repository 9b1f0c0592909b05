package index

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestFormatInstant(t *testing.T) {
	for _, tc := range []struct {
		us   uint64
		want string
	}{
		{0, "1970-01-01T00:00:00.000000Z"},
		{1, "1970-01-01T00:00:00.000001Z"},
		{1_764_179_921_000_000, "2025-11-26T17:58:41.000000Z"},
		{1_764_179_921_120_000, "2025-11-26T17:58:41.120000Z"},
		{1_764_179_921_123_456, "2025-11-26T17:58:41.123456Z"},
		{Micros(time.Date(2026, 11, 26, 17, 58, 41, 120_000_999, time.UTC)), "2026-11-26T17:58:41.120000Z"},
		{Micros(time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("X", 5*3600))), "2025-12-31T19:00:00.000000Z"},
	} {
		if got := FormatInstant(tc.us); got != tc.want {
			t.Errorf("FormatInstant(%d) = %q, want %q", tc.us, got, tc.want)
		}
	}
}

func TestFormatInstantShapeAndOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const maxUs = 253402300799999999 // 9999-12-31T23:59:59.999999Z
	sample := []uint64{0, 1, 999_999, 1_000_000, 1_764_179_921_000_000, maxUs}
	for range 2000 {
		sample = append(sample, r.Uint64N(maxUs+1))
	}
	for range 500 { // neighbours
		v := r.Uint64N(maxUs)
		sample = append(sample, v, v+1)
	}
	for i, us := range sample {
		s := FormatInstant(us)
		if len(s) != len("2006-01-02T15:04:05.000000Z") || !strings.HasSuffix(s, "Z") || s[19] != '.' {
			t.Fatalf("FormatInstant(%d) = %q: not 6 fractional digits ending in Z", us, s)
		}
		back, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || Micros(back) != us {
			t.Fatalf("FormatInstant(%d) = %q parses back to %v (%v)", us, s, back, err)
		}
		if TimeOf(us).Location() != time.UTC {
			t.Fatalf("TimeOf(%d) is not UTC", us)
		}
		if i == 0 {
			continue
		}
		prev := sample[i-1]
		ps := FormatInstant(prev)
		if (ps < s) != (prev < us) || (ps == s) != (prev == us) {
			t.Fatalf("string order of %q, %q disagrees with %d, %d", ps, s, prev, us)
		}
	}
}

func TestMicros(t *testing.T) {
	if got := Micros(time.Unix(0, -1)); got != 0 {
		t.Errorf("Micros(before epoch) = %d, want 0", got)
	}
	if got := Micros(time.Time{}); got != 0 {
		t.Errorf("Micros(zero time) = %d, want 0", got)
	}
	if got := Micros(time.Unix(1, 999)); got != 1_000_000 {
		t.Errorf("Micros(1s+999ns) = %d, want 1000000 (truncated)", got)
	}
}

func TestNextClock(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := Micros(base)
	for _, tc := range []struct {
		name string
		prev uint64
		msg  time.Time
		want uint64
	}{
		{"from zero", 0, base, b},
		{"jump forward", b, base.Add(time.Hour), b + 3600_000_000},
		{"one µs forward", b, base.Add(time.Microsecond), b + 1},
		{"equal", b, base, b + 1},
		{"step back", b, base.Add(-time.Hour), b + 1},
		{"sub-µs forward", b, base.Add(999 * time.Nanosecond), b + 1},
		{"before epoch", 5, time.Unix(-10, 0), 6},
		{"zero time", 0, time.Time{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextClock(tc.prev, tc.msg); got != tc.want {
				t.Fatalf("nextClock(%d, %v) = %d, want %d", tc.prev, tc.msg, got, tc.want)
			}
		})
	}
	// Strictly increasing over an irregular sequence, never below a message time.
	r := rand.New(rand.NewPCG(3, 4))
	var clock uint64
	msg := base
	for i := range 10_000 {
		switch r.IntN(4) {
		case 0: // equal
		case 1:
			msg = msg.Add(-time.Duration(r.IntN(1e9)))
		default:
			msg = msg.Add(time.Duration(r.IntN(1e7)))
		}
		next := nextClock(clock, msg)
		if next <= clock || next < Micros(msg) {
			t.Fatalf("step %d: nextClock(%d, %v) = %d", i, clock, msg, next)
		}
		if next != max(Micros(msg), clock+1) {
			t.Fatalf("step %d: nextClock(%d, %v) = %d, want max(msg, prev+1)", i, clock, msg, next)
		}
		clock = next
	}
}
