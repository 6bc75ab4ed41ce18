package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/internal/testing/freeport"
)

// clusterNodeTimeout is every node's --cluster-node-timeout: how long a node may be unreachable
// before the others count it as failing (and, its slots uncovered, the cluster as down).
const clusterNodeTimeout = 2 * time.Second

// clusterNode is one redis-server of the harness's Redis Cluster: a master, in a folder of its
// own (which keeps its nodes.conf, so that it can be restarted as the same node), without
// persistence.
type clusterNode struct {
	name   string
	port   int
	addr   string
	dir    string
	args   []string
	proc   *process
	id     string        // its cluster node id
	client *redis.Client // the harness's own connection, for INFO, CLUSTER and CLIENT
	own    atomic.Int64  // commands the harness sent it, so that they can be told from the gateways'
	starts int
}

// redisCluster is the harness's Redis Cluster: masters only, the 16,384 slots split evenly.
type redisCluster struct {
	bin   string
	nodes []*clusterNode
}

// startRedisCluster starts n masters with --cluster-enabled yes on free loopback ports (each
// with port+10000, the cluster bus, free and below the kernel's ephemeral range), joins them with
// "redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes" and waits until every node
// reports cluster_state:ok and knows the n nodes.
func (h *harness) startRedisCluster(ctx context.Context, n int) (*redisCluster, error) {
	bin, ok := lookBinary("redis-server")
	if !ok {
		return nil, errNoRedis
	}
	cli, ok := lookBinary("redis-cli")
	if !ok {
		return nil, errors.New("redis-cli is not installed (apt-get install -y redis-tools)")
	}
	c := &redisCluster{bin: bin}
	for i := range n {
		node := &clusterNode{name: fmt.Sprintf("redis-cluster-%d", i)}
		node.dir = filepath.Join(h.tmp, node.name)
		if err := os.MkdirAll(node.dir, 0o700); err != nil {
			return c, err
		}
		if err := h.startClusterNode(ctx, c, node); err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, node)
	}
	args := []string{"--cluster", "create"}
	for _, node := range c.nodes {
		args = append(args, node.addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return c, fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 5))
	}
	if _, err := c.waitState(ctx, 30*time.Second, "ok", c.nodes); err != nil {
		return c, err
	}
	for _, node := range c.nodes {
		id, err := node.do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return c, fmt.Errorf("%s: CLUSTER MYID: %w", node.addr, err)
		}
		node.id = id
	}
	return c, nil
}

// startClusterNode starts node on a fresh port pair, up to three times if another program takes
// a port first.
func (h *harness) startClusterNode(ctx context.Context, c *redisCluster, node *clusterNode) error {
	var err error
	for range 3 {
		var port int
		if port, err = clusterPort(); err != nil {
			return err
		}
		node.port, node.addr = port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		node.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
			"--save", "", "--appendonly", "no", "--dir", node.dir, "--daemonize", "no", "--loglevel", "warning",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10)}
		if err = h.runClusterNode(ctx, c, node); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

// runClusterNode starts node's redis-server with its arguments (its port, folder and nodes.conf
// as they are: a restart is the same node) and waits until it listens.
func (h *harness) runClusterNode(ctx context.Context, c *redisCluster, node *clusterNode) error {
	name := node.name
	if node.starts > 0 {
		name = fmt.Sprintf("%s-restart%d", node.name, node.starts)
	}
	node.starts++
	p, err := h.start(name, nil, c.bin, node.args...)
	if err != nil {
		return err
	}
	if err := waitListening(ctx, p, node.addr, 10*time.Second); err != nil {
		p.stop()
		return err
	}
	node.proc = p
	if node.client == nil {
		// RESP2 and no CLIENT SETINFO: a connection costs no command of its own, so that the
		// commands counted on the node are the gateways' plus the ones node.own counts.
		node.client = redis.NewClient(&redis.Options{Addr: node.addr, Protocol: 2, DisableIdentity: true,
			DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1, PoolSize: 2})
	}
	return nil
}

// clusterPort picks a free loopback port whose cluster bus port (port+10000) is free too, both
// below the kernel's ephemeral range, where no outgoing connection takes them meanwhile.
func clusterPort() (int, error) { return freeport.PickPair(10000) }

// do sends one command to the node, counted as the harness's own.
func (n *clusterNode) do(ctx context.Context, args ...any) *redis.Cmd {
	n.own.Add(1)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return n.client.Do(cctx, args...)
}

// info reads INFO sections as a map of field to value.
func (n *clusterNode) info(ctx context.Context, sections ...string) (map[string]string, error) {
	args := []any{"INFO"}
	for _, s := range sections {
		args = append(args, s)
	}
	s, err := n.do(ctx, args...).Text()
	if err != nil {
		return nil, err
	}
	return parseInfo(s), nil
}

