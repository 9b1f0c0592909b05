package export

import (
	"os"
	"time"
)

// fileStamp identifies one state of a file on disk without reading it:
// inode, size, modification and status-change times, and when it was
// taken. OpenFile hashes a file again only when its stamp differs from
// the one recorded when its bytes last matched the digest.
//
// Why this is enough: every write, truncation or rename onto the name
// changes the inode, the size or the ctime, and nothing but the kernel
// sets ctime (os.Chtimes can put mtime back, never ctime). One catch:
// file timestamps are coarse (a clock tick, up to seconds on some
// filesystems), so a change made within the same tick as the last write
// before the stamp can leave ctime unchanged. As git does for its index
// ("racy clean" entries), a stamp is trusted only when the file's ctime
// is older than the time the stamp was taken by more than racyWindow;
// otherwise the file is hashed, and stamped again, on the next download.
type fileStamp struct {
	ino          uint64
	size         int64
	mtime, ctime int64 // ns since the epoch
	at           int64 // ns since the epoch, wall clock before the stat
}

// racyWindow exceeds the coarsest timestamp granularity of the
// filesystems bulkstream runs on (FAT-like ones: 2 s).
const racyWindow = 2 * time.Second

// stampOf builds the stamp of fi, taken at at; ok is false where the
// platform does not give inode and ctime (the file is then hashed on
// every download).
func stampOf(fi os.FileInfo, at time.Time) (fileStamp, bool) {
	ino, ctime, ok := inodeCtime(fi)
	if !ok {
		return fileStamp{}, false
	}
	return fileStamp{ino: ino, size: fi.Size(), mtime: fi.ModTime().UnixNano(), ctime: ctime, at: at.UnixNano()}, true
}

// matches reports whether the file, stamped now as cur, is unchanged
// since s was recorded, and s can be trusted (window: racyWindow, or
// less in tests).
func (s fileStamp) matches(cur fileStamp, window time.Duration) bool {
	return s.ino != 0 && s.ctime+int64(window) < s.at &&
		s.ino == cur.ino && s.size == cur.size && s.mtime == cur.mtime && s.ctime == cur.ctime
}
