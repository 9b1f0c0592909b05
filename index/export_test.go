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
		if len(r.Patients) > 0 {
			s += " patients=" + strings.Join(r.Patients, ",")
		}
		if len(r.Targets) > 0 {
			s += " targets=" + strings.Join(r.Targets, ",")
		}
		return s
	case strings.HasPrefix(string(k), prefixPatient):
		patient, typ, ts, id, err := parsePatientKey(k)
		if err != nil {
			return fmt.Sprintf("%q: %v", k, err)
		}
		return fmt.Sprintf("p/%s %s %s %s -> in %d compartments", patient, typ, FormatInstant(ts), id, v[0])
	case strings.HasPrefix(string(k), prefixGroup):
		group, mtype, mid, err := parseGroupKey(k)
		if err != nil {
			return fmt.Sprintf("%q: %v", k, err)
		}
		mv, err := decodeMemberValue(v)
		if err != nil {
			return fmt.Sprintf("g/%s %s/%s -> %v", group, mtype, mid, err)
		}
		s := fmt.Sprintf("g/%s %s/%s -> added=%s", group, mtype, mid, FormatInstant(mv.Added))
		if mv.Inactive {
			s += " inactive"
		}
		if mv.Start != 0 || mv.End != 0 {
			s += fmt.Sprintf(" period=%d..%d", mv.Start, mv.End)
		}
		return s
	case strings.HasPrefix(string(k), prefixTarget):
		target, prov, _ := strings.Cut(string(k[len(prefixTarget):]), "\x00")
		return fmt.Sprintf("t/%s <- Provenance/%s", target, prov)
	case string(k) == string(keyClock):
		n, err := decodeUint64(v)
		if err != nil {
			return fmt.Sprintf("%s -> %v", k, err)
		}
		return fmt.Sprintf("%s -> %s", k, FormatInstant(n))
	case string(k) == string(keyAppliedSeq) || string(k) == string(keyRefs):
		n, err := decodeUint64(v)
		if err != nil {
			return fmt.Sprintf("%s -> %v", k, err)
		}
		return fmt.Sprintf("%s -> %d", k, n)
	default:
		return fmt.Sprintf("%s -> %s", k, v)
	}
}
