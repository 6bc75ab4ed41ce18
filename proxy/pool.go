package proxy

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/config"
)

// replica is one model container of a deployment: its connection pool and what the gateway
// knows of its state.
type replica struct {
	*upstream
	deployment string
	inflight   atomic.Int32
	// healthy is the active health checks' verdict (always true without them).
	healthy atomic.Bool
	// ejectedUntil is when a passive ejection ends (unix nanoseconds; 0 when not ejected).
	ejectedUntil atomic.Int64
	// failures counts connection failures in a row, for passive ejection.
	failures atomic.Int32
}

// available reports whether the replica takes requests at now.
func (r *replica) available(now int64) bool {
	return r.healthy.Load() && r.ejectedUntil.Load() <= now
}

// State is a replica's state as /v1/services and /metrics show it.
func (r *replica) state(now int64) string {
	switch {
	case !r.healthy.Load():
		return "unhealthy"
	case r.ejectedUntil.Load() > now:
		return "ejected"
	}
	return "healthy"
}

// deployment is a named group of replicas with its admission queue.
type deployment struct {
	name     string
	replicas []*replica
	balance  string
	next     atomic.Uint32

	// Admission: with a cap, replicas are taken and given back under mu, and requests that find
	// every available replica full wait in a FIFO queue for one to be handed over.
	maxInflight int32 // per replica; 0 means no cap
	maxWait     time.Duration
	maxQueue    int
	mu          sync.Mutex
	waiters     []*waiter
	queued      atomic.Int32
}

type waiter struct {
	ch chan *replica // buffered, 1
}

// Admission failures.
var (
	errQueueFull   = errors.New("every replica is at max_concurrent_requests and the queue is full")
	errQueueWait   = errors.New("no replica became free within max_request_wait")
	errNoAvailable = errors.New("no replica is available (every one is unhealthy or ejected)")
)

// acquire takes a replica for one request, other than skip, waiting in the queue for at most
// maxWait when every available replica is at its cap. It returns how long the request waited.
// release must be called with the replica afterwards.
func (d *deployment) acquire(skip *replica) (*replica, time.Duration, error) {
	now := time.Now().UnixNano()
	if d.maxInflight == 0 {
		r := d.pick(now, skip)
		if r == nil {
			return nil, 0, errNoAvailable
		}
		r.inflight.Add(1)
		return r, 0, nil
	}
	d.mu.Lock()
	if r := d.pick(now, skip); r != nil {
		r.inflight.Add(1)
		d.mu.Unlock()
		return r, 0, nil
	}
	if !d.anyAvailable(now, skip) {
		d.mu.Unlock()
		return nil, 0, errNoAvailable
	}
	if len(d.waiters) >= d.maxQueue {
		d.mu.Unlock()
		return nil, 0, errQueueFull
	}
	w := &waiter{ch: make(chan *replica, 1)}
	d.waiters = append(d.waiters, w)
	d.queued.Add(1)
	d.mu.Unlock()

	start := time.Now()
	timer := time.NewTimer(d.maxWait)
	defer timer.Stop()
	select {
	case r := <-w.ch:
		return r, time.Since(start), nil
	case <-timer.C:
	}
	d.mu.Lock()
	if i := slices.Index(d.waiters, w); i >= 0 {
		d.waiters = slices.Delete(d.waiters, i, i+1)
		d.queued.Add(-1)
		d.mu.Unlock()
		return nil, time.Since(start), errQueueWait
	}
	d.mu.Unlock()
	return <-w.ch, time.Since(start), nil // handed a replica just as the wait ended
}

// release gives the replica back: to the first waiter when there is one and the replica is still
// available (its slot passes on, in order), else to the pool.
func (d *deployment) release(r *replica) {
	if d.maxInflight == 0 {
		r.inflight.Add(-1)
		return
	}
	d.mu.Lock()
	if len(d.waiters) > 0 && r.available(time.Now().UnixNano()) {
		w := d.waiters[0]
		d.waiters = slices.Delete(d.waiters, 0, 1)
		d.queued.Add(-1)
		d.mu.Unlock()
		w.ch <- r
		return
	}
	r.inflight.Add(-1)
	d.mu.Unlock()
}

// wake hands free slots to waiters after a replica comes back into rotation.
func (d *deployment) wake() {
	if d.maxInflight == 0 {
		return
	}
	now := time.Now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.waiters) > 0 {
		r := d.pick(now, nil)
		if r == nil {
			return
		}
		r.inflight.Add(1)
		w := d.waiters[0]
		d.waiters = slices.Delete(d.waiters, 0, 1)
		d.queued.Add(-1)
		w.ch <- r
	}
}

// pick chooses an available replica with room, other than skip: the one with the fewest requests
// in flight (ties broken in turn), or the next in turn with round_robin. nil when none.
func (d *deployment) pick(now int64, skip *replica) *replica {
	n := len(d.replicas)
	start := int(d.next.Add(1) % uint32(n))
	var best *replica
	bestLoad := int32(-1)
	for i := range n {
		r := d.replicas[(start+i)%n]
		if r == skip || !r.available(now) {
			continue
		}
		load := r.inflight.Load()
		if d.maxInflight > 0 && load >= d.maxInflight {
			continue
		}
		if d.balance == config.BalanceRoundRobin {
			return r
		}
		if bestLoad < 0 || load < bestLoad {
			best, bestLoad = r, load
		}
	}
	return best
}

func (d *deployment) anyAvailable(now int64, skip *replica) bool {
	for _, r := range d.replicas {
		if r != skip && r.available(now) {
			return true
		}
	}
	return false
}

// chooseDeployment picks a deployment by weight.
func (s *service) chooseDeployment() *deployment {
	if len(s.deployments) == 1 {
		return s.deployments[0]
	}
	n := rand.IntN(s.totalWeight)
	for i, c := range s.cumulative {
		if n < c {
			return s.deployments[i]
		}
	}
	return s.deployments[len(s.deployments)-1]
}

// ReplicaState is one replica as the admin API and metrics show it.
type ReplicaState struct {
	Service    string
	Deployment string
	URL        string
	// State is "healthy", "unhealthy" (failing active health checks) or "ejected" (after
	// connection failures, for ejection_time).
	State    string
	Inflight int
	// Queued is the requests waiting for a replica of this deployment.
	Queued int
}

// Replicas reports the state of every replica, by service in configuration order.
func (g *Gateway) Replicas() []ReplicaState {
	var out []ReplicaState
	now := time.Now().UnixNano()
	for _, svc := range g.routes.Load().order {
		for _, d := range svc.deployments {
			for _, r := range d.replicas {
				out = append(out, ReplicaState{Service: svc.name, Deployment: d.name, URL: r.url, State: r.state(now),
					Inflight: int(r.inflight.Load()), Queued: int(d.queued.Load())})
			}
		}
	}
	return out
}
