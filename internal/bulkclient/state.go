package bulkclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bulkstream/bulkstream/internal/atomicfile"
)

// State is an incremental sync's state file: per server and type list,
// the transactionTime of the last complete run, which is the next run's
// _since. It is JSON: {"servers": {"<key>": {"transactionTime": …,
// "updated": …}}}.
type State struct {
	Servers map[string]ServerState `json:"servers"` // by StateKey
}

// ServerState is what State keeps for one server and type list.
type ServerState struct {
	TransactionTime string `json:"transactionTime"`
	Updated         string `json:"updated"` // when the run finished, RFC 3339 UTC
}

// StateKey is the key of a server and type list in State: the base URL
// without a final slash, plus "?_type=" and the sorted types when there
// are any. Runs over different type lists advance separately.
func StateKey(baseURL string, types []string) string {
	key := strings.TrimSuffix(baseURL, "/")
	if len(types) > 0 {
		key += "?_type=" + strings.Join(slices.Sorted(slices.Values(types)), ",")
	}
	return key
}

// RequestStateKey is the State key of a request's run: StateKey at the
// system level; at Patient or Group level the level's path
// (/Patient/$export, /Group/<id>/$export) goes after the base URL, and
// the sorted patient references after the types ("&patient=" or
// "?patient="), then the sorted, query-escaped _typeFilter values (one
// "_typeFilter=" each). Syncs of different levels, Groups, patient lists
// or filters advance separately.
func RequestStateKey(baseURL string, r Request) string {
	if r.Group == "" && !r.PatientLevel && len(r.Patients) == 0 {
		return withTypeFilters(StateKey(baseURL, r.Types), r.TypeFilters)
	}
	key := StateKey(strings.TrimSuffix(baseURL, "/")+r.path(), r.Types)
	if len(r.Patients) > 0 {
		refs := make([]string, 0, len(r.Patients))
		for _, p := range r.Patients {
			ref, err := PatientReference(p)
			if err != nil {
				ref = p // Kickoff refuses it anyway
			}
			refs = append(refs, ref)
		}
		slices.Sort(refs)
		refs = slices.Compact(refs)
		sep := "?"
		if strings.Contains(key, "?") {
			sep = "&"
		}
		key += sep + "patient=" + strings.Join(refs, ",")
	}
	return withTypeFilters(key, r.TypeFilters)
}

// withTypeFilters appends the sorted, deduplicated filters to a state key.
func withTypeFilters(key string, filters []string) string {
	if len(filters) == 0 {
		return key
	}
	fs := slices.Compact(slices.Sorted(slices.Values(filters)))
	for _, f := range fs {
		sep := "?"
		if strings.Contains(key, "?") {
			sep = "&"
		}
		key += sep + "_typeFilter=" + url.QueryEscape(f)
	}
	return key
}

// LoadState reads the state file at path; a missing file is an empty
// state.
func LoadState(path string) (*State, error) {
	st := &State{Servers: map[string]ServerState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Servers == nil {
		st.Servers = map[string]ServerState{}
	}
	return st, nil
}

// Since returns the _since of the next run for key: the last recorded
// transactionTime, or "" (everything) when there is none.
func (st *State) Since(key string) string {
	return st.Servers[key].TransactionTime
}

// Advance records a complete run for key that the server answered with
// transactionTime, finished at now.
func (st *State) Advance(key, transactionTime string, now time.Time) {
	st.Servers[key] = ServerState{TransactionTime: transactionTime, Updated: now.UTC().Format(time.RFC3339)}
}

// Save replaces the state file at path atomically (mode 0600).
func (st *State) Save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}
