package ingest

import "testing"

func TestPullSize(t *testing.T) {
	for _, tc := range []struct {
		batch, maxAckPending, maxRequestBatch, want int
	}{
		{500, 10000, 0, fetchAhead * 500},
		{500, 0, 0, fetchAhead * 500},
		// The batch being committed is unacked too.
		{500, 500 + 300, 0, 500},
		{500, 500 + 700, 0, 700},
		{500, 10000, 600, 600},
		{500, 10000, 100, 100},
		{1, 10000, 0, fetchAhead},
	} {
		if got := pullSize(tc.batch, tc.maxAckPending, tc.maxRequestBatch); got != tc.want {
			t.Errorf("pullSize(%d, %d, %d) = %d, want %d", tc.batch, tc.maxAckPending, tc.maxRequestBatch, got, tc.want)
		}
	}
}
