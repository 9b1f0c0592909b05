// Package lint holds repository-wide checks that run as tests.
//
// TestForbiddenImports (deps_test.go) enforces the import directions
// cmd → httpapi → export → index and cmd → ingest → index, with metrics
// imported only by cmd, in every file whatever its build constraints and
// in what each package links on Linux, macOS, FreeBSD and Windows, through
// other packages too. Who may import whom (no other edges):
//
//	package              may import                                       must not import
//	index                pebble, client_golang prometheus, stdlib         nats*, net/http, any other bulkstream package
//	ingest               index (types; writes through its own Applier     export, httpapi, metrics, cmd,
//	                     interface), nats.go, prometheus                  nats-server, net/http
//	jsstore              export, index (types), nats.go                   ingest, httpapi, metrics, cmd, nats-server, net/http
//	export               index (through its own Source/JobStore           ingest, httpapi, metrics, cmd, nats*
//	                     interfaces), internal/search, prometheus
//	httpapi              export (types; calls through its own Jobs/Files  ingest, index, metrics, cmd, nats*
//	                     interfaces), internal/smart, httprouter,
//	                     prometheus, promhttp
//	metrics              client_golang only                               every bulkstream package
//	internal/jsonobj,    stdlib (pure leaves; any package outside         other bulkstream packages, github.com/*
//	internal/fhir,       internal/ may import them)
//	internal/fhirdefs,
//	internal/diskspace
//	internal/atomicfile  stdlib (a pure leaf every package may import,   other bulkstream packages, github.com/*
//	                     internal/ ones too)
//	internal/search      stdlib, internal/fhir, internal/fhirdefs,         other bulkstream packages, github.com/*
//	                     internal/jsonobj (export imports it)
//	internal/synth       stdlib, internal/jsonobj                         other bulkstream packages, nats*, pebble
//	internal/smart       stdlib, go-jose, internal/fhir                   other bulkstream packages, nats*, pebble,
//	                                                                      prometheus, httprouter
//	internal/bulkclient  stdlib, internal/smart                           other bulkstream packages, any other module
//	cmd/bulkstream       everything above, plus nats-server (embedded)    —
//
// Helper packages named <pkg>test (ingest/ingesttest, index/indextest) run
// servers for tests and are exempt. Only cmd builds the Prometheus registry
// and passes it down as a prometheus.Registerer; httpapi gets the /metrics
// handler as an http.Handler in its Config. The export kick-off waits for
// "applied seq ≥ N" by reading the index, not through an edge to ingest.
//
// TestDocsStandAlone (docs_test.go) keeps comments and docs readable from
// the repository alone: no pointers to notes kept outside it or to issue
// numbers; the FHIR Bulk Data Access IG, SMART App Launch and RFCs are
// cited by URL.
package lint
