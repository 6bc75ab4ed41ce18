package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an in-process OTLP/HTTP trace endpoint that keeps every span and the raw bytes
// it was sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	raw   bytes.Buffer
	url   string
}

// env is the environment of a gateway that exports its spans to r over OTLP/HTTP, with owner as
// its admin key, and extra.
func (r *otlpReceiver) env(owner string, extra ...string) []string {
	return append([]string{
		"GATEWAY_ADMIN_KEY=" + owner,
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + r.url,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
	}, extra...)
}

// received is a copy of the spans so far, and every request body as received.
func (r *otlpReceiver) received() ([]*tracepb.Span, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...), r.raw.String()
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		body, _ := io.ReadAll(req.Body)
		var msg collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.raw.Write(body)
		for _, rs := range msg.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *otlpReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

func attrs(s *tracepb.Span) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes {
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.Key] = v.DoubleValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = v.BoolValue
		}
	}
	return m
}

// The telemetry issue's acceptance 1 to 4, through the gateway binary: spans arrive at an OTLP
// endpoint with every field for 200, 401, 404 and 502; the model gets a traceparent of the same
// trace whose parent is the gateway's span; canary credentials appear nowhere; /metrics parses.
func TestTelemetryThroughTheBinary(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rec, upstream := newRecorder(t)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, upstream.URL, "")
	os.WriteFile(cfgPath, append(mustRead(t, cfgPath), []byte(`  - name: scoring
    auth: token
    upstreams: ["`+upstream.URL+`"]
  - name: down
    auth: none
    upstreams: ["http://127.0.0.1:1"]
telemetry:
  access_log: true
`)...), 0o600)
	owner := "owner-key-for-telemetry-0123456789abcdef"
	p := start(t, rcv.env(owner, "OTEL_SERVICE_NAME=scoregate-test"), "serve", "-config", cfgPath)
	key := regenerateKey(t, p, owner, "primary")

	type sent struct {
		name, requestID, traceresponse string
		status                         int
	}
	send := func(name, method, path, cred, traceparent string) sent {
		req, _ := http.NewRequest(method, p.dataURL+path, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
		req.Header.Set("User-Agent", "telemetry-test/1.0")
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
			req.Header.Set("tracestate", "vendor=abc")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return sent{name, resp.Header.Get("X-Request-Id"), resp.Header.Get("Traceresponse"), resp.StatusCode}
	}
	const incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	cases := []sent{
		send("ok", "POST", "/api/v1/service/iris/score?threshold=0.5", key, "00-"+incomingTrace+"-00f067aa0ba902b7-01"),
		send("unauthorized", "POST", "/api/v1/service/iris/score", "", ""),
		send("not found", "GET", "/api/v1/service/nope/score", "", ""),
		send("bad gateway", "POST", "/api/v1/service/down/score", "", ""),
	}
	wantStatus := map[string]int{"ok": 200, "unauthorized": 401, "not found": 404, "bad gateway": 502}
	for _, c := range cases {
		if c.status != wantStatus[c.name] {
			t.Fatalf("%s: status %d", c.name, c.status)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for rcv.count() < len(cases) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	spans, _ := rcv.received()
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[attrs(s)["RequestId"].(string)] = s
	}
	for _, c := range cases {
		s := byID[c.requestID]
		if s == nil {
			t.Fatalf("%s: no span with RequestId %s among %d", c.name, c.requestID, len(spans))
		}
		a := attrs(s)
		method := map[string]string{"not found": "GET"}[c.name]
		if method == "" {
			method = "POST"
		}
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.Name != method+" /api/v1/service/{name}/{rest}" {
			t.Errorf("%s: span %q kind %v", c.name, s.Name, s.Kind)
		}
		for k, want := range map[string]any{
			"HTTPMethod": method, "http.request.method": method, "ComputeType": "sidecar",
			"StatusCode": fmt.Sprint(c.status), "http.response.status_code": int64(c.status),
			"UserAgent": "telemetry-test/1.0", "user_agent.original": "telemetry-test/1.0",
			"http.route": "/api/v1/service/{name}/{rest}", "client.address": "127.0.0.1", "server.address": "127.0.0.1",
		} {
			if a[k] != want {
				t.Errorf("%s: %s = %v, want %v", c.name, k, a[k], want)
			}
		}
		if u, _ := a["RequestUrl"].(string); !strings.HasPrefix(u, p.dataURL+"/api/v1/service/") {
			t.Errorf("%s: RequestUrl %q", c.name, u)
		}
		spanMs := float64(s.EndTimeUnixNano-s.StartTimeUnixNano) / 1e6
		if d, _ := a["Duration"].(float64); d <= 0 || d-spanMs > 1 || spanMs-d > 1 {
			t.Errorf("%s: Duration %v ms, span %v ms", c.name, a["Duration"], spanMs)
		}
		isErr := s.Status != nil && s.Status.Code == tracepb.Status_STATUS_CODE_ERROR
		if isErr != (c.status >= 500) {
			t.Errorf("%s: span status %v for %d", c.name, s.Status, c.status)
		}
		if c.traceresponse == "" || !strings.Contains(c.traceresponse, hex.EncodeToString(s.TraceId)) {
			t.Errorf("%s: traceresponse %q does not carry the trace id", c.name, c.traceresponse)
		}
	}
	okSpan := byID[cases[0].requestID]
	a := attrs(okSpan)
	if a["url.query"] != "threshold=0.5" || a["scoregate.service"] != "iris" || a["scoregate.auth_mode"] != "key" || a["scoregate.outcome"] != "ok" || a["scoregate.upstream.address"] == nil {
		t.Errorf("ok span attributes: %v", a)
	}
	if r := attrs(byID[cases[1].requestID])["scoregate.outcome"]; r != "missing_credential" {
		t.Errorf("401 outcome %v", r)
	}
	// Trace context: the span continues the caller's trace, and the model's parent is the span.
	if hex.EncodeToString(okSpan.TraceId) != incomingTrace || hex.EncodeToString(okSpan.ParentSpanId) != "00f067aa0ba902b7" {
		t.Errorf("span trace %x parent %x", okSpan.TraceId, okSpan.ParentSpanId)
	}
	modelSaw := rec.last().Header.Get("Traceparent")
	if want := "00-" + incomingTrace + "-" + hex.EncodeToString(okSpan.SpanId) + "-01"; modelSaw != want {
		t.Errorf("model got traceparent %q, want %q", modelSaw, want)
	}
	if ts := rec.last().Header.Get("Tracestate"); ts != "vendor=abc" {
		t.Errorf("model got tracestate %q", ts)
	}

	// /metrics parses as Prometheus text and has the request histogram with its labels.
	resp, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(metricsText))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	h := families["http_server_request_duration_seconds"]
	if h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no request-duration histogram in /metrics")
	}
	labels := map[string]bool{}
	for _, m := range h.Metric {
		for _, l := range m.Label {
			labels[l.GetName()+"="+l.GetValue()] = true
		}
	}
	for _, want := range []string{"http_request_method=POST", "http_response_status_class=2xx", "http_response_status_class=4xx", "http_response_status_class=5xx", "service=iris"} {
		if !labels[want] {
			t.Errorf("histogram lacks label %s (has %v)", want, labels)
		}
	}

	// Acceptance 3: canary credentials in a thousand requests, accepted and rejected.
	owner2 := owner
	var np struct{ Key string }
	out, code := runAdmin(t, p, owner2, "principals", "create", "canary", "reader")
	if code != 0 || json.Unmarshal([]byte(out), &np) != nil {
		t.Fatalf("principal: %s", out)
	}
	tokOut, code := runAdmin(t, p, np.Key, "token", "scoring")
	var tr struct{ AccessToken string }
	if code != 0 || json.Unmarshal([]byte(tokOut), &tr) != nil || tr.AccessToken == "" {
		t.Fatalf("token: %s", tokOut)
	}
	canaryKey := "sgk_CANARYkey000_" + strings.Repeat("Q", 49)
	canaryToken := "eyJhbGciOiJFZERTQSJ9.eyJjYW5hcnkiOiJDQU5BUllUT0tFTiJ9.Q0FOQVJZU0lH"
	secrets := []string{key, key[17:60], tr.AccessToken, strings.Split(tr.AccessToken, ".")[2], np.Key, canaryKey, canaryToken, "CANARYkey000", owner}
	before := rcv.count()
	for i := 0; i < 1000; i++ {
		switch i % 5 {
		case 0:
			send("key", "POST", "/api/v1/service/iris/score", key, "")
		case 1:
			send("token", "POST", "/api/v1/service/scoring/score", tr.AccessToken, "")
		case 2:
			send("canary key", "POST", "/api/v1/service/iris/score", canaryKey, "")
		case 3:
			send("canary token", "POST", "/api/v1/service/scoring/score", canaryToken, "")
		case 4:
			send("key in query", "POST", "/api/v1/service/iris/score?api-key="+canaryKey+"&token="+tr.AccessToken+"&x="+key, "", "")
		}
	}
	deadline = time.Now().Add(15 * time.Second)
	for rcv.count() < before+1000 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := rcv.count() - before; n < 1000 {
		t.Errorf("only %d of 1000 spans arrived", n)
	}
	resp, _ = http.Get(p.adminURL + "/metrics")
	metricsText, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	_, rawText := rcv.received()
	raw := []byte(rawText)
	// The places searched do hold what they should (the search has teeth).
	if !bytes.Contains(raw, []byte("telemetry-test/1.0")) || !bytes.Contains(raw, []byte("api-key=REDACTED")) ||
		!strings.Contains(p.stderr.String(), "REDACTED") || !bytes.Contains(metricsText, []byte("scoregate_auth_rejections")) {
		t.Fatal("the spans, access log or metrics lack what they should carry; the canary search would prove nothing")
	}
	places := map[string][]byte{"spans": raw, "/metrics": metricsText, "stderr": []byte(p.stderr.String()), "stdout": []byte(p.stdout.String())}
	for where, data := range places {
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("a credential (%.12s…) appears in %s", s, where)
			}
		}
	}
	if !strings.Contains(p.stderr.String(), `"msg":"request"`) {
		t.Error("the access log wrote nothing")
	}
	os.WriteFile(filepath.Join(dir, "stderr.log"), []byte(p.stderr.String()), 0o600) // for a look when it fails
}

