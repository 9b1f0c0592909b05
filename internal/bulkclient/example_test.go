package bulkclient_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/bulkstream/bulkstream/internal/bulkclient"
)

// Example runs one export against a tiny Bulk Data server: the kick-off
// answers 202 with a status URL, the first poll 202 with X-Progress, the
// second the manifest, and the manifest's one file is downloaded,
// verified against its count and written to a directory; then the job
// is deleted on the server.
func Example() {
	patients := `{"resourceType":"Patient","id":"p1"}` + "\n" +
		`{"resourceType":"Patient","id":"p2"}` + "\n"
	var polls atomic.Int32
	mux := http.NewServeMux()
	var srv *httptest.Server
	mux.HandleFunc("GET /fhir/$export", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("kick-off:", r.URL.RawQuery, r.Header.Get("Prefer"))
		w.Header().Set("Content-Location", srv.URL+"/fhir/bulkstatus/j1")
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /fhir/bulkstatus/j1", func(w http.ResponseWriter, r *http.Request) {
		if polls.Add(1) == 1 {
			w.Header().Set("X-Progress", "scanning Patient")
			w.Header().Set("Retry-After", "1") // clamped to Config.PollMax
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"transactionTime":"2026-02-01T00:00:00.000000Z",`+
			`"request":"%[1]s/fhir/$export?_type=Patient","requiresAccessToken":false,`+
			`"output":[{"type":"Patient","url":"%[1]s/fhir/bulkfiles/j1/Patient-1.ndjson","count":2}],"error":[]}`, srv.URL)
	})
	mux.HandleFunc("GET /fhir/bulkfiles/j1/Patient-1.ndjson", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		io.WriteString(w, patients)
	})
	mux.HandleFunc("DELETE /fhir/bulkstatus/j1", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("delete: job j1")
		w.WriteHeader(http.StatusAccepted)
	})
	srv = httptest.NewServer(mux)
	defer srv.Close()

	c, err := bulkclient.New(bulkclient.Config{
		BaseURL: srv.URL + "/fhir",
		PollMin: time.Millisecond,
		PollMax: 10 * time.Millisecond,
		OnProgress: func(progress string, _ time.Duration) {
			fmt.Println("progress:", progress)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	job, err := c.Kickoff(ctx, bulkclient.Request{Types: []string{"Patient"}})
	if err != nil {
		log.Fatal(err)
	}
	m, err := job.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("transactionTime:", m.TransactionTime)

	dir, err := os.MkdirTemp("", "bulkclient-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	files, err := c.Download(ctx, m, dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s: %d resources, %d bytes\n", f.Kind, filepath.Base(f.Path), f.Lines, len(b))
	}
	// Once downloaded, the job's files can go.
	if err := job.Cancel(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// kick-off: _type=Patient respond-async
	// progress: scanning Patient
	// transactionTime: 2026-02-01T00:00:00.000000Z
	// output Patient.1.ndjson: 2 resources, 74 bytes
	// delete: job j1
}
