package main
import (
 _ "github.com/nats-io/nats.go/jetstream"
 _ "github.com/nats-io/nats-server/v2/server"
 _ "github.com/cockroachdb/pebble/v2"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/prometheus/client_golang/prometheus/promhttp"
 _ "github.com/prometheus/client_golang/prometheus/testutil"
 _ "github.com/julienschmidt/httprouter"
 _ "golang.org/x/sync/errgroup"
 _ "go.uber.org/goleak"
 _ "golang.org/x/term"
)
func main(){}
