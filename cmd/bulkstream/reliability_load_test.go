package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadLog is the publisher's log: every event in publish order (which is
// stream order: one publisher, one connection). Event i's upsert carries
// i in its body, so an exported resource names the event it came from.
type loadLog struct {
	mu     sync.Mutex
	events []loadEvent
}

type loadEvent struct {
	key string // Type/id
	del bool
}

func (l *loadLog) add(key string, del bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, loadEvent{key, del})
	return len(l.events) - 1
}

// consistent reports whether state (Type/id → event position) is exactly
// the store after some prefix of the log: the one ending at state's newest
// event, or later by deletes only (deletes leave no position behind).
func (l *loadLog) consistent(state map[string]int) error {
	l.mu.Lock()
	events := l.events[:len(l.events):len(l.events)]
	l.mu.Unlock()
	p := -1
	for _, pos := range state {
		p = max(p, pos)
	}
	if p >= len(events) {
		return fmt.Errorf("position %d was never published", p)
	}
	want := map[string]int{}
	for i := 0; i <= p; i++ {
		if events[i].del {
			delete(want, events[i].key)
		} else {
			want[events[i].key] = i
		}
	}
	for i := p + 1; ; i++ {
		if maps.Equal(state, want) {
			return nil
		}
		if i >= len(events) || !events[i].del {
			break
		}
		delete(want, events[i].key)
	}
	missing, extra := 0, 0
	var example string
	for k, v := range want {
		if state[k] != v {
			missing++
			example = fmt.Sprintf("%s: want event %d, got %d", k, v, state[k])
		}
	}
	for k := range state {
		if _, ok := want[k]; !ok {
			extra++
		}
	}
	return fmt.Errorf("not a prefix of the publish log (newest event %d): %d wrong or missing, %d extra; e.g. %s", p, missing, extra, example)
}

