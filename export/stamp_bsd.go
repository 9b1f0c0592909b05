//go:build darwin || freebsd

package export

import (
	"os"
	"syscall"
)

func inodeCtime(fi os.FileInfo) (ino uint64, ctime int64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Ino), st.Ctimespec.Nano(), true //nolint:unconvert // field types differ by OS
}