// LOG-03, through the binary: traced requests carrying canaries in Authorization, X-API-Key and
// Cookie, in a query parameter the configuration names sensitive and in one it names by default,
// in a userinfo of an absolute-form target and in Host. The spans carry no request-header
// attribute, the sensitive query values are REDACTED, RequestUrl (the url.full the contract asks
// for) has no userinfo, and no canary is in any span or in the access log.
func TestLOG03SpansThroughTheBinary(t *testing.T) {
	rcv := newOTLPReceiver(t)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, upstream.URL, "telemetry:\n  access_log: true\n  redact_query_params: [tenant_secret, api-key]\n")
	p := start(t, rcv.env(sharedOwnerKey), "serve", "-config", cfgPath)
	key := regenerateKey(t, p, sharedOwnerKey, "primary")
	addr := strings.TrimPrefix(p.dataURL, "http://")

	c := map[string]string{}
	for _, where := range []string{"authorization", "x-api-key", "cookie", "tenant_secret", "api-key", "userinfo", "host"} {
		c[where] = newCanary("LOG03" + strings.ReplaceAll(where, "-", ""))
	}
	query := "tenant_secret=" + c["tenant_secret"] + "&api-key=" + c["api-key"] + "&x=1"
	const wantQuery = "tenant_secret=REDACTED&api-key=REDACTED&x=1"
	headers := map[string]string{"X-API-Key": c["x-api-key"], "Cookie": "session=" + c["cookie"]}
	type sent struct {
		name, id  string
		status    int
		wantQuery string
	}
	var cases []sent
	s, id := sendCred(t, "POST", p.dataURL+"/api/v1/service/iris/score?"+query, key, headers)
	cases = append(cases, sent{"accepted, canaries in X-API-Key, Cookie and the query", id, s, wantQuery})
	s, id = sendCred(t, "POST", p.dataURL+"/api/v1/service/iris/score?"+query, c["authorization"], headers)
	cases = append(cases, sent{"refused, a canary as the credential", id, s, wantQuery})
	for _, r := range []struct{ name, raw string }{
		{"absolute-form target with a userinfo", "POST http://alice:" + c["userinfo"] + "@gw.test/api/v1/service/iris/score?" + query +
			" HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer " + key + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{"userinfo in Host", "POST /api/v1/service/iris/score?" + query + " HTTP/1.1\r\nHost: bob:" + c["host"] +
			"@gw.test\r\nAuthorization: Bearer " + c["authorization"] + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
	} {
		resp := rawRequest(t, addr, []byte(r.raw))
		var status int
		fmt.Sscanf(resp, "HTTP/1.1 %d", &status)
		var rid string
		for l := range strings.Lines(resp) {
			if v, ok := strings.CutPrefix(l, "X-Request-Id: "); ok {
				rid = strings.TrimSpace(v)
			}
		}
		cases = append(cases, sent{r.name, rid, status, wantQuery})
	}
	want := map[string]int{cases[0].name: 200, cases[1].name: 401}
	for _, cs := range cases {
		if w, ok := want[cs.name]; (ok && cs.status != w) || cs.status == 0 || cs.status >= 500 || cs.id == "" {
			t.Fatalf("%s: status %d, request id %q", cs.name, cs.status, cs.id)
		}
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 { // flushes the spans
		t.Fatalf("exit %d", code)
	}
	spans, raw := rcv.received()
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		if id, ok := attrs(s)["RequestId"].(string); ok {
			byID[id] = s
		}
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			s := byID[cs.id]
			if s == nil {
				t.Fatalf("no span with RequestId %s among %d", cs.id, len(spans))
			}
			a := attrs(s)
			if got := a["url.query"]; got != cs.wantQuery {
				t.Errorf("url.query %q, want %q", got, cs.wantQuery)
			}
			full, _ := a["RequestUrl"].(string)
			u, err := url.Parse(full)
			if err != nil || u.User != nil || u.Host != strings.TrimPrefix(p.dataURL, "http://") && u.Host != "gw.test" {
				t.Errorf("RequestUrl %q: userinfo %v, host %q, %v", full, u.User, u.Host, err)
			}
			if u.RawQuery != cs.wantQuery {
				t.Errorf("RequestUrl query %q, want %q", u.RawQuery, cs.wantQuery)
			}
			for k, v := range a {
				if strings.HasPrefix(k, "http.request.header.") {
					t.Errorf("span attribute %s=%v: a request header", k, v)
				}
			}
		})
	}
	places := map[string]string{"the spans": raw, "stderr (access log)": p.stderr.String(), "stdout": p.stdout.String()}
	secrets := map[string]string{"the key": key}
	for where, v := range c {
		secrets["the canary in "+where] = v
	}
	for _, leak := range findLeaks(places, secrets) {
		t.Error(leak)
	}
	if !strings.Contains(raw, "api-key=REDACTED") || !strings.Contains(p.stderr.String(), "tenant_secret=REDACTED") {
		t.Error("the spans or the access log lack the redacted query; the search would prove nothing")
	}
}
