package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsCluster is a JetStream cluster of standalone nats-server processes
// (built from go.mod, natsServerPath) on loopback: every node routes to
// every other, stores under its own directory, and answers monitoring
// requests (/jsz, /healthz) on its own port. A node can be killed with
// SIGKILL and restarted on the same ports and store, as an operator
// restarts a crashed broker. Every process is stopped when the test ends
// (startBin's cleanup).
type natsCluster struct {
	t     testing.TB
	name  string
	nodes []*natsNode
}

// natsNode is one server of a natsCluster.
type natsNode struct {
	name    string // server name: what StreamInfo.Cluster.Leader reports
	store   string // -sd
	route   string // host:port of the cluster (route) listener
	client  string // host:port for clients, known once it started
	monitor string // host:port of the monitoring endpoints, known once it started
	p       *proc  // nil while stopped
}

// startNATSCluster starts size nodes as one JetStream cluster and waits
// until every node sees the same meta leader of a cluster of that size.
func startNATSCluster(t testing.TB, size int) *natsCluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("startNATSCluster: size %d", size)
	}
	c := &natsCluster{t: t, name: "bulkstream-test"}
	for i := range size {
		// Route ports must be known before any node starts (each lists
		// the others); client and monitoring ports are picked by each
		// server and read from its log, then kept for its restarts.
		c.nodes = append(c.nodes, &natsNode{name: fmt.Sprintf("n%d", i+1), store: t.TempDir(), route: freeAddr(t)})
	}
	for i := range c.nodes {
		c.startNode(i)
	}
	c.waitMetaLeader()
	return c
}

// args are the nats-server flags of node i.
func (c *natsCluster) args(i int) []string {
	n := c.nodes[i]
	client, monitor := "-1", "-1" // nats-server's "any port"
	if n.client != "" {
		client = portOf(c.t, n.client)
		monitor = portOf(c.t, n.monitor)
	}
	var routes []string
	for j, o := range c.nodes {
		if j != i {
			routes = append(routes, "nats://"+o.route)
		}
	}
	return []string{
		"-a", "127.0.0.1", "-p", client, "-m", monitor,
		"-n", n.name, "-js", "-sd", n.store,
		"--cluster_name", c.name, "--cluster", "nats://" + n.route, "--routes", strings.Join(routes, ","),
	}
}

func portOf(t testing.TB, addr string) string {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if _, err := strconv.Atoi(addr[i+1:]); i < 0 || err != nil {
		t.Fatalf("no port in %q", addr)
	}
	return addr[i+1:]
}

// startNode starts node i (again) and waits until it listens for clients
// and monitoring requests.
func (c *natsCluster) startNode(i int) {
	t := c.t
	t.Helper()
	n := c.nodes[i]
	if n.p != nil {
		t.Fatalf("nats node %s is already running", n.name)
	}
	p := startBin(t, natsServerPath(t), c.args(i)...)
	const (
		listening = "Listening for client connections on "
		monitor   = "Starting http monitor on "
	)
	logged := func(log, prefix string) string {
		_, after, ok := strings.Cut(log, prefix)
		if !ok {
			return ""
		}
		addr, _, _ := strings.Cut(after, "\n")
		return strings.TrimSpace(addr)
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("nats-server %s exited: %v\n%s", n.name, err, p.stderr)
		default:
		}
		log := p.stderr.String()
		client, mon := logged(log, listening), logged(log, monitor)
		if client == "" || mon == "" {
			return fmt.Errorf("nats-server %s has not said where it listens", n.name)
		}
		if n.client != "" && (client != n.client || mon != n.monitor) {
			t.Fatalf("nats-server %s restarted on %s (monitor %s), want %s (%s)", n.name, client, mon, n.client, n.monitor)
		}
		n.client, n.monitor = client, mon
		return nil
	})
	n.p = p
}

// URLs is the comma-separated client URL list of every node, the form
// nats.Connect and --nats-url take.
func (c *natsCluster) URLs() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, "nats://"+n.client)
	}
	return strings.Join(urls, ",")
}

