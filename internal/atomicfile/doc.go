// Package atomicfile replaces a file so that a crash leaves either its old
// or its new content, never a mix: the new content is written to a
// temporary file in the same directory, fsynced, renamed over the path,
// and the directory is fsynced so the rename itself is durable.
//
// WriteFile does it for bytes in memory. Create returns a *File to stream
// any amount of data into (it is an io.Writer; File.OS gives the
// *os.File for Seek, Truncate or Chmod), then Commit puts it in place and
// Close, deferred, removes the temporary file of a write that was not
// committed. The temporary name is ".<name>.*.tmp" beside the path, or a
// name of the caller's choosing (CreateTemp).
//
// It is a pure leaf (stdlib only): any package may import it.
package atomicfile
