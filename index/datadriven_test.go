package index_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/index/indextest"
)

// TestDataDriven runs the scripts in testdata/ (rewrite expectations with
// go test ./index -run TestDataDriven -rewrite). Commands:
//
//	apply [last=N]        one change per input line:
//	                      <seq> <time> put <Type>/<id> [<json body>]
//	                      <seq> <time> delete <Type>/<id>
//	set-origin <time>
//	reset [compacted-stream]
//	                      a fresh, empty index (with that option)
//	dump                  every c/, g/, m/, p/, r/ and t/ key
//	scan type=T [since=<time>|0] [until=<time>|inf] [snap=name]
//	scan-patient patient=P type=T [since=…] [until=…]
//	                      the entries of type T in P's compartment
//	group id=G            Group G's member entries
//	provenance type=T id=I
//	                      the Provenance targeting T/I
//	snapshot name=S       takes a named snapshot
//	close-snapshot name=S
//	counts
//	state                 applied sequence and clock
//
// A <time> is an RFC 3339 instant or HH:MM:SS[.ffffff] on 2026-01-01 UTC.
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		d := &ddIndex{snaps: map[string]*index.Snapshot{}}
		d.x = indextest.Open(t)
		t.Cleanup(func() {
			for _, s := range d.snaps {
				s.Close()
			}
		})
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			return d.run(t, td)
		})
	})
}

type ddIndex struct {
	x     *index.Index
	snaps map[string]*index.Snapshot
}

var ddDay = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func parseDDTime(t testing.TB, s string) time.Time {
	t.Helper()
	if tm, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return tm
	}
	tm, err := time.Parse("15:04:05.999999", s)
	if err != nil {
		t.Fatalf("bad time %q: %v", s, err)
	}
	return ddDay.Add(tm.Sub(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)))
}

func parseDDBound(t testing.TB, td *datadriven.TestData, key string, def uint64) uint64 {
	t.Helper()
	arg, ok := td.Arg(key)
	if !ok {
		return def
	}
	switch v := arg.SingleVal(t); v {
	case "inf":
		return index.Unbounded
	case "0":
		return 0
	default:
		return index.Micros(parseDDTime(t, v))
	}
}

