// Package lint holds repository-wide checks that run as tests: the import
// directions of STYLE.md section 7 (cmd → httpapi → export → index,
// cmd → ingest → index; metrics imported only by cmd).
package lint
