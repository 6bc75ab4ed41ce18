//go:build unix

package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

const clusterTimeout = 20 * time.Second // redis-cli --cluster create, then until every node reports cluster_state:ok

// ClusterServers is a Redis Cluster of masters only, started by Cluster.
type ClusterServers struct {
	Addrs []string  // "127.0.0.1:PORT" of every node, in Nodes order
	Nodes []*Server // the nodes; each can be stopped, paused and restarted
}

// Cluster starts n ≥ 3 redis-server processes with --cluster-enabled yes,
// each in its own dir and on its own port (below 55535, with port+10000 free
// for the cluster bus), joins them with "redis-cli --cluster create ...
// --cluster-replicas 0 --cluster-yes" (the 16384 slots split evenly, no
// replicas), and waits (up to 20 s) until CLUSTER INFO on every node reports
// cluster_state:ok and all n nodes known. opts apply to every node.
func Cluster(t testing.TB, n int, opts ...Option) *ClusterServers {
	t.Helper()
	if n < 3 {
		t.Fatalf("redistest: Cluster needs at least 3 nodes, got %d (redis-cli --cluster create refuses fewer masters)", n)
	}
	c := &ClusterServers{}
	nodeOpts := append([]Option{
		func(c *config) { c.clusterPorts = true },
		WithArgs("--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000"),
	}, opts...)
	for range n {
		s := Start(t, nodeOpts...)
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}

	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if pw := c.Nodes[0].cfg.password; pw != "" {
		args = append([]string{"-a", pw, "--no-auth-warning"}, args...)
	}
	if out, err := runCLI(c.Nodes[0].cli, clusterTimeout, args...); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	known := "cluster_known_nodes:" + strconv.Itoa(n)
	ok, detail := poll(clusterTimeout, func() (bool, string) {
		for _, s := range c.Nodes {
			info, err := s.do("CLUSTER", "INFO")
			if err != nil {
				return false, fmt.Sprintf("%s: %v", s.Addr, err)
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, known) {
				return false, fmt.Sprintf("%s: CLUSTER INFO:\n%s", s.Addr, info)
			}
		}
		return true, ""
	})
	if !ok {
		t.Fatalf("redistest: cluster not ok within %v; last %s", clusterTimeout, detail)
	}
	return c
}

// Do runs one command through "redis-cli -c" (following MOVED and ASK
// redirections) starting at the first node, and returns the trimmed stdout.
// The test fails on a non-zero exit, which includes error replies.
func (c *ClusterServers) Do(t testing.TB, args ...string) string {
	t.Helper()
	return c.Nodes[0].Do(t, append([]string{"-c"}, args...)...)
}
