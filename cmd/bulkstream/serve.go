package main

import (
	"context"
	"errors"
	"io"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("serve: not implemented yet")
}

func runRebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("rebuild: not implemented yet")
}
