package fhir

import (
	"math/rand/v2"
	"testing"
	"time"
)

// civilDays and DaysIn agree with the time package on every month of
// years 1 to 9999 (and the days around the leap days).
func TestCivilDays(t *testing.T) {
	for y := 1; y <= 9999; y++ {
		for m := 1; m <= 12; m++ {
			first := time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC)
			if got, want := civilDays(y, m, 1), first.Unix()/86400; got != want {
				t.Fatalf("civilDays(%d, %d, 1) = %d, want %d", y, m, got, want)
			}
			if got, want := DaysIn(y, m), first.AddDate(0, 1, -1).Day(); got != want {
				t.Fatalf("DaysIn(%d, %d) = %d, want %d", y, m, got, want)
			}
		}
	}
	if got, want := civilDays(2024, 2, 29), time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC).Unix()/86400; got != want {
		t.Fatalf("civilDays(2024-02-29) = %d, want %d", got, want)
	}
}

// DateRange agrees with time.Parse on random dateTimes of every
// precision: the first µs is the parsed instant, the last one the next
// value at that precision less a µs.
func TestDateRangeTimeParse(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		ts := time.Unix(r.Int64N(253402300799+62135596800)-62135596800, 0).UTC() // years 1 to 9999
		ts = ts.Add(time.Duration(r.IntN(1e6)) * time.Microsecond)
		h := r.IntN(27) - 12 // -12:00 to +14:00, the offsets FHIR allows
		zone := time.FixedZone("", h*3600+min(14-h, 1)*r.IntN(2)*1800)
		if ts.Year() < 1 || ts.Year() > 9999 || ts.In(zone).Year() < 1 || ts.In(zone).Year() > 9999 {
			continue
		}
		local := ts.In(zone)
		for _, c := range []struct {
			layout string
			next   func(time.Time) time.Time
		}{
			{"2006", func(x time.Time) time.Time { return x.AddDate(1, 0, 0) }},
			{"2006-01", func(x time.Time) time.Time { return x.AddDate(0, 1, 0) }},
			{"2006-01-02", func(x time.Time) time.Time { return x.AddDate(0, 0, 1) }},
			{"2006-01-02T15:04:05Z07:00", func(x time.Time) time.Time { return x.Add(time.Second) }},
			{"2006-01-02T15:04:05.000Z07:00", func(x time.Time) time.Time { return x.Add(time.Millisecond) }},
			{"2006-01-02T15:04:05.000000Z07:00", func(x time.Time) time.Time { return x.Add(time.Microsecond) }},
		} {
			s := local.Format(c.layout)
			if len(c.layout) <= 10 {
				s = ts.Format(c.layout) // dates are read as UTC
			}
			first, err := time.Parse(c.layout, s)
			if err != nil {
				t.Fatal(err)
			}
			lo, hi, ok := DateRange(s)
			wantHi := c.next(first).UnixMicro() - 1
			if !ok || lo != first.UnixMicro() || hi != wantHi {
				t.Fatalf("DateRange(%q) = %d, %d, %v; want %d, %d", s, lo, hi, ok, first.UnixMicro(), wantHi)
			}
		}
	}
}

// DateRange refuses what is not a FHIR date, dateTime or instant.
func TestDateRangeInvalid(t *testing.T) {
	for _, s := range []string{"", "0000", "202", "2024-13", "2024-02-30", "2023-02-29", "2024-1-01",
		"2024-01-01T25:00:00Z", "2024-01-01T10:00:00", "2024-01-01T10:00:00+15:00", "2024-01-01T10:00:00.Z",
		"2024-01-01T10:60:00Z", "2024-01-01T10:00Z", "x024"} {
		if lo, hi, ok := DateRange(s); ok || lo != 0 || hi != 0 {
			t.Errorf("DateRange(%q) = %d, %d, %v; want refused", s, lo, hi, ok)
		}
	}
	// A leap second is the last µs of its minute.
	lo, hi, ok := DateRange("2016-12-31T23:59:60Z")
	want := time.Date(2016, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro()
	if !ok || lo != want || hi != want {
		t.Errorf("leap second: %d, %d, %v; want %d", lo, hi, ok, want)
	}
}
