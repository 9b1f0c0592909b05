// Package bulkstream holds what the commands need from the repository
// itself: the Synthea sample (testdata/synthea-r4-100-patients.ndjson.gz,
// 38,483 resources of 100 synthetic patients, gzip), embedded so that
// `bulkstream gen` and `bulkstream publish --sample` work from any
// directory.
package bulkstream

import (
	_ "embed"
	"io"
	"strings"
)

// SampleName names the embedded sample in messages: the file it was
// built from.
const SampleName = "testdata/synthea-r4-100-patients.ndjson.gz"

// SampleResources is the number of resources (NDJSON lines) in the sample.
const SampleResources = 38483

//go:embed testdata/synthea-r4-100-patients.ndjson.gz
var sample string

// Sample returns a reader of the embedded sample, gzip-compressed NDJSON,
// and its size in bytes.
func Sample() (io.Reader, int64) {
	return strings.NewReader(sample), int64(len(sample))
}
