package jsstore

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: a
// watch or a reader left running. It ignores one goroutine nats.go itself
// leaks: jetstream.(*jetStream).resetPendingAcksOnReconnect, started by an
// async publish (an Object Store put), reads the connection-status channel
// only after starting, and cleanupReplySub may set it to nil first; the
// goroutine then waits on a nil channel forever.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}
