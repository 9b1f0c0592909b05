//go:build linux || darwin || freebsd

package diskspace

import "syscall"

// Free returns the bytes available to unprivileged users on the
// filesystem of dir; ok is false where the OS cannot tell (the callers
// then skip their check).
func Free(dir string) (bytes int64, ok bool, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false, err
	}
	return int64(st.Bavail) * int64(st.Bsize), true, nil //nolint:unconvert // field types differ by OS
}
