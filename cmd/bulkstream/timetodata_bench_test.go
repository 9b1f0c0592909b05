package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// pollMode is how a client of BenchmarkExportE2E polls the status URL.
// Every one polls first right after the kick-off, as the Bulk Data test
// suite (https://github.com/smart-on-fhir/bdt) and SMART
// bulk-data-client (https://github.com/smart-on-fhir/bulk-data-client) do,
// and downloads every file once the manifest is there. The last three are
// the time-to-data clients, run on the Synthea sample: what a user waits
// for, kick-off to last byte, depending on how their client polls.
type pollMode int

const (
	// pollFast polls every exportBenchPoll (2 ms), so that time to the
	// manifest measures the server, not the client's patience (full,
	// since).
	pollFast pollMode = iota
	// poll50ms polls every 50 ms and ignores Retry-After.
	poll50ms
	// pollRetryAfter honours Retry-After as bulk-data-client does: it
	// reads the header of each 202 and waits max(Retry-After × 1000, 100)
	// ms before the next poll. The header must be delay-seconds
	// (https://www.rfc-editor.org/rfc/rfc9110#name-retry-after).
	pollRetryAfter
	// pollPreferWait sends Prefer: wait=preferWaitSeconds
	// (https://www.rfc-editor.org/rfc/rfc7240#section-4.3) on every poll
	// and polls again as soon as a 202 comes back.
	pollPreferWait
)

// preferWaitSeconds is the wait pollPreferWait asks for.
const preferWaitSeconds = 10

// poll50msInterval is poll50ms's interval.
const poll50msInterval = 50 * time.Millisecond

// minRetryAfterWait is bulk-data-client's shortest wait between polls.
const minRetryAfterWait = 100 * time.Millisecond

func (m pollMode) String() string {
	switch m {
	case pollFast:
		return "poll2ms"
	case poll50ms:
		return "poll50ms"
	case pollRetryAfter:
		return "retryafter"
	case pollPreferWait:
		return "preferwait"
	}
	return "pollMode(" + strconv.Itoa(int(m)) + ")"
}

// wait is how long the client sleeps after a 202 whose Retry-After is ra.
func (m pollMode) wait(ra string) (time.Duration, error) {
	switch m {
	case poll50ms:
		return poll50msInterval, nil
	case pollRetryAfter:
		n, err := strconv.Atoi(ra)
		if err != nil || n < 0 || strings.HasPrefix(ra, "+") {
			return 0, fmt.Errorf("202 with Retry-After %q, not delay-seconds", ra)
		}
		return max(time.Duration(n)*time.Second, minRetryAfterWait), nil
	case pollPreferWait:
		return 0, nil
	}
	return exportBenchPoll, nil
}

// pollTrace is what the status polls of one export were answered.
type pollTrace struct {
	n          int // polls
	retryAfter int // seconds of Retry-After told, over every 202
	answers    []string
	repeats    []int // repeats[i]: answers[i] in a row
}

func (t *pollTrace) add(answer string) {
	t.n++
	if k := len(t.answers) - 1; k >= 0 && t.answers[k] == answer {
		t.repeats[k]++
		return
	}
	t.answers = append(t.answers, answer)
	t.repeats = append(t.repeats, 1)
}

// String lists the answers in order, a run of equal ones as one with ×n:
// "202 (Retry-After: 1), 200".
func (t pollTrace) String() string {
	var sb strings.Builder
	for i, a := range t.answers {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(a)
		if t.repeats[i] > 1 {
			fmt.Fprintf(&sb, " ×%d", t.repeats[i])
		}
	}
	return sb.String()
}
