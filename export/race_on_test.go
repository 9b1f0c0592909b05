//go:build race

package export

// raceEnabled: the race detector's instrumentation allocates, so
// allocation counts mean nothing.
const raceEnabled = true