// kill9 kills node i with SIGKILL: no shutdown, no flush of its store.
func (c *natsCluster) kill9(i int) {
	n := c.nodes[i]
	if n.p == nil {
		c.t.Fatalf("nats node %s is not running", n.name)
	}
	n.p.kill9()
	n.p = nil
}

// restart starts node i, killed before, on its ports and store, and waits
// until it is healthy again: back in the cluster, with every stream and
// consumer it holds caught up (nats-server's /healthz).
func (c *natsCluster) restart(i int) {
	c.t.Helper()
	c.startNode(i)
	c.waitNodeHealthy(i, time.Minute)
}

// jsz is the part of a node's /jsz this helper reads.
type jsz struct {
	Meta *struct {
		Leader string `json:"leader"`
		Size   int    `json:"cluster_size"`
	} `json:"meta_cluster"`
}

var monitorClient = &http.Client{Timeout: 5 * time.Second}

func getJSON(u string, v any) error {
	resp, err := monitorClient.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// metaLeader is the meta leader every running node reports ("" with an
// error while they do not agree or have none).
func (c *natsCluster) metaLeader() (string, error) {
	leader := ""
	for _, n := range c.nodes {
		if n.p == nil {
			continue
		}
		var z jsz
		if err := getJSON("http://"+n.monitor+"/jsz", &z); err != nil {
			return "", err
		}
		switch {
		case z.Meta == nil || z.Meta.Leader == "":
			return "", fmt.Errorf("%s has no meta leader", n.name)
		case z.Meta.Size != len(c.nodes):
			return "", fmt.Errorf("%s sees a cluster of %d, want %d", n.name, z.Meta.Size, len(c.nodes))
		case leader != "" && z.Meta.Leader != leader:
			return "", fmt.Errorf("meta leader: %s on one node, %s on %s", leader, z.Meta.Leader, n.name)
		}
		leader = z.Meta.Leader
	}
	return leader, nil
}

// waitMetaLeader waits until the running nodes agree on a meta leader and
// JetStream answers through every one of them.
func (c *natsCluster) waitMetaLeader() {
	c.t.Helper()
	checkFor(c.t, 30*time.Second, 50*time.Millisecond, func() error {
		if _, err := c.metaLeader(); err != nil {
			return err
		}
		for _, n := range c.nodes {
			if n.p == nil {
				continue
			}
			if err := jsAnswers("nats://" + n.client); err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
		}
		return nil
	})
}

// jsAnswers connects to url and asks JetStream for the account info.
func jsAnswers(url string) error {
	nc, err := nats.Connect(url, nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// waitNodeHealthy waits until node i's /healthz answers 200: JetStream
// is enabled, the node is in the meta group, and the streams and
// consumers it holds are current.
func (c *natsCluster) waitNodeHealthy(i int, total time.Duration) {
	c.t.Helper()
	n := c.nodes[i]
	checkFor(c.t, total, 50*time.Millisecond, func() error {
		var h struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		resp, err := monitorClient.Get("http://" + n.monitor + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&h)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s /healthz: %s %s %s", n.name, resp.Status, h.Status, h.Error)
		}
		return nil
	})
}

// node is the index of the node named name, or -1.
func (c *natsCluster) node(name string) int {
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	return -1
}

// streamLeader is the index of the node leading stream, asked through js;
// an error while the stream has no leader.
func (c *natsCluster) streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	ci := s.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		return -1, fmt.Errorf("stream %s has no leader", stream)
	}
	i := c.node(ci.Leader)
	if i < 0 {
		return -1, fmt.Errorf("stream %s: leader %q is not a node of the cluster", stream, ci.Leader)
	}
	return i, nil
}

// waitStreamLeader waits until stream has a leader and returns its index.
func (c *natsCluster) waitStreamLeader(js jetstream.JetStream, stream string, total time.Duration) int {
	c.t.Helper()
	leader := -1
	checkFor(c.t, total, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		leader, err = c.streamLeader(ctx, js, stream)
		if err == nil && c.nodes[leader].p == nil {
			err = errors.New("the leader reported is a stopped node")
		}
		return err
	})
	return leader
}
