package main

import (
	"context"
	"errors"
	"io"
)

// placeholder until the publisher lands
func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("publish: not implemented yet")
}
