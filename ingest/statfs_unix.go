//go:build linux || darwin || freebsd

package ingest

import "syscall"

// statfsFree returns the bytes available to unprivileged users on the
// filesystem of dir.
func statfsFree(dir string) (int64, bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false, err
	}
	return int64(st.Bavail) * int64(st.Bsize), true, nil //nolint:unconvert // field types differ by OS
}