// TestLoadConcurrentExports runs 50 export clients against the real
// binary while a writer publishes creates, updates and deletes at a steady
// rate. Half the clients repeat full exports; half chain _since exports
// onto a full one. Every export (or chained state) must equal the store
// after a prefix of the publish log; the only refusals allowed are 429s,
// which the clients retry after Retry-After. The serve process's peak RSS
// must stay within the export memory goal (README, Memory).
//
// Before the load, one client alone runs full exports back to back: its
// rate and time to manifest are the limit the loaded figures are reported
// next to. LOAD_DURATION (default 12s) sets how long the load runs;
// `make bench` runs it longer and puts the LOAD line in BENCHMARKS.md.
func TestLoadConcurrentExports(t *testing.T) {
	const (
		clients = 50
		types   = 2 // Patient, Observation
		ids     = 400
		alone   = 2 * time.Second
		rssGoal = 256 // MB: the export memory goal
	)
	duration := 12 * time.Second
	if v := os.Getenv("LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("LOAD_DURATION: %v", err)
		}
		duration = d
	}
	s := startServerWith(t, serverOpts{binary: true, args: []string{"--max-export-jobs", "16"}})
	pid := s.proc.cmd.Process.Pid
	log := &loadLog{}
	body := func(typ string, id, pos int) []byte {
		extra := ""
		if typ == "Observation" {
			extra = `,"status":"final","code":{"text":"load"}`
		}
		return fmt.Appendf(nil, `{"resourceType":%q,"id":"r%d"%s,"extension":[{"url":"urn:pos","valueInteger":%d}]}`, typ, id, extra, pos)
	}
	typeNames := []string{"Patient", "Observation"}
	publish := func(ctx context.Context, i int) error {
		typ, id := typeNames[i%types], (i*7919)%ids
		key := fmt.Sprintf("%s/r%d", typ, id)
		if i%5 == 4 {
			log.add(key, true)
			return s.pub.Delete(ctx, typ, "r"+strconv.Itoa(id))
		}
		// The position is taken before publishing, so an export never
		// sees an event the log lacks.
		return s.pub.Upsert(ctx, body(typ, id, log.add(key, false)))
	}
	// A store to start from.
	n := 0
	for ; n < 2*ids; n++ {
		if err := publish(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := &loadClient{base: s.base, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}}

	// The limit: one client alone, full exports back to back.
	var aloneTimes []time.Duration
	aloneStart := time.Now()
	for time.Since(aloneStart) < alone {
		res, err := c.export(t.Context(), url.Values{})
		if err != nil {
			t.Fatalf("alone: %v", err)
		}
		if err := log.consistent(res.out); err != nil {
			t.Fatalf("alone, export at %s: %v", res.transactionTime, err)
		}
		aloneTimes = append(aloneTimes, res.toManifest)
	}
	aloneRate := float64(len(aloneTimes)) / time.Since(aloneStart).Seconds()
	slices.Sort(aloneTimes)

	base, ok := sampleMem(s.addr, pid)
	if !ok {
		t.Fatal("cannot read serve's memory")
	}
	mem := startMemSampler(s.addr, pid)
	ctx, stop := context.WithTimeout(t.Context(), duration)
	defer stop()
	var bg sync.WaitGroup
	published := atomic.Int64{}
	bg.Go(func() { // the writer: ~1000 events/s in batches of 20
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := n; ctx.Err() == nil; {
			for range 20 {
				if err := publish(ctx, i); err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				i++
				published.Add(1)
			}
			if err := s.pub.Flush(ctx); err != nil && ctx.Err() == nil {
				t.Error(err)
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	})

	var mu sync.Mutex
	var toManifest []time.Duration
	var full, chained, throttled int
	start := time.Now()
	var wg sync.WaitGroup
	for k := range clients {
		wg.Go(func() {
			state := map[string]int{}
			since := ""
			for ctx.Err() == nil {
				q := url.Values{}
				if k%2 == 1 && since != "" {
					q.Set("_since", since)
				} else {
					clear(state)
				}
				res, err := c.export(ctx, q)
				if err != nil {
					if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
						return
					}
					t.Errorf("client %d: %v", k, err)
					return
				}
				maps.Copy(state, res.out)
				for _, key := range res.deleted {
					delete(state, key)
				}
				if err := log.consistent(state); err != nil {
					t.Errorf("client %d, export %v at %s: %v", k, q, res.transactionTime, err)
					return
				}
				mu.Lock()
				toManifest = append(toManifest, res.toManifest)
				throttled += res.throttled
				if q.Has("_since") {
					chained++
				} else {
					full++
				}
				mu.Unlock()
				if k%2 == 1 {
					since = res.transactionTime
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	bg.Wait()
	c.http.CloseIdleConnections()

	peak := mem.stop()
	slices.Sort(toManifest)
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[min(len(d)-1, int(p*float64(len(d))))]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
	exports := full + chained
	// One line of name value pairs, which scripts/bench.sh reads.
	t.Logf("LOAD clients %d seconds %.1f exports %d full %d since %d exports/s %.1f alone-exports/s %.1f "+
		"p50-ms %s p99-ms %s max-ms %s alone-p50-ms %s alone-p99-ms %s 429s %d events %d events/s %.0f "+
		"base-RSS-MB %.0f peak-RSS-MB %.0f peak-Go-MB %.0f peak-non-Go-MB %.0f",
		clients, elapsed.Seconds(), exports, full, chained, float64(exports)/elapsed.Seconds(), aloneRate,
		ms(pct(toManifest, 0.5)), ms(pct(toManifest, 0.99)), ms(pct(toManifest, 1)),
		ms(pct(aloneTimes, 0.5)), ms(pct(aloneTimes, 0.99)), throttled,
		published.Load(), float64(published.Load())/elapsed.Seconds(),
		base.rss, peak.atMax.rss, peak.goMB, peak.nonGoMB)
	if exports < clients {
		t.Errorf("only %d exports completed", exports)
	}
	if chained == 0 {
		t.Error("no _since export completed")
	}
	if peak.n == 0 {
		t.Error("no memory sample of serve during the load")
	}
	if peak.atMax.rss > rssGoal {
		t.Errorf("serve's RSS peaked at %.0f MB under load (%.0f MB before): over the %d MB goal", peak.atMax.rss, base.rss, rssGoal)
	}
}

type loadClient struct {
	base string
	http *http.Client
}

type loadResult struct {
	transactionTime string
	out             map[string]int // Type/id → event position
	deleted         []string
	toManifest      time.Duration
	throttled       int
}

// export kicks off (retrying 429s after Retry-After), polls and downloads
// one export.
func (c *loadClient) export(ctx context.Context, q url.Values) (loadResult, error) {
	var res loadResult
	start := time.Now()
	var status string
	for status == "" {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/$export?"+q.Encode(), nil)
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Prefer", "respond-async")
		resp, b, err := c.do(req)
		if err != nil {
			return res, err
		}
		switch resp.StatusCode {
		case http.StatusAccepted:
			status = resp.Header.Get("Content-Location")
		case http.StatusTooManyRequests:
			res.throttled++
			ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || ra < 1 {
				return res, fmt.Errorf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
			if err := sleep(ctx, time.Duration(ra)*time.Second); err != nil {
				return res, err
			}
			start = time.Now()
		default:
			return res, fmt.Errorf("kick-off: %d %s", resp.StatusCode, b)
		}
	}
	var m manifest
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", status, nil)
		resp, b, err := c.do(req)
		if err != nil {
			return res, err
		}
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &m); err != nil {
				return res, fmt.Errorf("manifest: %v", err)
			}
			break
		}
		if resp.StatusCode != http.StatusAccepted {
			return res, fmt.Errorf("status: %d %s", resp.StatusCode, b)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return res, err
		}
	}
	res.toManifest = time.Since(start)
	res.transactionTime = m.TransactionTime
	res.out = map[string]int{}
	if len(m.Error) > 0 {
		return res, fmt.Errorf("manifest lists errors: %+v", m.Error)
	}
	for _, o := range m.Output {
		n := 0
		err := c.lines(ctx, o.URL, func(l []byte) error {
			var r struct {
				ResourceType, ID string
				Extension        []struct{ ValueInteger int }
			}
			if err := json.Unmarshal(l, &r); err != nil || len(r.Extension) != 1 || r.ResourceType != o.Type {
				return fmt.Errorf("%s: bad line %.100s (%v)", o.URL, l, err)
			}
			key := r.ResourceType + "/" + r.ID
			if _, dup := res.out[key]; dup {
				return fmt.Errorf("%s exported twice", key)
			}
			res.out[key] = r.Extension[0].ValueInteger
			n++
			return nil
		})
		if err != nil {
			return res, err
		}
		if n != o.Count {
			return res, fmt.Errorf("%s: %d lines, manifest count %d", o.URL, n, o.Count)
		}
	}
	for _, d := range m.Deleted {
		err := c.lines(ctx, d.URL, func(l []byte) error {
			var b struct {
				Entry []struct{ Request struct{ Method, URL string } }
			}
			if err := json.Unmarshal(l, &b); err != nil {
				return err
			}
			for _, e := range b.Entry {
				if _, ok := res.out[e.Request.URL]; ok {
					return fmt.Errorf("%s both exported and deleted", e.Request.URL)
				}
				res.deleted = append(res.deleted, e.Request.URL)
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func (c *loadClient) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// lines downloads an NDJSON file, gzip-encoded every other time.
func (c *loadClient) lines(ctx context.Context, u string, fn func([]byte) error) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	gz := time.Now().UnixNano()%2 == 0
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := c.http.Transport.RoundTrip(req) // no transparent decompression
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return err
		}
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if err := fn(bytes.Clone(sc.Bytes())); err != nil {
			return err
		}
	}
	return sc.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
