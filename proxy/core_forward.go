package proxy

import "github.com/scoregate/scoregate/telemetry"

// This file is the forwarding half of the request core that both listeners share: which
// deployment a request goes to, and taking a replica of it with the single retry rule. The
// adapters (gateway.go for HTTP/1.1, grpc.go for gRPC) make the call itself.

// deploymentFor is the deployment a request goes to: the one pin names (the
// azureml-model-deployment header, or metadata on the gRPC listener), or without a pin one
// chosen by the deployments' weights. A pin that names no deployment of the service is
// errNoDeployment.
func (s *service) deploymentFor(pin []byte) (*deployment, error) {
	if len(pin) == 0 {
		return s.chooseDeployment(), nil
	}
	if dep := s.byName[string(pin)]; dep != nil {
		return dep, nil
	}
	return nil, errNoDeployment
}

// withReplica takes a replica of dep for one request, waiting in dep's queue while every
// available replica is at its cap, and runs call with it; call gives the replica back to dep (or
// hands it to a streamed answer, which does). It notes the deployment and the wait in rec.
//
// The one retry rule of both listeners: when call fails and nothing reached the model (the
// connection was never made, and resendable, when not nil, reports that nothing of the request
// was consumed or answered either), call runs once more on another replica of dep that is free at
// that moment, without waiting. withReplica returns the replica a failure is blamed on, the one
// tried last. Failing to get a replica at all is the contract's 503 (admissionError) with a nil
// replica.
func withReplica(dep *deployment, rec *telemetry.Record, call func(*replica) error, resendable func() bool) (*replica, error) {
	r, waited, err := dep.acquire(nil)
	if rec != nil {
		rec.Deployment, rec.QueueWait = dep.name, waited
	}
	if err != nil {
		return nil, admissionError(err)
	}
	err = call(r)
	if err != nil && neverSent(err) && (resendable == nil || resendable()) {
		if r2 := dep.tryAcquire(r); r2 != nil {
			r = r2 // a failure now is this replica's
			err = call(r2)
		}
	}
	return r, err
}
