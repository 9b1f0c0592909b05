//go:build linux || darwin || freebsd

package export

import (
	"errors"
	"io/fs"
	"syscall"
)

// isNoSpace reports a full disk or an exhausted quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// isNotWritable reports a read-only filesystem or a permission error.
func isNotWritable(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission)
}