func (d *ddIndex) run(t *testing.T, td *datadriven.TestData) string {
	ctx := t.Context()
	switch td.Cmd {
	case "apply":
		var last uint64
		td.MaybeScanArgs(t, "last", &last)
		var changes []index.Change
		for line := range strings.Lines(td.Input) {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			f := strings.SplitN(line, " ", 5)
			if len(f) < 4 {
				td.Fatalf(t, "bad change line %q", line)
			}
			seq, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				td.Fatalf(t, "bad seq in %q", line)
			}
			typ, id, _ := strings.Cut(f[3], "/")
			c := index.Change{Seq: seq, Time: parseDDTime(t, f[1]), Type: typ, ID: id}
			switch f[2] {
			case "put":
				if len(f) == 5 {
					c.Body = []byte(f[4])
				} else {
					c.Body = fmt.Appendf(nil, `{"resourceType":%q,"id":%q}`, typ, id)
				}
			case "delete":
				c.Delete = true
			default:
				td.Fatalf(t, "bad op in %q", line)
			}
			changes = append(changes, c)
		}
		res, err := d.x.Apply(ctx, changes, last)
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		var sb strings.Builder
		for _, r := range res {
			c := r.Change
			if r.Skipped {
				fmt.Fprintf(&sb, "seq=%d %s/%s skipped\n", c.Seq, c.Type, c.ID)
				continue
			}
			noop := ""
			if r.Noop {
				noop = " noop"
			}
			fmt.Fprintf(&sb, "seq=%d %s/%s v%d at %s%s\n", c.Seq, c.Type, c.ID, r.Version, index.FormatInstant(r.CommitTime), noop)
		}
		sb.WriteString(d.state())
		return sb.String()
	case "reset":
		d.x = indextest.OpenOptions(t, &index.Options{CompactedStream: td.HasArg("compacted-stream")})
		return d.state()
	case "set-origin":
		if len(td.CmdArgs) != 1 {
			td.Fatalf(t, "set-origin <time>")
		}
		if err := d.x.SetOrigin(parseDDTime(t, td.CmdArgs[0].Key)); err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return d.state()
	case "state":
		return d.state()
	case "dump":
		var sb strings.Builder
		err := d.x.Dump(func(k, v []byte) error {
			sb.WriteString(index.FormatDumpEntry(k, v))
			sb.WriteByte('\n')
			return nil
		})
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return sb.String()
	case "counts":
		return formatCounts(d.x.Counts())
	case "snapshot":
		var name string
		td.ScanArgs(t, "name", &name)
		s, err := d.x.Snapshot()
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		if old := d.snaps[name]; old != nil {
			old.Close()
		}
		d.snaps[name] = s
		return fmt.Sprintf("transactionTime=%s appliedSeq=%d\n%s", index.FormatInstant(s.TransactionTime), s.AppliedSeq, formatCounts(s.Counts()))
	case "close-snapshot":
		var name string
		td.ScanArgs(t, "name", &name)
		s := d.snaps[name]
		if s == nil {
			td.Fatalf(t, "no snapshot %q", name)
		}
		delete(d.snaps, name)
		if err := s.Close(); err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return ""
	case "scan-patient", "group", "provenance":
		s, err := d.x.Snapshot()
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		defer s.Close()
		var sb strings.Builder
		entry := func(e index.Entry) error {
			if e.Deleted {
				fmt.Fprintf(&sb, "%s %s/%s deleted", index.FormatInstant(e.CommitTime), e.Type, e.ID)
			} else {
				fmt.Fprintf(&sb, "%s %s/%s %s", index.FormatInstant(e.CommitTime), e.Type, e.ID, e.Resource)
			}
			if e.Shared {
				sb.WriteString(" (shared)")
			}
			sb.WriteString("\n")
			return nil
		}
		switch td.Cmd {
		case "scan-patient":
			var patient, typ string
			td.ScanArgs(t, "patient", &patient)
			td.ScanArgs(t, "type", &typ)
			err = s.ScanPatient(ctx, patient, typ, parseDDBound(t, td, "since", 0), parseDDBound(t, td, "until", index.Unbounded), entry)
		case "group":
			var id string
			td.ScanArgs(t, "id", &id)
			var members []index.GroupMember
			var found bool
			members, found, err = s.GroupMembers(id)
			if !found && err == nil {
				sb.WriteString("not found\n")
			}
			for _, m := range members {
				fmt.Fprintf(&sb, "%s/%s added=%s inactive=%v period=%d..%d\n", m.Type, m.ID, index.FormatInstant(m.Added), m.Inactive, m.Start, m.End)
			}
		case "provenance":
			var typ, id string
			td.ScanArgs(t, "type", &typ)
			td.ScanArgs(t, "id", &id)
			err = s.Provenance(ctx, typ, id, entry)
		}
		if err != nil {
			fmt.Fprintf(&sb, "error: %v\n", err)
		}
		return sb.String()
	case "scan":
		var typ string
		td.ScanArgs(t, "type", &typ)
		since := parseDDBound(t, td, "since", 0)
		until := parseDDBound(t, td, "until", index.Unbounded)
		var s *index.Snapshot
		if arg, ok := td.Arg("snap"); ok {
			if s = d.snaps[arg.SingleVal(t)]; s == nil {
				td.Fatalf(t, "no snapshot %q", arg.SingleVal(t))
			}
		} else {
			var err error
			if s, err = d.x.Snapshot(); err != nil {
				return fmt.Sprintf("error: %v\n", err)
			}
			defer s.Close()
		}
		var sb strings.Builder
		err := s.Scan(ctx, typ, since, until, func(e index.Entry) error {
			if e.Deleted {
				fmt.Fprintf(&sb, "%s %s/%s deleted\n", index.FormatInstant(e.CommitTime), e.Type, e.ID)
			} else {
				fmt.Fprintf(&sb, "%s %s/%s %s\n", index.FormatInstant(e.CommitTime), e.Type, e.ID, e.Resource)
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(&sb, "error: %v\n", err)
		}
		return sb.String()
	default:
		td.Fatalf(t, "unknown command %q", td.Cmd)
		return ""
	}
}

func (d *ddIndex) state() string {
	return fmt.Sprintf("applied=%d clock=%s\n", d.x.AppliedSeq(), index.FormatInstant(d.x.Clock()))
}

func formatCounts(counts []index.TypeCount) string {
	var sb strings.Builder
	for _, c := range counts {
		fmt.Fprintf(&sb, "%s: resources=%d tombstones=%d\n", c.Type, c.Resources, c.Tombstones)
	}
	return sb.String()
}
