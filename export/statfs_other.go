//go:build !(linux || darwin || freebsd)

package export

import (
	"errors"
	"io/fs"
	"syscall"
)

// isNoSpace reports a full disk.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// isNotWritable reports a permission error.
func isNotWritable(err error) bool { return errors.Is(err, fs.ErrPermission) }
