package diskspace

import (
	"runtime"
	"testing"
)

func TestFree(t *testing.T) {
	free, ok, err := Free(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" && (!ok || free <= 0) {
		t.Errorf("Free = %d, %v on linux, want a positive size", free, ok)
	}
	if _, _, err := Free(t.TempDir() + "/missing"); err == nil && runtime.GOOS == "linux" {
		t.Error("Free of a missing directory: no error")
	}
}
