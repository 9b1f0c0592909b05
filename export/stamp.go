package export

import (
	"os"
	"time"
)

// FileStamp identifies one state of a stored file without reading it:
// its identity in the store, size, modification and change times, and
// when the stamp was taken. OpenFile hashes a file again only when its
// stamp differs from the one recorded when its bytes last matched the
// digest.
//
// For a local file (the store of NewDirStore) ID is the inode and Change
// the ctime. Why this is enough: every write, truncation or rename onto
// the name changes the inode, the size or the ctime, and nothing but the
// kernel sets ctime (os.Chtimes can put mtime back, never ctime). One
// catch: file timestamps are coarse (a clock tick, up to seconds on some
// filesystems), so a change made within the same tick as the last write
// before the stamp can leave ctime unchanged. As git does for its index
// ("racy clean" entries), a stamp is trusted only when Change is older
// than At by more than racyWindow; otherwise the file is hashed, and
// stamped again, on the next download.
//
// A store that cannot tell (ID 0) gets its files hashed on every
// download.
type FileStamp struct {
	ID     uint64 // identity of the stored bytes (inode); 0: none, never trusted
	Size   int64  // bytes
	Mod    int64  // modification time, ns since the epoch (Last-Modified)
	Change int64  // last change of anything about the file, ns since the epoch; set by the store alone
	At     int64  // wall clock before the stamp was taken, ns since the epoch
}

// ModTime is Mod as a time.
func (s FileStamp) ModTime() time.Time { return time.Unix(0, s.Mod) }

// racyWindow exceeds the coarsest timestamp granularity of the
// filesystems bulkstream runs on (FAT-like ones: 2 s).
const racyWindow = 2 * time.Second

// stampOf builds the stamp of a local file fi, taken at at; its ID is 0
// where the platform does not give inode and ctime (the file is then
// hashed on every download).
func stampOf(fi os.FileInfo, at time.Time) FileStamp {
	s := FileStamp{Size: fi.Size(), Mod: fi.ModTime().UnixNano(), At: at.UnixNano()}
	if ino, ctime, ok := inodeCtime(fi); ok {
		s.ID, s.Change = ino, ctime
	}
	return s
}

// sameState reports whether s and t describe the same state of a file
// (when each was taken aside).
func (s FileStamp) sameState(t FileStamp) bool {
	return s.ID == t.ID && s.Size == t.Size && s.Mod == t.Mod && s.Change == t.Change
}

// matches reports whether the file, stamped now as cur, is unchanged
// since s was recorded, and s can be trusted (window: racyWindow, or
// less in tests).
func (s FileStamp) matches(cur FileStamp, window time.Duration) bool {
	return s.ID != 0 && s.Change+int64(window) < s.At && s.sameState(cur)
}
