package fhir

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
	const day = 86_400_000_000 // µs
	var start, next int64      // µs; next: the first instant after the range
	switch {
	case len(s) == 4:
		start, next = civilDays(year, 1, 1)*day, civilDays(year+1, 1, 1)*day
	case len(s) == 7 && s[4] == '-':
		month, ok := num(s[5:7])
		if !ok || month < 1 || month > 12 {
			return 0, 0, false
		}
		start = civilDays(year, month, 1) * day
		next = start + int64(DaysIn(year, month))*day
	case len(s) == 10 || len(s) >= 20 && s[10] == 'T':
		if s[4] != '-' || s[7] != '-' {
			return 0, 0, false
		}
		month, ok := num(s[5:7])
		if !ok || month < 1 || month > 12 {
			return 0, 0, false
		}
		d, ok := num(s[8:10])
		if !ok || d < 1 || d > DaysIn(year, month) {
			return 0, 0, false
		}
		start = civilDays(year, month, d) * day
		if len(s) == 10 {
			next = start + day
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
		start += (int64(h*3600+m*60+sec)-offset)*1_000_000 + frac
		next = start + unit
	default:
		return 0, 0, false
	}
	return start, next - 1, true
}

// civilDays returns the days from 1970-01-01 to the date (proleptic
// Gregorian, year ≥ 1, month 1–12) without the time package: the
// days-from-civil algorithm of
// https://howardhinnant.github.io/date_algorithms.html#days_from_civil,
// a year counted from March so that the leap day ends it.
func civilDays(year, month, day int) int64 {
	y, m := int64(year), int64(month)
	if m <= 2 {
		y--
	}
	era := y / 400     // y ≥ 0: no floor needed
	yoe := y - era*400 // [0, 399]
	mp := (m + 9) % 12 // March is 0
	doy := (153*mp+2)/5 + int64(day) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146_097 + doe - 719_468
}

// DaysIn returns the number of days of month (1–12) in year (proleptic
// Gregorian).
func DaysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
