//go:build !(linux || darwin || freebsd)

package export

import (
	"errors"
	"syscall"
)

// freeBytes cannot measure free space on this OS: the check is skipped.
func freeBytes(string) (int64, bool, error) { return 0, false, nil }

// isNoSpace reports a full disk.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
