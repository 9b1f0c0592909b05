# bulkstream — see README.md.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X 'main.version=$(VERSION)'
BIN      := bin/bulkstream
PKGS     := ./...
FUZZTIME ?= 10s

.PHONY: all build run test test-reliability race race-ci bench bench-cluster fuzz lint clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/bulkstream

# Build, start `serve` on the embedded default (embedded NATS + Pebble in
# ./data), publish the Synthea sample, and keep serving until Ctrl-C.
# BULKSTREAM_LISTEN, BULKSTREAM_NATS_LISTEN and the other BULKSTREAM_*
# variables configure serve, and the script follows them (scripts/run.sh).
run:
	@echo "make run: building $(BIN); the first build downloads and compiles the dependencies (about 3 minutes), later ones take seconds"
	@$(MAKE) --no-print-directory build
	./scripts/run.sh $(BIN)

test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 20m $(PKGS)

race:
	$(GO) test -count=1 -race -timeout 30m $(PKGS)

# The race detector as CI runs it: the packages whose goroutines share
# state, and the cmd/bulkstream tests that run serve inside the test
# process (the others run the binary, built without -race). About 6.5
# minutes on 2 busy cores (3.3 for the packages, 3.1 for cmd/bulkstream).
RACE_PKGS      := ./index/... ./ingest/... ./export/... ./httpapi/... ./internal/bulkclient/... ./internal/smart/...
RACE_CMD_TESTS := ^(TestExportSynthea|TestChainedIncrementalExports|TestAuthEndToEnd|TestServeTLS|TestOpsListen|TestServeConnectionLimits|TestReadinessChecks)$$
race-ci:
	$(GO) test -count=1 -race -timeout 30m $(RACE_PKGS)
	$(GO) test -count=1 -race -timeout 30m -run '$(RACE_CMD_TESTS)' ./cmd/bulkstream

# Benchmarks, with their physical limits measured in the same run;
# results go to BENCHMARKS.md.
bench:
	./scripts/bench.sh

# Cluster mode on a 3-node NATS cluster (Object Store files, single node
# vs cluster export, concurrent exports on 1 vs 2 replicas, takeover,
# replica bootstrap), each next to its limit measured in the same run;
# writes the "Cluster" section of BENCHMARKS.md. CLUSTER_BENCH_RESOURCES
# (200k) sets the export size.
bench-cluster:
	./scripts/bench-cluster.sh

# Each fuzz target for $(FUZZTIME).
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# The reliability suite's fuzzing, as CI runs it: every fuzz target for
# $(RELIABILITY_FUZZTIME), the hostile-input ones (HTTP kick-off query and
# body, status and file routes, event decoding) for
# $(RELIABILITY_FUZZTIME_LONG); about 3.5 minutes with their builds. The
# suite's other tests run in `make test`.
RELIABILITY_FUZZTIME      ?= 5s
RELIABILITY_FUZZTIME_LONG ?= 30s
RELIABILITY_FUZZ_LONG     := FuzzKickoff FuzzParseRequest FuzzJobRoutes FuzzDecode
test-reliability:
	FUZZ_LONG="$(foreach f,$(RELIABILITY_FUZZ_LONG),$(f)=$(RELIABILITY_FUZZTIME_LONG))" ./scripts/fuzz.sh $(RELIABILITY_FUZZTIME)

# go vet, gofmt, staticcheck (installed from the Go module proxy on first
# use) and a tidy go.mod; about 2.5 minutes on 2 busy cores.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK         := $(shell $(GO) env GOPATH)/bin/staticcheck
lint: $(STATICCHECK)
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(STATICCHECK) $(PKGS)
	$(GO) mod tidy -diff

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean:
	rm -rf bin
