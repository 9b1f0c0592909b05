//go:build !(linux || darwin || freebsd)

package export

import (
	"errors"
	"io/fs"
	"syscall"
)

// freeBytes cannot measure free space on this OS: the check is skipped.
func freeBytes(string) (int64, bool, error) { return 0, false, nil }

// isNoSpace reports a full disk.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// isNotWritable reports a permission error.
func isNotWritable(err error) bool { return errors.Is(err, fs.ErrPermission) }
