package export

// ParseRequest validates kick-off parameters. Placeholder: the real parser
// replaces this file.
func ParseRequest(params []Param, opts ParseOptions) (Request, error) {
	return Request{OutputFormat: "application/fhir+ndjson", Until: ^uint64(0), Lenient: opts.Lenient}, nil
}
