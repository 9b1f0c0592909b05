package jsonobj

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"os"
	"testing"
)

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

// sampleBodies returns up to 5,000 resources of the Synthea sample
// without a backslash.
func sampleBodies(b *testing.B) [][]byte {
	f, err := os.Open("../../testdata/synthea-r4-100-patients.ndjson.gz")
	if err != nil {
		b.Skip("no Synthea sample:", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	var bodies [][]byte
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() && len(bodies) < 5000 {
		if bytes.IndexByte(sc.Bytes(), '\\') < 0 {
			bodies = append(bodies, bytes.Clone(sc.Bytes()))
		}
	}
	return bodies
}
