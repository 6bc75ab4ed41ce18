package telemetry

import (
	"fmt"
	"slices"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/scoregate/scoregate/config"
)

// The recorder's work per request allocates nothing once warm, for a request without a
// tracestate (parsing one allocates its member list): these hold the figures of
// BenchmarkRecorderSpan.

// Building a batch allocates nothing once its messages and the Records' buffers exist: not for a
// plain request, not for one whose query is redacted.
func TestOTLPBuildAllocs(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	b := newOTLPBatch(tel.resource)
	var recs []*Record
	for i, target := range []string{"/api/v1/service/iris/score?version=2", "/api/v1/service/iris/score?x=1&key=abc&KEY=sgk_x"} {
		rec := tel.Begin()
		rec.SetRequest([]byte("POST"), []byte(target), []byte(testUA), []byte("gw.test:8080"), []byte(testClient),
			[]byte("00-"+parentTrace+"-"+parentSpan+"-01"), nil)
		rec.SetRequestID([]byte(fmt.Sprint("id-", i)))
		rec.Service, rec.Auth, rec.Reason, rec.Upstream, rec.status = "iris", config.AuthKey, "ok", "127.0.0.1:5001", 200
		recs = append(recs, rec)
		b.add(rec)
	}
	// A language-model call of an authenticated caller (issue 22) allocates nothing more.
	llm := tel.Begin()
	llm.SetRequest([]byte("POST"), []byte("/api/v1/service/chat/v1/chat/completions"), []byte(testUA), []byte("gw.test:8080"),
		[]byte(testClient), nil, nil)
	llm.SetRequestID([]byte("id-llm"))
	llm.Service, llm.Auth, llm.Reason, llm.Upstream, llm.status = "chat", config.AuthKey, "ok", "127.0.0.1:5001", 200
	llm.Caller, llm.GenAI = "key:AbCdEf012345", GenAI{Operation: "chat", RequestModel: "gpt-4o-mini", ResponseModel: "gpt-4o-mini-2024-07-18",
		InputTokens: 12, OutputTokens: 300, Usage: "reported", TimeToFirstToken: 40 * time.Millisecond}
	recs = append(recs, llm)
	b.add(llm)
	b.build(tel) // the first build makes the messages and grows the buffers
	if n := testing.AllocsPerRun(100, func() { b.build(tel) }); n != 0 {
		t.Errorf("building a batch of %d spans allocates %v times", len(recs), n)
	}
	if got := b.upload[0].ScopeSpans[0].Spans[1].Attributes; !slices.ContainsFunc(got, func(kv *commonpb.KeyValue) bool {
		return kv.Key == "url.query" && kv.Value.GetStringValue() == "x=1&key=REDACTED&KEY=REDACTED"
	}) {
		t.Errorf("the second span's attributes lack the redacted query: %v", got)
	}
	for _, rec := range recs {
		rec.End(200)
	}
}

// A query with nothing to redact costs no allocation, nor does one redacted into a buffer with room.
func TestRedactQueryAllocs(t *testing.T) {
	tel := &Telemetry{redact: map[string]bool{"key": true, "api-key": true}}
	buf := make([]byte, 0, 128)
	for _, q := range []string{"version=2&x=1&Model=Iris", "version=2&KEY=abc&x=sgk_abc&API-KEY"} {
		if n := testing.AllocsPerRun(100, func() { buf, _ = tel.appendRedactedQuery(buf[:0], q) }); n != 0 {
			t.Errorf("appendRedactedQuery(%q) allocates %v times", q, n)
		}
	}
}

// Recording a request's metrics allocates nothing once its label combination has been seen.
func TestMetricsRecordAllocs(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	rec := tel.Begin()
	rec.SetRequest([]byte("POST"), []byte("/api/v1/service/iris/score"), nil, nil, nil, nil, nil)
	rec.Service, rec.Reason, rec.Upstream = "iris", "missing_credential", "127.0.0.1:5001"
	rec.status, rec.duration, rec.upstreamDur = 401, time.Millisecond, time.Millisecond
	tel.metrics.record(rec) // the first time makes the attribute sets
	if n := testing.AllocsPerRun(100, func() { tel.metrics.record(rec) }); n != 0 {
		t.Errorf("metrics.record allocates %v times", n)
	}
	rec.End(401)
}
