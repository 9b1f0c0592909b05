//go:build linux && cgo

package main

/*
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

// bulkstream_limit_arenas caps glibc malloc at one arena unless the
// operator chose a cap (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in
// GLIBC_TUNABLES). A constructor: it runs when the program is loaded,
// before the Go runtime starts threads, each of which would get an arena
// of its own at its first malloc (a Go init function is too late). With
// another libc (musl) it does nothing.
__attribute__((constructor)) static void bulkstream_limit_arenas(void) {
#if defined(__GLIBC__) && defined(M_ARENA_MAX)
	if (getenv("MALLOC_ARENA_MAX") != NULL) return;
	const char *t = getenv("GLIBC_TUNABLES");
	if (t != NULL && strstr(t, "arena_max") != NULL) return;
	mallopt(M_ARENA_MAX, 1);
#endif
}
*/
import "C"

// Pebble allocates its block cache and memtables with C malloc (outside
// the Go heap), and glibc gives each thread that mallocs an arena of its
// own, up to 8 per core. Go runs goroutines on any thread, so a block read
// on one thread is freed on another, and every arena keeps freed chunks it
// cannot return: exporting 1M resources with a 30 MB block cache took the
// process's C memory to ~200 MB with the default arenas and kept it at
// ~55 MB with one (export's TestExportMemory harness). One arena
// serializes mallocs, which Pebble makes per block, not per key. The C
// constructor above sets it; this file only has to be linked in.
