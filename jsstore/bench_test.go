package jsstore

import (
	"bytes"
	"io"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkObjectStoreFile puts and gets a 64 MiB export file through the
// FileStore (the default part size: one part, plus its file object),
// next to a raw ObjectStore.Put and Get of the same bytes in one object,
// on an embedded single-node server. SetBytes makes MB/s comparable.
func BenchmarkObjectStoreFile(b *testing.B) {
	const size = 64 << 20
	data := content(size)
	const chunk = 256 << 10 // what a FileWriter is handed at a time

	b.Run("FileStore/put", func(b *testing.B) {
		s, _ := newFileStore(b, 0)
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			write(b, s, "bench", "f"+strconv.Itoa(i), data, chunk)
		}
	})
	b.Run("FileStore/get", func(b *testing.B) {
		s, _ := newFileStore(b, 0)
		write(b, s, "bench", "f", data, chunk)
		b.SetBytes(size)
		for b.Loop() {
			f, err := s.Open("bench", "f")
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, f); err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			f.Close()
		}
	})
	rawStore := func(b *testing.B) jetstream.ObjectStore {
		_, js := newFileStore(b, 0)
		obs, err := js.ObjectStore(b.Context(), "files")
		if err != nil {
			b.Fatal(err)
		}
		return obs
	}
	b.Run("raw/put", func(b *testing.B) {
		obs := rawStore(b)
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			if _, err := obs.Put(b.Context(), jetstream.ObjectMeta{Name: "raw" + strconv.Itoa(i)}, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw/get", func(b *testing.B) {
		obs := rawStore(b)
		if _, err := obs.Put(b.Context(), jetstream.ObjectMeta{Name: "raw"}, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		for b.Loop() {
			r, err := obs.Get(b.Context(), "raw")
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != size {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			r.Close()
		}
	})
}
