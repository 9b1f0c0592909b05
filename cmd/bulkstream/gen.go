package main

import (
	"context"
	"errors"
	"io"
)

// placeholder until the generator lands
func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("gen: not implemented yet")
}
