package jsonobj

import "testing"

// BenchmarkPlainDepth reports the cost of PlainDepth over whole
// resources of the sample (ns/byte): the rate of the plain walk's
// bracket count.
func BenchmarkPlainDepth(b *testing.B) {
	bodies := sampleBodies(b)
	total := 0
	for _, body := range bodies {
		total += len(body)
	}
	b.SetBytes(int64(total / 2)) // the shorter side: half
	for b.Loop() {
		for _, body := range bodies {
			PlainDepth(body, len(body)/2)
		}
	}
}
