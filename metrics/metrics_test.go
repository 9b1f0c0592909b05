package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegistryServesBuildInfo(t *testing.T) {
	reg := NewRegistry("v1.2.3", "")
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()

	for _, accept := range []string{"text/plain", "application/openmetrics-text; version=1.0.0"} {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got, want := resp.StatusCode, 200; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		if !strings.Contains(string(body), `bulkstream_build_info{goversion="`) || !strings.Contains(string(body), `version="v1.2.3"`) {
			t.Errorf("Accept %q: build_info missing from\n%.500s", accept, body)
		}
		if !strings.Contains(string(body), "go_goroutines") || !strings.Contains(string(body), "process_") {
			t.Errorf("Accept %q: Go or process collector missing", accept)
		}
		if strings.HasPrefix(accept, "application/openmetrics") && !strings.HasSuffix(string(body), "# EOF\n") {
			t.Errorf("OpenMetrics response does not end in # EOF")
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "bulkstream_") {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
}
