package index

import (
	"fmt"
	"strings"
)

// FormatDumpEntry renders one Dump key and value readably for tests:
// commit times as instants, records decoded, integers in decimal.
func FormatDumpEntry(k, v []byte) string {
	switch {
	case strings.HasPrefix(string(k), prefixChange):
		typ, ts, id, err := parseChangeKey(k)
		if err != nil {
			return fmt.Sprintf("%q: %v", k, err)
		}
		val := string(v)
		if len(v) == 0 {
			val = "tombstone"
		}
		return fmt.Sprintf("c/%s %s %s -> %s", typ, FormatInstant(ts), id, val)
	case strings.HasPrefix(string(k), prefixResource):
		typ, id, err := parseResourceKey(k)
		if err != nil {
			return fmt.Sprintf("%q: %v", k, err)
		}
		r, err := decodeResourceRecord(v)
		if err != nil {
			return fmt.Sprintf("r/%s %s -> %v", typ, id, err)
		}
		s := fmt.Sprintf("r/%s %s -> at=%s v=%d", typ, id, FormatInstant(r.CommitTime), r.Version)
		if r.Deleted {
			s += " deleted"
		}
		return s
	case string(k) == string(keyClock):
		n, err := decodeUint64(v)
		if err != nil {
			return fmt.Sprintf("%s -> %v", k, err)
		}
		return fmt.Sprintf("%s -> %s", k, FormatInstant(n))
	case string(k) == string(keyAppliedSeq):
		n, err := decodeUint64(v)
		if err != nil {
			return fmt.Sprintf("%s -> %v", k, err)
		}
		return fmt.Sprintf("%s -> %d", k, n)
	default:
		return fmt.Sprintf("%s -> %s", k, v)
	}
}
