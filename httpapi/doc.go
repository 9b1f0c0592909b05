// Package httpapi is bulkstream's HTTP surface, routed with
// julienschmidt/httprouter.
//
// Routes so far:
//
//	GET /metrics   Prometheus metrics (the handler comes in through Config)
//	GET /healthz   200 {"status":"ok"} while the process runs
//	GET /readyz    200 when every readiness check passes, 503 with the reasons otherwise
//
// The FHIR $export API arrives with the export package; its handlers will
// live here too, behind the narrow interfaces this package defines.
package httpapi
