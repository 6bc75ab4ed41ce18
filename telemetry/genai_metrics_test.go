package telemetry

import (
	"fmt"
	"io"
	"maps"
	"math"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The metrics of language-model calls (issue 22).

// metricsText is /metrics as served, in the Prometheus text exposition.
func metricsText(t *testing.T, tel *Telemetry) string {
	t.Helper()
	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cumulative is a histogram's cumulative bucket counts by upper bound.
func cumulative(h *dto.Histogram) map[float64]uint64 {
	out := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		out[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	return out
}

// TestMetricsGenAI: token usage and time to first token reach /metrics under the conventions'
// names, units and bucket boundaries, by token type, operation, provider, response model,
// service and deployment; every call is counted by where its counts came from; a call without
// reported counts adds no token observation, a plain request nothing at all.
func TestMetricsGenAI(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	chat := req{method: "POST", service: "chat", upstream: "127.0.0.1:9001", deployment: "blue", status: 200, stream: true,
		genAI: GenAI{Operation: "chat", RequestModel: "client-chosen-name", ResponseModel: "m-1", InputTokens: 12, OutputTokens: 300,
			Usage: "reported", TimeToFirstToken: 30 * time.Millisecond}}
	do(tel, chat)
	chat.genAI.InputTokens, chat.genAI.OutputTokens, chat.genAI.TimeToFirstToken = 5000, 1, 3*time.Second
	do(tel, chat)
	do(tel, req{method: "POST", service: "chat", upstream: "127.0.0.1:9001", deployment: "blue", status: 200,
		genAI: GenAI{Operation: "embeddings", ResponseModel: "m-1", InputTokens: 1 << 30, Usage: "reported"}})
	do(tel, req{method: "POST", service: "chat", upstream: "127.0.0.1:9001", deployment: "blue", status: 200,
		genAI: GenAI{Operation: "chat", ResponseModel: "m-1", Usage: "missing"}})
	do(tel, req{method: "POST", service: "chat", status: 429, reason: "rate_limited", genAI: GenAI{Operation: "chat"}})
	do(tel, req{method: "POST", service: "chat", status: 429, reason: "token_rate_limited"})
	do(tel, req{method: "POST", service: "chat", status: 403, reason: "token_quota_exceeded"})
	do(tel, req{method: "POST", service: "iris", upstream: "127.0.0.1:9000", status: 200, caller: "key:AbCdEf012345"})
	shutdown(t, tel)

	text := metricsText(t, tel)
	for _, line := range []string{
		"# TYPE gen_ai_client_token_usage histogram",
		`gen_ai_client_token_usage_bucket{deployment="blue",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_response_model="m-1",gen_ai_token_type="input",service="chat",le="16"} 1`,
		`gen_ai_client_token_usage_sum{deployment="blue",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_response_model="m-1",gen_ai_token_type="output",service="chat"} 301`,
		`gen_ai_client_token_usage_count{deployment="blue",gen_ai_operation_name="embeddings",gen_ai_provider_name="openai",gen_ai_response_model="m-1",gen_ai_token_type="input",service="chat"} 1`,
		"# TYPE gen_ai_server_time_to_first_token_seconds histogram",
		`gen_ai_server_time_to_first_token_seconds_bucket{deployment="blue",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_response_model="m-1",service="chat",le="0.04"} 1`,
		"# TYPE scoregate_gen_ai_usage_total counter",
		`scoregate_gen_ai_usage_total{gen_ai_operation_name="chat",service="chat",usage="reported"} 2`,
		`scoregate_gen_ai_usage_total{gen_ai_operation_name="chat",service="chat",usage="missing"} 1`,
		// Token limits' refusals are admission rejections, as the request-rate limit's are.
		`scoregate_admission_rejections_total{reason="token_rate_limited",service="chat"} 1`,
		`scoregate_admission_rejections_total{reason="token_quota_exceeded",service="chat"} 1`,
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("/metrics lacks the line\n\t%s", line)
		}
	}
	if strings.Contains(text, "client-chosen-name") {
		t.Error("the request's model, which the client chooses, labels a series")
	}

	mfs := scrape(t, tel)
	labels := func(typ string) map[string]string {
		l := map[string]string{"deployment": "blue", "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
			"gen_ai_response_model": "m-1", "service": "chat"}
		if typ != "" {
			l["gen_ai_token_type"] = typ
		}
		return l
	}
	tokenBuckets := func(counts ...uint64) map[float64]uint64 {
		out := map[float64]uint64{math.Inf(1): counts[len(counts)-1]}
		for i, b := range tokenBounds {
			out[b] = counts[i]
		}
		return out
	}
	in := findSeries(t, mfs, "gen_ai_client_token_usage", labels("input")).GetHistogram()
	// 12 and 5000 input tokens: le 16 onwards has the first, le 16384 onwards both.
	checkEqual(t, "input token buckets", tokenBuckets(0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2), cumulative(in))
	if in.GetSampleSum() != 5012 || in.GetSampleCount() != 2 {
		t.Errorf("input tokens: sum %g count %d, want 5012 and 2", in.GetSampleSum(), in.GetSampleCount())
	}
	out := findSeries(t, mfs, "gen_ai_client_token_usage", labels("output")).GetHistogram()
	checkEqual(t, "output token buckets", tokenBuckets(1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2), cumulative(out))
	emb := labels("input")
	emb["gen_ai_operation_name"] = "embeddings"
	checkEqual(t, "a count past the last bound", tokenBuckets(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
		cumulative(findSeries(t, mfs, "gen_ai_client_token_usage", emb).GetHistogram()))

	ttft := findSeries(t, mfs, "gen_ai_server_time_to_first_token_seconds", labels("")).GetHistogram()
	wantTTFT := map[float64]uint64{math.Inf(1): 2}
	for _, b := range firstTokenBounds {
		switch {
		case b >= 3:
			wantTTFT[b] = 2
		case b >= 0.04:
			wantTTFT[b] = 1
		default:
			wantTTFT[b] = 0
		}
	}
	checkEqual(t, "time to first token buckets", wantTTFT, cumulative(ttft))

	series := 0
	for _, mf := range []string{"gen_ai_client_token_usage", "gen_ai_server_time_to_first_token_seconds", "scoregate_gen_ai_usage_total"} {
		for _, m := range mfs[mf].GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				if l.GetName() == "service" && l.GetValue() == "iris" {
					t.Errorf("%s has a series for the plain service: %v", mf, m)
				}
			}
		}
	}
	// Input and output of chat and of embeddings (0 output tokens reported); one time to first
	// token; chat reported, chat missing, embeddings reported.
	if series != 4+1+3 {
		t.Errorf("%d language-model series, want 8", series)
	}
}

// The response models labelling a service's series are bounded: a model server that echoes
// whatever "model" each client sends cannot grow /metrics past maxModelsPerService models per
// service, the rest are _OTHER; another service has its own allowance; an operation the gateway
// does not know is _OTHER too.
func TestMetricsGenAICardinality(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	for _, service := range []string{"chat", "other"} {
		for i := range 100 {
			model := fmt.Sprintf("echoed-model-%03d", i)
			do(tel, req{method: "POST", service: service, upstream: "127.0.0.1:9001", status: 200,
				genAI: GenAI{Operation: "chat", RequestModel: model, ResponseModel: model, InputTokens: 1, OutputTokens: 1, Usage: "reported"}})
		}
	}
	do(tel, req{method: "POST", service: "chat", upstream: "127.0.0.1:9001", status: 200,
		genAI: GenAI{Operation: "made-up-by-a-client", ResponseModel: "echoed-model-000", Usage: "invented"}})
	shutdown(t, tel)
	mfs := scrape(t, tel)
	models := map[string]map[string]bool{}
	for _, m := range mfs["gen_ai_client_token_usage"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if models[l["service"]] == nil {
			models[l["service"]] = map[string]bool{}
		}
		models[l["service"]][l["gen_ai_response_model"]] = true
	}
	for _, service := range []string{"chat", "other"} {
		got := models[service]
		if len(got) != maxModelsPerService+1 || !got[otherLabel] || !got["echoed-model-000"] || got["echoed-model-099"] {
			t.Errorf("service %s: response models %v, want the first %d and %s", service, slices.Sorted(maps.Keys(got)),
				maxModelsPerService, otherLabel)
		}
	}
	other := map[string]string{"gen_ai_operation_name": otherLabel, "service": "chat", "usage": otherLabel}
	if c := findSeries(t, mfs, "scoregate_gen_ai_usage_total", other); c.GetCounter().GetValue() != 1 {
		t.Errorf("an unknown operation and usage source: %v, want counted under %s", c, otherLabel)
	}
}

// Recording a language-model call's metrics allocates nothing once its series exist.
func TestMetricsGenAIAllocs(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	rec := tel.Begin()
	rec.SetRequest([]byte("POST"), []byte("/api/v1/service/chat/v1/chat/completions"), nil, nil, nil, nil, nil)
	rec.Service, rec.Upstream, rec.Deployment, rec.Caller = "chat", "127.0.0.1:5001", "blue", "key:AbCdEf012345"
	rec.GenAI = GenAI{Operation: "chat", RequestModel: "gpt-4o-mini", ResponseModel: "gpt-4o-mini-2024-07-18",
		InputTokens: 12, OutputTokens: 300, Usage: "reported", TimeToFirstToken: 40 * time.Millisecond}
	rec.status, rec.duration = 200, time.Millisecond
	tel.metrics.record(rec) // the first time makes the series
	if n := testing.AllocsPerRun(100, func() { tel.metrics.record(rec) }); n != 0 {
		t.Errorf("metrics.record of a language-model call allocates %v times", n)
	}
	rec.End(200)
}
