package fhir

import (
	"time"
)

// DateRange reads a FHIR date, dateTime or instant
// (https://hl7.org/fhir/R4/datatypes.html#dateTime): YYYY, YYYY-MM,
// YYYY-MM-DD (read as UTC), or YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm).
// It returns the range the value covers at its precision, as the first
// and the last microsecond of it since the Unix epoch (negative before
// it): 2024-03 is [2024-03-01T00:00:00Z, 2024-03-31T23:59:59.999999Z], a
// time with seconds covers its second, one with a fraction its last digit
// (and at most a µs). A leap second (:60) is the last µs of its minute.
// ok is false, and both bounds 0, when s is none of these.
//
// This is the "implicit range" of a date value in FHIR search
// (https://hl7.org/fhir/R4/search.html#date).
func DateRange[T string | []byte](s T) (lo, hi int64, ok bool) {
	num := func(b T) (int, bool) {
		if len(b) == 0 {
			return 0, false
		}
		n := 0
		for i := 0; i < len(b); i++ {
			c := b[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	if len(s) < 4 {
		return 0, 0, false
	}
	year, ok := num(s[:4])
	if !ok || year == 0 {
		return 0, 0, false
	}
	var start, next time.Time // next: the first instant after the range
	switch {
	case len(s) == 4:
		start = time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
		next = start.AddDate(1, 0, 0)
	case len(s) == 7 && s[4] == '-':
		month, ok := num(s[5:7])
		if !ok || month < 1 || month > 12 {
			return 0, 0, false
		}
		start = time.Date(year, time.Month(month), 1, 0, 0, 0, 0, time.UTC)
		next = start.AddDate(0, 1, 0)
	case len(s) == 10 || len(s) >= 20 && s[10] == 'T':
		if s[4] != '-' || s[7] != '-' {
			return 0, 0, false
		}
		month, ok := num(s[5:7])
		if !ok || month < 1 || month > 12 {
			return 0, 0, false
		}
		day, ok := num(s[8:10])
		if !ok || day < 1 || day > DaysIn(year, month) {
			return 0, 0, false
		}
		if len(s) == 10 {
			start = time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
			next = start.AddDate(0, 0, 1)
			break
		}
		// hh:mm:ss at s[11:19]
		if s[13] != ':' || s[16] != ':' {
			return 0, 0, false
		}
		h, ok1 := num(s[11:13])
		m, ok2 := num(s[14:16])
		sec, ok3 := num(s[17:19])
		if !ok1 || !ok2 || !ok3 || h > 23 || m > 59 || sec > 60 {
			return 0, 0, false
		}
		rest := s[19:]
		var frac int64
		unit := int64(1_000_000) // µs the value's last digit stands for
		if len(rest) > 0 && rest[0] == '.' {
			n := 1
			for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
				n++
			}
			digits := rest[1:n]
			if len(digits) == 0 {
				return 0, 0, false
			}
			for i := 0; i < min(len(digits), 6); i++ {
				frac = frac*10 + int64(digits[i]-'0')
				unit /= 10
			}
			frac *= unit
			if len(digits) > 6 {
				unit = 1
			}
			rest = rest[n:]
		}
		var offset int64 // seconds east of UTC
		switch {
		case len(rest) == 1 && rest[0] == 'Z':
		case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
			oh, ok1 := num(rest[1:3])
			om, ok2 := num(rest[4:6])
			if !ok1 || !ok2 || om > 59 || oh > 14 || oh == 14 && om != 0 {
				return 0, 0, false
			}
			offset = int64(oh*3600 + om*60)
			if rest[0] == '-' {
				offset = -offset
			}
		default:
			return 0, 0, false
		}
		if sec == 60 { // a leap second: the last µs of its minute
			sec, frac, unit = 59, 999_999, 1
		}
		start = time.Date(year, time.Month(month), day, h, m, sec, 0, time.UTC)
		start = start.Add(time.Duration(frac-offset*1_000_000) * time.Microsecond)
		next = start.Add(time.Duration(unit) * time.Microsecond)
	default:
		return 0, 0, false
	}
	return start.UnixMicro(), next.UnixMicro() - 1, true
}

// DaysIn returns the number of days of month (1–12) in year (proleptic
// Gregorian).
func DaysIn(year, month int) int {
	// Day 0 of the next month is the last day of this one.
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
