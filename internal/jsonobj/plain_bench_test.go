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
	total := 0
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() && len(bodies) < 5000 {
		if bytes.IndexByte(sc.Bytes(), '\\') < 0 {
			bodies = append(bodies, bytes.Clone(sc.Bytes()))
			total += len(sc.Bytes())
		}
	}
	b.SetBytes(int64(total / 2)) // the shorter side: half
	for b.Loop() {
		for _, body := range bodies {
			PlainDepth(body, len(body)/2)
		}
	}
}
