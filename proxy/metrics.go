package proxy

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// replicaStates are the values of a replica's state label.
var replicaStates = []string{"healthy", "unhealthy", "ejected"}

// RegisterMetrics adds the data plane's replica and queue gauges to m: for every replica its
// state (1 for the current one, 0 for the others) and requests in flight, for every
// deployment the requests waiting in its queue, and the requests answered 500 after a panic.
func (g *Gateway) RegisterMetrics(m metric.Meter) error {
	_, err := m.Int64ObservableCounter("scoregate.panics",
		metric.WithDescription("Data-plane requests whose handling panicked, answered 500."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(g.panics.Load())
			return nil
		}))
	if err != nil {
		return err
	}
	state, err := m.Int64ObservableGauge("scoregate.upstream.state",
		metric.WithDescription("Replica state: 1 for the state it is in (healthy, unhealthy or ejected), 0 for the others."))
	if err != nil {
		return err
	}
	inflight, err := m.Int64ObservableGauge("scoregate.upstream.active_requests",
		metric.WithDescription("Requests in flight to each replica."))
	if err != nil {
		return err
	}
	queued, err := m.Int64ObservableGauge("scoregate.queue.length",
		metric.WithDescription("Requests waiting for a replica, by service and deployment."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now().UnixNano()
		for _, svc := range g.routes.Load().order {
			for _, d := range svc.deployments {
				o.ObserveInt64(queued, int64(d.queued.Load()), metric.WithAttributes(
					attribute.String("service", svc.name), attribute.String("deployment", d.name)))
				for _, r := range d.replicas {
					base := []attribute.KeyValue{attribute.String("service", svc.name), attribute.String("deployment", d.name),
						attribute.String("upstream", r.url)}
					o.ObserveInt64(inflight, int64(r.inflight.Load()), metric.WithAttributes(base...))
					current := r.state(now)
					for _, s := range replicaStates {
						v := int64(0)
						if s == current {
							v = 1
						}
						o.ObserveInt64(state, v, metric.WithAttributes(append(base, attribute.String("state", s))...))
					}
				}
			}
		}
		return nil
	}, state, inflight, queued)
	return err
}