// parseInfo reads INFO's "field:value" lines.
func parseInfo(s string) map[string]string {
	out := map[string]string{}
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// clusterState reads cluster_state from CLUSTER INFO ("ok" or "fail"), or says why it could not.
func (n *clusterNode) clusterState(ctx context.Context) (string, error) {
	s, err := n.do(ctx, "CLUSTER", "INFO").Text()
	if err != nil {
		return "", err
	}
	m := parseInfo(s)
	return m["cluster_state"], nil
}

// waitState waits until every node of nodes reports cluster_state want (and, for "ok", knows
// every node of the cluster), polling every 20 ms; it returns when that was first seen.
func (c *redisCluster) waitState(ctx context.Context, timeout time.Duration, want string, nodes []*clusterNode) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	known := "cluster_known_nodes:" + strconv.Itoa(len(c.nodes))
	var last string
	for {
		all := true
		for _, n := range nodes {
			s, err := n.do(ctx, "CLUSTER", "INFO").Text()
			if err != nil {
				all, last = false, fmt.Sprintf("%s: %v", n.addr, err)
				break
			}
			m := parseInfo(s)
			if m["cluster_state"] != want || (want == "ok" && !strings.Contains(s, known)) {
				all, last = false, fmt.Sprintf("%s: cluster_state:%s cluster_known_nodes:%s", n.addr, m["cluster_state"], m["cluster_known_nodes"])
				break
			}
		}
		if all {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the cluster's state is not %s after %s; last: %s", want, timeout, last)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// slotRange is a run of hash slots a master serves.
type slotRange struct{ lo, hi int }

// clusterTopology is what CLUSTER NODES says: each master's id, address and slots.
type clusterTopology struct {
	masters map[string][]slotRange // node id → its slots
	addrs   map[string]string      // node id → host:port
}

// parseClusterNodes reads CLUSTER NODES: "<id> <ip:port@bus[,hostname]> <flags> <master> <ping>
// <pong> <epoch> <link> <slot> ...", slots given as "n" or "lo-hi" (importing and migrating
// entries, in brackets, are skipped).
func parseClusterNodes(s string) clusterTopology {
	t := clusterTopology{masters: map[string][]slotRange{}, addrs: map[string]string{}}
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "master") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		t.addrs[f[0]] = addr
		t.masters[f[0]] = nil
		for _, sl := range f[8:] {
			if strings.HasPrefix(sl, "[") {
				continue
			}
			lo, hi, isRange := strings.Cut(sl, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil {
				t.masters[f[0]] = append(t.masters[f[0]], slotRange{a, b})
			}
		}
	}
	return t
}

// owner returns the id of the master serving slot, or "".
func (t clusterTopology) owner(slot int) string {
	for id, rs := range t.masters {
		for _, r := range rs {
			if slot >= r.lo && slot <= r.hi {
				return id
			}
		}
	}
	return ""
}

// slots is how many slots master id serves, and its ranges as text.
func (t clusterTopology) slots(id string) (int, string) {
	rs := t.masters[id]
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo < rs[j].lo })
	n := 0
	var parts []string
	for _, r := range rs {
		n += r.hi - r.lo + 1
		if r.lo == r.hi {
			parts = append(parts, strconv.Itoa(r.lo))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.lo, r.hi))
		}
	}
	return n, strings.Join(parts, ",")
}

// topology reads CLUSTER NODES from the first node that answers.
func (c *redisCluster) topology(ctx context.Context) (clusterTopology, error) {
	var err error
	for _, n := range c.nodes {
		var s string
		if s, err = n.do(ctx, "CLUSTER", "NODES").Text(); err == nil {
			return parseClusterNodes(s), nil
		}
	}
	return clusterTopology{}, err
}

// keySlot asks the cluster which slot key hashes to.
func (c *redisCluster) keySlot(ctx context.Context, key string) (int, error) {
	n, err := c.nodes[0].do(ctx, "CLUSTER", "KEYSLOT", key).Int()
	return n, err
}

// kill ends node's redis-server at once (SIGKILL, as a crash would), keeping its folder and
// nodes.conf.
func (n *clusterNode) kill() {
	if n.proc == nil || n.proc.exited() {
		return
	}
	_ = n.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-n.proc.done
}

// addrs lists the nodes' addresses, the gateways' seeds.
func (c *redisCluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr)
	}
	return out
}

// close drops the harness's connections (the processes are stopped with the rest).
func (c *redisCluster) close() {
	if c == nil {
		return
	}
	for _, n := range c.nodes {
		if n.client != nil {
			n.client.Close()
		}
	}
}

// lastLines returns the last n lines of s, joined with " | ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
