package telemetry

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ended is a record of a request to service that ended at end after d, answered status.
func ended(service string, end time.Time, d time.Duration, status int) *Record {
	return &Record{Service: service, start: end.Add(-d), duration: d, status: status}
}

func TestTrafficCountsEachSecondByClass(t *testing.T) {
	tr := newTraffic()
	tel := &Telemetry{traffic: tr}
	base := time.Unix(1_800_000_000, 0)
	for i := range 10 {
		tr.record(ended("iris", base.Add(200*time.Millisecond), time.Millisecond, 200))
		if i < 3 {
			tr.record(ended("iris", base.Add(time.Second+300*time.Millisecond), time.Millisecond, 401))
		}
		if i < 2 {
			tr.record(ended("iris", base.Add(2*time.Second), time.Millisecond, 503))
		}
	}
	grpc := ended("iris", base.Add(2*time.Second+time.Millisecond), time.Millisecond, 200)
	grpc.RPCService, grpc.RPCMethod, grpc.GRPCStatus = "inference.GRPCInferenceService", "ModelInfer", 14 // UNAVAILABLE
	tr.record(grpc)
	grpcBad := ended("iris", base.Add(2*time.Second+time.Millisecond), time.Millisecond, 200)
	grpcBad.RPCService, grpcBad.GRPCStatus = "inference.GRPCInferenceService", 3 // INVALID_ARGUMENT
	tr.record(grpcBad)
	tr.record(ended("other", base, time.Millisecond, 500)) // another service
	tr.record(ended("", base, time.Millisecond, 404))      // no service matched: not counted

	got := tel.Traffic("iris", base.Add(3*time.Second), time.Second, 4)
	for i := range got {
		got[i].P50, got[i].P99 = 0, 0
	}
	want := []TrafficPoint{
		{Start: base.Add(-time.Second)},
		{Start: base, Requests: 10},
		{Start: base.Add(time.Second), Requests: 3, ClientErrors: 3},
		{Start: base.Add(2 * time.Second), Requests: 4, ClientErrors: 1, ServerErrors: 3},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("per second (-want +got):\n%s", d)
	}
	sum := tel.Traffic("iris", base.Add(3*time.Second), 4*time.Second, 1)[0]
	if sum.Requests != 17 || sum.ClientErrors != 4 || sum.ServerErrors != 3 || !sum.Start.Equal(base.Add(-time.Second)) {
		t.Errorf("four seconds at once: %+v", sum)
	}
	if got := tel.Traffic("unknown", base, time.Second, 3); len(got) != 3 || got[2].Requests != 0 {
		t.Errorf("a service never seen: %+v", got)
	}
}

func TestTrafficPercentilesWithinTenPercent(t *testing.T) {
	tr := newTraffic()
	tel := &Telemetry{traffic: tr}
	end := time.Unix(1_800_000_000, 0)
	// 1,000 requests taking 1ms..1000ms evenly: p50 is 500ms, p99 990ms.
	for i := 1; i <= 1000; i++ {
		tr.record(ended("iris", end.Add(-500*time.Millisecond), time.Duration(i)*time.Millisecond, 200))
	}
	p := tel.Traffic("iris", end, time.Second, 1)[0]
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{{"p50", p.P50, 500 * time.Millisecond}, {"p99", p.P99, 990 * time.Millisecond}} {
		if diff := float64(c.got-c.want) / float64(c.want); diff > 0.1 || diff < -0.1 {
			t.Errorf("%s = %v, want %v within 10%%", c.name, c.got, c.want)
		}
	}
	// Every bucket's value lies within its bounds, and buckets grow.
	for i := range latencyBuckets - 1 {
		d := bucketValue(i)
		if b := latencyBucket(d); b != i && i >= 8 { // below 4µs several buckets share a microsecond
			t.Errorf("bucketValue(%d) = %v falls in bucket %d", i, d, b)
		}
		if bucketValue(i+1) <= d {
			t.Errorf("bucket %d's value %v is not above bucket %d's %v", i+1, bucketValue(i+1), i, d)
		}
	}
	if b := latencyBucket(10 * time.Minute); b != latencyBuckets-1 {
		t.Errorf("a ten-minute request is in bucket %d, want the last", b)
	}
}

// Seconds older than five minutes are forgotten, also when their slot of the ring has not been
// written again; a late record for a second already reused is dropped.
func TestTrafficForgetsPastFiveMinutes(t *testing.T) {
	tr := newTraffic()
	tel := &Telemetry{traffic: tr}
	base := time.Unix(1_800_000_000, 0)
	tr.record(ended("iris", base, time.Millisecond, 200))
	if got := tel.Traffic("iris", base.Add(time.Second), TrafficSpan, 1)[0].Requests; got != 1 {
		t.Fatalf("just after: %d requests", got)
	}
	if got := tel.Traffic("iris", base.Add(TrafficSpan+time.Second), 2*TrafficSpan, 1)[0].Requests; got != 0 {
		t.Errorf("five minutes later: %d requests, want 0", got)
	}
	later := base.Add(time.Duration(trafficSeconds) * time.Second) // the same slot of the ring
	tr.record(ended("iris", later, time.Millisecond, 200))
	tr.record(ended("iris", base, time.Millisecond, 200)) // too late: its slot holds a newer second
	if got := tel.Traffic("iris", later.Add(time.Second), time.Second, 1)[0].Requests; got != 1 {
		t.Errorf("the reused second: %d requests, want 1", got)
	}
}

// The recorder counts every ended record, without allocating once the service is known.
func TestTrafficThroughTheRecorder(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	for _, status := range []int{200, 200, 500} {
		do(tel, req{method: "POST", target: "/api/v1/service/iris/score", service: "iris", status: status})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := tel.Traffic("iris", time.Now().Add(time.Second), 10*time.Second, 1)[0]
		if p.Requests == 3 && p.ServerErrors == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s the traffic shows %+v, want 3 requests, 1 server error", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := ended("iris", time.Now(), time.Millisecond, 200)
	if n := testing.AllocsPerRun(100, func() { tel.traffic.record(r) }); n != 0 {
		t.Errorf("recording allocates %v times", n)
	}
}

// The recorder's cost of counting one request, once the service is known.
func BenchmarkTrafficRecord(b *testing.B) {
	tr := newTraffic()
	r := ended("iris", time.Now(), 3*time.Millisecond, 200)
	tr.record(r)
	b.ReportAllocs()
	for b.Loop() {
		tr.record(r)
	}
}
