package export

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

// TestClientMessageDiskErrors: the failure message of a job names a full
// or unwritable export directory instead of a generic internal error.
func TestClientMessageDiskErrors(t *testing.T) {
	pathErr := func(errno syscall.Errno) error {
		return fmt.Errorf("write part: %w", &fs.PathError{Op: "write", Path: "/data/exports/x/Patient.ndjson", Err: errno})
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{pathErr(syscall.ENOSPC), "ran out of disk space"},
		{pathErr(syscall.EROFS), "not writable"},
		{pathErr(syscall.EACCES), "not writable"},
		{errors.New("boom"), "internal error"},
	} {
		got := clientMessage(c.err)
		if !strings.Contains(got, c.want) {
			t.Errorf("clientMessage(%v) = %q, want it to contain %q", c.err, got, c.want)
		}
		if strings.Contains(got, "/data/exports") {
			t.Errorf("clientMessage(%v) = %q leaks the path", c.err, got)
		}
	}
}
