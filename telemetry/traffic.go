package telemetry

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// TrafficSpan is how far back Traffic sees: the last five minutes, second by second.
const TrafficSpan = 300 * time.Second

// trafficSeconds is the ring's length: TrafficSpan plus the second being filled and one spare,
// so that the oldest second asked for is never the one being overwritten.
const trafficSeconds = int(TrafficSpan/time.Second) + 2

// latencyBuckets are the fixed logarithmic buckets of request durations: four per power of two
// from 1µs (each about 19% wide, so a percentile read from them is within 10% of the true
// value), up to 2^26µs (67s); longer requests fall in the last one.
const latencyBuckets = 4 * 26

// TrafficPoint is a service's traffic over a run of whole seconds.
type TrafficPoint struct {
	// Start is the beginning of the run; it lasts the step Traffic was asked for.
	Start time.Time
	// Requests counts the requests of the service that ended in the run, whatever their answer.
	Requests int
	// ClientErrors counts those answered 4xx (a gRPC call: a status a client causes, such as
	// INVALID_ARGUMENT or UNAUTHENTICATED); ServerErrors those answered 5xx (a gRPC call:
	// INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, UNIMPLEMENTED or DATA_LOSS).
	ClientErrors, ServerErrors int
	// P50 and P99 are the median and 99th percentile of their durations (0 without requests).
	P50, P99 time.Duration
}

// traffic keeps, per service, the last TrafficSpan of requests in one-second buckets. The
// recorder goroutine fills it from every ended record (so the request path pays nothing for
// it); Traffic reads it. A record dropped because the recorder was behind is not counted, as in
// the metrics.
type traffic struct {
	mu       sync.Mutex
	services map[string]*serviceTraffic
}

type serviceTraffic struct {
	seconds [trafficSeconds]trafficSecond
}

// trafficSecond is one second of one service's requests.
type trafficSecond struct {
	unix                     int64 // the second it holds; another value means it is stale
	requests, client, server uint32
	latency                  [latencyBuckets]uint32
}

func newTraffic() *traffic { return &traffic{services: map[string]*serviceTraffic{}} }

// record counts one ended request. Only requests that reached a service are counted. It
// allocates nothing once the service has been seen.
func (t *traffic) record(r *Record) {
	if r.Service == "" {
		return
	}
	end := r.start.Add(r.duration).Unix()
	class := statusClass(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.services[r.Service]
	if st == nil {
		st = &serviceTraffic{}
		t.services[r.Service] = st
	}
	s := &st.seconds[ringIndex(end)]
	if s.unix != end {
		if s.unix > end {
			return // a record older than the ring: its second is already reused
		}
		*s = trafficSecond{unix: end}
	}
	s.requests++
	switch class {
	case 4:
		s.client++
	case 5:
		s.server++
	}
	s.latency[latencyBucket(r.duration)]++
}

func ringIndex(unix int64) int {
	i := int(unix % int64(trafficSeconds))
	if i < 0 {
		i += trafficSeconds
	}
	return i
}

// statusClass is the hundreds digit of the answer's status: for a gRPC call, that of the HTTP
// status its gRPC status maps to (as grpc-gateway maps them).
func statusClass(r *Record) int {
	if r.RPCService != "" || r.RPCMethod != "" {
		switch r.GRPCStatus {
		case 0:
		case 2, 4, 12, 13, 14, 15: // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
			return 5
		default:
			return 4
		}
	}
	return r.status / 100
}

// latencyBucket is the bucket of a duration: 4·log2(µs), in quarters of a power of two.
func latencyBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 1))
	n := bits.Len64(us) - 1 // 2^n <= us < 2^(n+1)
	var quarter uint64
	if n >= 2 {
		quarter = (us >> (n - 2)) & 3
	} else {
		quarter = (us << (2 - n)) & 3
	}
	return min(4*n+int(quarter), latencyBuckets-1)
}

// bucketValue is the duration a bucket stands for: the geometric middle of its bounds.
func bucketValue(i int) time.Duration {
	n, q := i/4, i%4
	lo := float64(uint64(1)<<n) * (1 + float64(q)/4)
	hi := float64(uint64(1)<<n) * (1 + float64(q+1)/4)
	if q == 3 {
		hi = float64(uint64(1) << (n + 1))
	}
	return time.Duration(math.Sqrt(lo*hi) * float64(time.Microsecond))
}

// Traffic returns a service's traffic in n runs of step (a whole number of seconds, at least
// one) ending at the whole second before end, oldest first. The runs reach back at most
// TrafficSpan; older runs count nothing. A service never seen has n empty points.
func (t *Telemetry) Traffic(service string, end time.Time, step time.Duration, n int) []TrafficPoint {
	stepSec := max(int64(step/time.Second), 1)
	last := end.Unix() - 1 // the last whole second
	first := last - stepSec*int64(n) + 1
	out := make([]TrafficPoint, n)
	for i := range out {
		out[i].Start = time.Unix(first+int64(i)*stepSec, 0)
	}
	tr := t.traffic
	tr.mu.Lock()
	defer tr.mu.Unlock()
	st := tr.services[service]
	if st == nil {
		return out
	}
	oldest := last - int64(TrafficSpan/time.Second) + 1
	var hist [latencyBuckets]uint32
	for i := range out {
		p := &out[i]
		clear(hist[:])
		for sec := first + int64(i)*stepSec; sec < first+int64(i+1)*stepSec; sec++ {
			if sec < oldest {
				continue
			}
			s := &st.seconds[ringIndex(sec)]
			if s.unix != sec {
				continue
			}
			p.Requests += int(s.requests)
			p.ClientErrors += int(s.client)
			p.ServerErrors += int(s.server)
			for b, c := range s.latency {
				hist[b] += c
			}
		}
		p.P50, p.P99 = percentile(&hist, p.Requests, 0.50), percentile(&hist, p.Requests, 0.99)
	}
	return out
}

// percentile is the duration under which the fraction q of the total requests in hist ended.
func percentile(hist *[latencyBuckets]uint32, total int, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range hist {
		seen += uint64(c)
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(latencyBuckets - 1)
}
