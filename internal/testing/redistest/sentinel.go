//go:build unix

package redistest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	sentinelConfName = "sentinel.conf"
	masterName       = "mymaster"
	sentinelTimeout  = 20 * time.Second // replica in sync + sentinel ready; Failover
)

// SentinelServers is a master, one replica and one sentinel monitoring them
// as MasterName, started by Sentinel.
type SentinelServers struct {
	MasterName    string   // "mymaster"
	SentinelAddrs []string // the sentinel's "127.0.0.1:PORT"
	Master        *Server  // the current master; Failover swaps Master and Replica
	Replica       *Server
	SentinelNode  *Server // the "redis-server sentinel.conf --sentinel" process
}

// Sentinel starts a master, a replica (--replicaof the master) and a sentinel
// monitoring the master with quorum 1, down-after-milliseconds 1000 and
// failover-timeout 5000. It waits (up to 20 s) until the replica reports
// master_link_status:up and the sentinel reports the master for
// SENTINEL get-master-addr-by-name and has the replica in view, so that
// Failover can pick it. Master and replica run with
// --repl-diskless-sync-delay 0 (the default makes every full sync wait 5 s),
// and the sentinel gets "SENTINEL DEBUG tilt-trigger 10000 tilt-period 1000"
// after every start, so a briefly stalled machine does not put it in TILT
// mode for 30 s.
func Sentinel(t testing.TB) *SentinelServers {
	t.Helper()
	// The default repl-diskless-sync-delay makes a master wait 5 s before it
	// feeds a new replica; both may be master at some point.
	noDelay := WithArgs("--repl-diskless-sync-delay", "0")
	master := Start(t, noDelay)
	replica := Start(t, noDelay, WithArgs("--replicaof", "127.0.0.1", strconv.Itoa(master.Port)))
	ok, detail := poll(sentinelTimeout, func() (bool, string) {
		info, err := replica.do("INFO", "replication")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(info, "master_link_status:up"), info
	})
	if !ok {
		t.Fatalf("redistest: replica %s not in sync with master %s within %v; INFO replication:\n%s%s",
			replica.Addr, master.Addr, sentinelTimeout, detail, replica.tails())
	}

	sentinel := Start(t, func(c *config) {
		c.sentinel = true
		c.prepare = func(s *Server) error {
			conf := strings.Join([]string{
				"port " + strconv.Itoa(s.Port),
				"bind 127.0.0.1",
				"protected-mode no",
				"daemonize no",
				fmt.Sprintf("dir %q", s.Dir),
				fmt.Sprintf("logfile %q", s.logPath()),
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1", masterName, master.Port),
				"sentinel down-after-milliseconds " + masterName + " 1000",
				"sentinel failover-timeout " + masterName + " 5000",
				"sentinel resolve-hostnames no",
			}, "\n") + "\n"
			// Written fresh for every port attempt; the sentinel rewrites it
			// while running, and Restart keeps what it wrote.
			return os.WriteFile(filepath.Join(s.Dir, sentinelConfName), []byte(conf), 0o644)
		}
		// A sentinel whose timer runs more than 2 s late (a loaded CI box,
		// a slow fsync of its config) enters TILT mode and does nothing for
		// 30 s, which stalls a failover past any test deadline. Make TILT
		// rare and short. SENTINEL DEBUG is new in 7.0 and not kept in the
		// config file, hence after every (re)start; best effort.
		c.afterStart = func(s *Server) error {
			_, _ = s.do("SENTINEL", "DEBUG", "tilt-trigger", "10000", "tilt-period", "1000")
			return nil
		}
	})
	ss := &SentinelServers{
		MasterName:    masterName,
		SentinelAddrs: []string{sentinel.Addr},
		Master:        master,
		Replica:       replica,
		SentinelNode:  sentinel,
	}

	ok, detail = poll(sentinelTimeout, func() (bool, string) {
		if addr, err := ss.masterAddr(); err != nil || addr != master.Addr {
			return false, fmt.Sprintf("get-master-addr-by-name: %q, %v", addr, err)
		}
		return ss.replicaReady(replica)
	})
	if !ok {
		t.Fatalf("redistest: sentinel %s not ready within %v: %s%s", sentinel.Addr, sentinelTimeout, detail, sentinel.tails())
	}
	return ss
}

// masterAddr asks the sentinel for the master's "ip:port".
func (ss *SentinelServers) masterAddr() (string, error) {
	out, err := ss.SentinelNode.do("SENTINEL", "get-master-addr-by-name", ss.MasterName)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", fmt.Errorf("unexpected reply %q", out)
	}
	return net.JoinHostPort(f[0], f[1]), nil
}

// replicaReady reports whether the sentinel knows the replica well enough to
// promote it: flags exactly "slave" (not down or disconnected), the
// replica's link to the master up, and an INFO from the replica received
// recently. Without the INFO, SENTINEL FAILOVER answers NOGOODSLAVE.
func (ss *SentinelServers) replicaReady(replica *Server) (bool, string) {
	out, err := ss.SentinelNode.do("SENTINEL", "replicas", ss.MasterName)
	if err != nil {
		return false, "SENTINEL replicas: " + err.Error()
	}
	// Raw redis-cli output of an array of flat maps: one field or value per
	// line, the maps concatenated; each map starts with "name".
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		if lines[i] != "name" || lines[i+1] != replica.Addr {
			continue
		}
		m := map[string]string{}
		for j := i; j+1 < len(lines) && (j == i || lines[j] != "name"); j += 2 {
			m[lines[j]] = lines[j+1]
		}
		refresh, err := strconv.Atoi(m["info-refresh"])
		ready := m["flags"] == "slave" && m["master-link-status"] == "ok" && err == nil && refresh < 5000
		return ready, fmt.Sprintf("sentinel's view of replica %s: %v", replica.Addr, m)
	}
	return false, fmt.Sprintf("sentinel does not list replica %s yet:\n%s", replica.Addr, out)
}

// Failover runs SENTINEL FAILOVER on the sentinel and waits (up to 20 s)
// until get-master-addr-by-name reports the former replica. Master and
// Replica are then swapped, so Master is the new master; the sentinel turns
// the former master into a replica of it shortly afterwards, asynchronously.
func (ss *SentinelServers) Failover(t testing.TB) {
	t.Helper()
	want := ss.Replica.Addr
	deadline := time.Now().Add(sentinelTimeout)
	for {
		_, err := ss.SentinelNode.do("SENTINEL", "FAILOVER", ss.MasterName)
		if err == nil {
			break
		}
		// NOGOODSLAVE: the sentinel's view of the replica is momentarily
		// stale; anything else is final.
		if !strings.Contains(err.Error(), "NOGOODSLAVE") || time.Now().After(deadline) {
			t.Fatalf("redistest: SENTINEL FAILOVER %s: %v", ss.MasterName, err)
		}
		time.Sleep(pollInterval)
	}
	ok, detail := poll(time.Until(deadline), func() (bool, string) {
		addr, err := ss.masterAddr()
		if err != nil {
			return false, err.Error()
		}
		return addr == want, "get-master-addr-by-name: " + addr
	})
	if !ok {
		t.Fatalf("redistest: failover to %s not done within %v; last %s%s", want, sentinelTimeout, detail, ss.SentinelNode.tails())
	}
	ss.Master, ss.Replica = ss.Replica, ss.Master
}
