package smart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/bulkstream/bulkstream/internal/atomicfile"
)

// ReplayCache remembers assertion ids (jti) per issuer.
type ReplayCache interface {
	// Seen records (iss, jti) and reports whether it was already recorded
	// and not yet forgotten. forget is the time after which the entry may
	// be dropped: VerifyAssertion passes the assertion's exp plus
	// ClockSkew, the last moment the assertion could still be accepted.
	// Seen must record durably before it returns false; on error the
	// caller must refuse the assertion.
	Seen(iss, jti string, forget time.Time) (bool, error)
}

// ReplayFile is a ReplayCache backed by an append-only file, so that a
// restart does not reopen the replay window. It is safe for concurrent use.
//
// Each entry is one JSON line {"iss":…,"jti":…,"exp":<unix seconds>}
// written and fsynced before Seen returns false. Opening the file loads the
// live entries, skips lines that do not parse (a line torn by a crash was
// never acknowledged, because Seen returns only after fsync) and rewrites
// the file without the expired and torn ones (temp file, fsync, rename,
// fsync of the directory). The file is compacted the same way while running
// once the dead lines outnumber the live ones (and there are at least
// replayCompactMin of them). Expired entries are pruned from memory at most
// once a second.
type ReplayFile struct {
	path string
	now  func() time.Time

	mu        sync.Mutex
	f         *os.File
	entries   map[replayKey]int64 // → forget time, unix seconds
	lines     int                 // lines in the file
	lastPrune int64
}

type replayKey struct{ iss, jti string }

type replayLine struct {
	Iss string `json:"iss"`
	Jti string `json:"jti"`
	Exp int64  `json:"exp"`
}

const replayCompactMin = 4096

var _ ReplayCache = (*ReplayFile)(nil)

// OpenReplayFile opens (creating it 0600 if needed) the replay file at path.
func OpenReplayFile(path string) (*ReplayFile, error) {
	return openReplayFile(path, time.Now)
}

func openReplayFile(path string, now func() time.Time) (*ReplayFile, error) {
	r := &ReplayFile{path: path, now: now, entries: map[replayKey]int64{}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("smart: open replay file: %w", err)
	}
	t := now().Unix()
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l replayLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Iss == "" || l.Jti == "" {
			continue // torn or foreign line: never acknowledged
		}
		if l.Exp > t {
			k := replayKey{l.Iss, l.Jti}
			if l.Exp > r.entries[k] {
				r.entries[k] = l.Exp
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("smart: read replay file %s: %w", path, err)
	}
	r.lastPrune = t
	if err := r.compact(); err != nil {
		if r.f != nil {
			r.f.Close()
		}
		return nil, err
	}
	return r, nil
}

// compact rewrites the file with the live entries and reopens it for
// appending. r.mu must be held (or r not yet shared).
func (r *ReplayFile) compact() error {
	var buf bytes.Buffer
	for k, exp := range r.entries {
		b, err := json.Marshal(replayLine{Iss: k.iss, Jti: k.jti, Exp: exp})
		if err != nil {
			return fmt.Errorf("smart: compact replay file: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	// Keep the temporary file's handle: after the rename it is the
	// replay file, positioned at its end, so there is no window in which
	// appends could go to the replaced file.
	f, err := replaceFile(r.path, buf.Bytes(), 0o600)
	if f != nil {
		if r.f != nil {
			r.f.Close()
		}
		r.f = f
		r.lines = len(r.entries)
	}
	if err != nil {
		return fmt.Errorf("smart: compact replay file: %w", err)
	}
	return nil
}

// Seen implements ReplayCache.
func (r *ReplayFile) Seen(iss, jti string, forget time.Time) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return false, ErrClosed
	}
	t := r.now().Unix()
	if t > r.lastPrune {
		for k, exp := range r.entries {
			if exp <= t {
				delete(r.entries, k)
			}
		}
		r.lastPrune = t
	}
	k := replayKey{iss, jti}
	if exp, ok := r.entries[k]; ok && exp > t {
		return true, nil
	}
	exp := forget.Unix()
	if forget.After(time.Unix(exp, 0)) {
		exp++ // round up: never forget early
	}
	b, err := json.Marshal(replayLine{Iss: iss, Jti: jti, Exp: exp})
	if err != nil {
		return false, fmt.Errorf("smart: replay file: %w", err)
	}
	b = append(b, '\n')
	if _, err := r.f.Write(b); err != nil {
		return false, fmt.Errorf("smart: append replay file: %w", err)
	}
	if err := r.f.Sync(); err != nil {
		return false, fmt.Errorf("smart: sync replay file: %w", err)
	}
	if exp > t {
		r.entries[k] = exp
	}
	r.lines++
	if dead := r.lines - len(r.entries); dead >= replayCompactMin && dead > len(r.entries) {
		if err := r.compact(); err != nil {
			// The entry is durable (in the old file, or in the new one if
			// the rename happened), but fail closed.
			return false, err
		}
	}
	return false, nil
}

// Close closes the file. Seen fails with ErrClosed afterwards. Close is
// safe to call twice.
func (r *ReplayFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// len returns the number of live entries in memory (for tests).
func (r *ReplayFile) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// writeFileAtomic writes data to path through a synced temporary file in
// the same directory and a rename, then syncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}

// replaceFile is writeFileAtomic that returns the new file open for
// writing at its end. The file is non-nil whenever the rename happened,
// even with an error (a failed directory sync).
func replaceFile(path string, data []byte, perm os.FileMode) (*os.File, error) {
	f, err := atomicfile.Create(path, perm)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	return f.CommitOpen()
}
