package ingest_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/bulkstream/bulkstream/index"
	"github.com/bulkstream/bulkstream/ingest"
	"github.com/bulkstream/bulkstream/ingest/ingesttest"
)

// TestHostileEventsRandomized publishes seeded random hostile events (random
// bytes, huge bodies, deep nesting, invalid UTF-8, duplicated keys,
// truncated JSON, mismatched subjects, bad operations) interleaved with good
// creates, updates and deletes through a real embedded JetStream while the
// consumer runs. Every hostile event must be dead-lettered once, with a
// known reason, its detail, its subject and its body; none may be applied;
// and the good events around them must leave exactly the state a clean
// replay of the good events alone gives.
//
// TestDeadLetters pins one example per reason; this test randomizes them.
// The seed is logged; BULKSTREAM_HOSTILE_SEED replays one.
func TestHostileEventsRandomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BULKSTREAM_HOSTILE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (BULKSTREAM_HOSTILE_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b756c6b))

	_, _, js := ingesttest.RunJetStream(t)
	ctx := t.Context()
	const maxEvent = 16 << 10
	cfg := ingest.Config{MaxEventBytes: maxEvent}
	if err := ingest.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	idx := openIndex(t)
	c := startConsumer(t, js, idx, cfg)

	type event struct {
		subject string
		hdr     nats.Header
		body    []byte
		kind    string // generator name, for messages
		reasons []string
	}
	anyReason := ingest.Reasons

	patient := func(id, gender string) []byte {
		return []byte(`{"resourceType":"Patient","id":"` + id + `","gender":"` + gender + `","name":[{"family":"F` + id + `"}]}`)
	}
	genders := []string{"male", "female", "other", "unknown"}

	// want is the state the good events alone produce: id → gender, or ""
	// for a deleted resource.
	want := map[string]string{}
	var goodIDs []string
	goodEvent := func() event {
		var id string
		if len(goodIDs) == 0 || rng.IntN(3) == 0 {
			id = "g" + strconv.Itoa(len(goodIDs))
			goodIDs = append(goodIDs, id)
		} else {
			id = goodIDs[rng.IntN(len(goodIDs))]
		}
		if g, ok := want[id]; ok && g != "" && rng.IntN(5) == 0 {
			want[id] = ""
			return event{subject: "fhir.Patient." + id, hdr: nats.Header{ingest.HeaderOp: {ingest.OpDelete}}, kind: "good delete"}
		}
		g := genders[rng.IntN(len(genders))]
		want[id] = g
		return event{subject: "fhir.Patient." + id, body: patient(id, g), kind: "good upsert"}
	}

	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	invalidUTF8 := [][]byte{{0xff}, {0xfe}, {0xc3, 0x28}, {0xc0, 0xaf}, {0xed, 0xa0, 0x80}, {0xe2, 0x82}, {0xf4, 0x90, 0x80, 0x80}, {0x80}}
	// Each bad generator returns the body and the reasons it may have;
	// ids are "b<n>", never a good id, so nothing of theirs may appear.
	nBad := 0
	badGens := []func(id string) event{
		func(id string) event { // random bytes
			return event{body: randBytes(rng.IntN(2048)), kind: "random bytes", reasons: anyReason}
		},
		func(id string) event { // random printable JSON-ish bytes
			const alpha = `{}[]":,0123456789.eE+-truefalsn \t\n\\/abcID`
			b := make([]byte, 1+rng.IntN(512))
			for i := range b {
				b[i] = alpha[rng.IntN(len(alpha))]
			}
			return event{body: b, kind: "json-ish bytes", reasons: anyReason}
		},
		func(id string) event { // huge, otherwise valid
			pad := strings.Repeat("x", maxEvent+rng.IntN(8*maxEvent))
			return event{body: []byte(`{"resourceType":"Patient","id":"` + id + `","text":"` + pad + `"}`), kind: "huge body",
				reasons: []string{ingest.ReasonTooLarge}}
		},
		func(id string) event { // deep nesting, balanced, mixed arrays and objects
			depth := ingest.MaxDepth + 1 + rng.IntN(2000)
			var open, closing strings.Builder
			for range depth {
				if rng.IntN(2) == 0 {
					open.WriteString("[")
					closing.WriteString("]")
				} else {
					open.WriteString(`{"k":`)
					closing.WriteString("}")
				}
			}
			cl := []byte(closing.String())
			slices.Reverse(cl)
			body := `{"resourceType":"Patient","id":"` + id + `","x":` + open.String() + "1" + string(cl) + `}`
			if len(body) > maxEvent {
				return event{body: []byte(body), kind: "deep nesting (huge)", reasons: []string{ingest.ReasonTooLarge, ingest.ReasonTooDeep}}
			}
			return event{body: []byte(body), kind: "deep nesting", reasons: []string{ingest.ReasonTooDeep}}
		},
		func(id string) event { // invalid UTF-8 inside a string value
			bad := invalidUTF8[rng.IntN(len(invalidUTF8))]
			name := []byte("ab" + strconv.Itoa(rng.IntN(1000)))
			at := rng.IntN(len(name) + 1)
			name = slices.Concat(name[:at], bad, name[at:])
			body := slices.Concat([]byte(`{"resourceType":"Patient","id":"`+id+`","name":[{"family":"`), name, []byte(`"}]}`))
			return event{body: body, kind: "invalid UTF-8", reasons: []string{ingest.ReasonInvalidUTF8}}
		},
		func(id string) event { // a duplicated top-level key
			members := []string{`"resourceType":"Patient"`, `"id":"` + id + `"`, `"gender":"male"`, `"active":true`}
			dup := members[rng.IntN(len(members))]
			members = append(members, dup)
			rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
			return event{body: []byte("{" + strings.Join(members, ",") + "}"), kind: "duplicate key",
				reasons: []string{ingest.ReasonDuplicateKey}}
		},
		func(id string) event { // a valid body truncated
			b := patient(id, "male")
			return event{body: b[:rng.IntN(len(b)-1)], kind: "truncated", reasons: []string{ingest.ReasonNotJSON}}
		},
		func(id string) event { // body for another id or type than the subject's
			if rng.IntN(2) == 0 {
				return event{body: patient("g0", "male"), kind: "id mismatch", reasons: []string{ingest.ReasonIDMismatch}}
			}
			return event{body: []byte(`{"resourceType":"Observation","id":"` + id + `"}`), kind: "type mismatch",
				reasons: []string{ingest.ReasonTypeMismatch}}
		},
		func(id string) event { // an unknown operation (NATS trims header values, so no edge spaces)
			ops := []string{"purge", "UPSERT", "Delete", "put", "up sert", "x" + strconv.Itoa(rng.IntN(1e6))}
			return event{hdr: nats.Header{ingest.HeaderOp: {ops[rng.IntN(len(ops))]}}, body: patient(id, "male"),
				kind: "bad op", reasons: []string{ingest.ReasonBadOp}}
		},
		func(id string) event { // not an object
			vals := []string{`[]`, `null`, `1`, `"Patient"`, `true`, `[{"resourceType":"Patient","id":"` + id + `"}]`}
			return event{body: []byte(vals[rng.IntN(len(vals))]), kind: "not an object", reasons: []string{ingest.ReasonNotObject}}
		},
	}
	badEvent := func() event {
		id := "b" + strconv.Itoa(nBad)
		nBad++
		e := badGens[rng.IntN(len(badGens))](id)
		e.subject = "fhir.Patient." + id
		return e
	}

	const total = 400
	bySeq := map[uint64]event{}
	var bad []uint64
	for range total {
		var e event
		if rng.IntN(2) == 0 {
			e = goodEvent()
		} else {
			e = badEvent()
		}
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: e.subject, Header: e.hdr, Data: e.body})
		if err != nil {
			t.Fatalf("publish %s (%s, %d bytes): %v", e.subject, e.kind, len(e.body), err)
		}
		bySeq[ack.Sequence] = e
		if e.reasons != nil {
			bad = append(bad, ack.Sequence)
		}
	}
	waitCaughtUp(t, c, idx)

	// Nothing of a bad event applied; the good ones as a clean replay.
	got := map[string]index.Entry{}
	for _, e := range scanAll(t, idx, "Patient") {
		got[e.ID] = e
	}
	for id, e := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("Patient/%s in the index, but only hostile events named it (deleted=%v): %.80s", id, e.Deleted, e.Resource)
		}
	}
	for id, g := range want {
		e, ok := got[id]
		switch {
		case !ok:
			t.Errorf("Patient/%s missing from the index", id)
		case g == "" && !e.Deleted:
			t.Errorf("Patient/%s alive, want deleted", id)
		case g != "" && e.Deleted:
			t.Errorf("Patient/%s deleted, want gender %s", id, g)
		case g != "":
			var r struct{ Gender string }
			if err := json.Unmarshal(e.Resource, &r); err != nil || r.Gender != g {
				t.Errorf("Patient/%s gender %q (%v), want %q", id, r.Gender, err, g)
			}
		}
	}
	for _, ct := range idx.Counts() {
		if ct.Type != "Patient" {
			t.Errorf("%d %s resources applied from Patient subjects", ct.Resources, ct.Type)
		}
	}

	// Every bad event dead-lettered exactly once, with its reason.
	dlq, err := js.Stream(ctx, ingest.DefaultDLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Msgs; n != uint64(len(bad)) {
		t.Fatalf("dead-letter stream holds %d messages, want %d", n, len(bad))
	}
	seen := map[uint64]bool{}
	byReason := map[string]int{}
	for i := uint64(1); i <= uint64(len(bad)); i++ {
		m, err := dlq.GetMsg(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := strconv.ParseUint(m.Header.Get(ingest.HeaderDLQSequence), 10, 64)
		if err != nil {
			t.Fatalf("dead letter %d: sequence header: %v", i, err)
		}
		orig, ok := bySeq[seq]
		if !ok || orig.reasons == nil {
			t.Fatalf("dead letter %d points at seq %d, a %q event", i, seq, orig.kind)
		}
		if seen[seq] {
			t.Errorf("seq %d dead-lettered twice", seq)
		}
		seen[seq] = true
		reason := m.Header.Get(ingest.HeaderDLQReason)
		byReason[reason]++
		if !slices.Contains(orig.reasons, reason) || m.Subject != "bulkstream.dlq."+reason {
			t.Errorf("%s (%s, seq %d): dead letter on %s with reason %q, want one of %v (detail %s)",
				orig.subject, orig.kind, seq, m.Subject, reason, orig.reasons, m.Header.Get(ingest.HeaderDLQDetail))
		}
		if m.Header.Get(ingest.HeaderDLQSubject) != orig.subject || m.Header.Get(ingest.HeaderDLQDetail) == "" {
			t.Errorf("%s (%s): dead letter headers %v", orig.subject, orig.kind, m.Header)
		}
		if m.Header.Get(ingest.HeaderDLQTruncated) == "" && string(m.Data) != string(orig.body) {
			t.Errorf("%s (%s): dead letter body %.40q, want %.40q", orig.subject, orig.kind, m.Data, orig.body)
		}
	}
	t.Logf("%d events: %d good (%d Patients), %d dead-lettered by reason %s", total, total-len(bad), len(want), len(bad), fmt.Sprint(byReason))
}
