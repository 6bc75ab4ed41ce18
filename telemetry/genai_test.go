package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/sdk/resource"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
	"github.com/scoregate/scoregate/config"
)

// Language-model calls (issue 22): what their spans and access-log lines carry.

// genAIKeys are the attributes a language-model call or a caller adds to a span.
var genAIKeys = []string{attrGenAIOperation, attrGenAIProvider, attrGenAIRequestModel, attrGenAIResponseModel,
	attrGenAIUsage, attrGenAIInputTokens, attrGenAIOutputTokens, attrGenAIFirstChunk, attrEndUser}

// genAIOnly is the part of a span's attributes that genAIKeys name.
func genAIOnly(a map[string]any) map[string]any {
	out := map[string]any{}
	for _, k := range genAIKeys {
		if v, ok := a[k]; ok {
			out[k] = v
		}
	}
	return out
}

// genAISpanCases are language-model calls, a plain request with a caller and one without, with
// the attributes of genAIKeys their spans must carry.
var genAISpanCases = []struct {
	name string
	req  req
	want map[string]any
}{
	{
		name: "streamed chat with usage reported: every attribute, the counts as ints, the first token in seconds",
		req: req{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat",
			auth: config.AuthKey, upstream: "127.0.0.1:9001", deployment: "blue", stream: true, status: 200, caller: "key:AbCdEf012345",
			genAI: GenAI{Operation: "chat", RequestModel: "gpt-4o-mini", ResponseModel: "gpt-4o-mini-2024-07-18",
				InputTokens: 12, OutputTokens: 300, Usage: "reported", TimeToFirstToken: 42 * time.Millisecond}},
		want: map[string]any{attrGenAIOperation: "chat", attrGenAIProvider: "openai", attrGenAIRequestModel: "gpt-4o-mini",
			attrGenAIResponseModel: "gpt-4o-mini-2024-07-18", attrGenAIUsage: "reported", attrGenAIInputTokens: int64(12),
			attrGenAIOutputTokens: int64(300), attrGenAIFirstChunk: 0.042, attrEndUser: "key:AbCdEf012345"},
	},
	{
		name: "usage missing: no token counts, never a zero, but the usage source says so",
		req: req{method: "POST", target: "/api/v1/service/chat/v1/completions", host: "gw.test", service: "chat",
			upstream: "127.0.0.1:9001", status: 200, caller: "principal:scoring-team",
			genAI: GenAI{Operation: "text_completion", RequestModel: "m", ResponseModel: "m", Usage: "missing"}},
		want: map[string]any{attrGenAIOperation: "text_completion", attrGenAIProvider: "openai", attrGenAIRequestModel: "m",
			attrGenAIResponseModel: "m", attrGenAIUsage: "missing", attrEndUser: "principal:scoring-team"},
	},
	{
		name: "refused before the model: the operation and request model, no response model, no usage source",
		req: req{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat",
			status: 429, reason: "rate_limited", caller: "key:AbCdEf012345", genAI: GenAI{Operation: "chat", RequestModel: "m"}},
		want: map[string]any{attrGenAIOperation: "chat", attrGenAIProvider: "openai", attrGenAIRequestModel: "m",
			attrEndUser: "key:AbCdEf012345"},
	},
	{
		name: "a key in the request model, a long and broken response model: REDACTED, cut to 256 bytes of valid UTF-8",
		req: req{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat",
			upstream: "127.0.0.1:9001", status: 200,
			genAI: GenAI{Operation: "chat", RequestModel: "x-" + canaryServiceKey, ResponseModel: "m\xff" + strings.Repeat("é", 200),
				Usage: "unparsable"}},
		want: map[string]any{attrGenAIOperation: "chat", attrGenAIProvider: "openai", attrGenAIRequestModel: "REDACTED",
			attrGenAIResponseModel: "m\uFFFD" + strings.Repeat("é", 126), attrGenAIUsage: "unparsable"},
	},
	{
		name: "plain request of an authenticated caller: the caller, nothing of gen_ai",
		req: req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test", service: "iris", auth: config.AuthKey,
			upstream: "127.0.0.1:9000", status: 200, caller: "key:AbCdEf012345"},
		want: map[string]any{attrEndUser: "key:AbCdEf012345"},
	},
	{
		name: "plain request, no caller: none of these attributes",
		req:  req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test", service: "iris", status: 401, reason: "missing_credential"},
		want: map[string]any{},
	},
}

// TestSpanGenAI: the SDK span of each case carries exactly its attributes, of the right types.
func TestSpanGenAI(t *testing.T) {
	tel, mem := newTel(t, nil, Options{})
	for i, c := range genAISpanCases {
		c.req.id = fmt.Sprint("genai-", i)
		do(tel, c.req)
	}
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	for i, c := range genAISpanCases {
		t.Run(c.name, func(t *testing.T) {
			s, ok := spans[fmt.Sprint("genai-", i)]
			if !ok {
				t.Fatal("no span")
			}
			a := attrs(s.Attributes)
			checkEqual(t, "language-model attributes", c.want, genAIOnly(a))
			for k := range a {
				if strings.HasPrefix(k, "gen_ai.") && c.req.genAI.Operation == "" {
					t.Errorf("attribute %s on a request that is no language-model call", k)
				}
			}
			for _, k := range []string{attrGenAIRequestModel, attrGenAIResponseModel} {
				if v, _ := a[k].(string); len(v) > maxValueLen || !utf8.ValidString(v) {
					t.Errorf("%s: %d bytes, valid UTF-8 %v", k, len(v), utf8.ValidString(v))
				}
			}
		})
	}
}

// otlpAttrs is a span's attributes as values of the same types as attrs gives for an SDK span.
func otlpAttrs(s *tracepb.Span) map[string]any {
	out := map[string]any{}
	for _, kv := range s.GetAttributes() {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			out[kv.GetKey()] = v.DoubleValue
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = v.BoolValue
		}
	}
	return out
}

// fileAttrs reads the spans of a traces_file (the SDK spans, as stdouttrace writes them), by
// RequestId, with their attributes as attrs gives them.
func fileAttrs(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]any{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var s struct {
			Attributes []struct {
				Key   string
				Value struct {
					Type  string
					Value json.RawMessage
				}
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("traces_file line %q: %v", sc.Text(), err)
		}
		a := map[string]any{}
		for _, kv := range s.Attributes {
			var v any
			switch kv.Value.Type {
			case "STRING":
				var x string
				err = json.Unmarshal(kv.Value.Value, &x)
				v = x
			case "INT64":
				var x int64
				err = json.Unmarshal(kv.Value.Value, &x)
				v = x
			case "FLOAT64":
				var x float64
				err = json.Unmarshal(kv.Value.Value, &x)
				v = x
			case "BOOL":
				var x bool
				err = json.Unmarshal(kv.Value.Value, &x)
				v = x
			}
			if err != nil {
				t.Fatalf("attribute %s: %v", kv.Key, err)
			}
			a[kv.Key] = v
		}
		id, _ := a["RequestId"].(string)
		out[id] = a
	}
	return out
}

// TestGenAIThroughEveryExporter: the language-model attributes reach a real collector through
// each span encoder, the gateway's OTLP/HTTP one (wire) and the library's gRPC client's batch
// (fillOTLP), and traces_file through the SDK span, the same in all three and as TestSpanGenAI
// wants them.
func TestGenAIThroughEveryExporter(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			col, tel, file := telemetryToCollector(t, protocol)
			if (protocol == "grpc") != (tel.otlp != nil) || (protocol == "grpc") == (tel.otlpHTTP != nil) {
				t.Fatalf("%s chose the wrong encoder", protocol)
			}
			for i, c := range genAISpanCases {
				c.req.id = fmt.Sprint("genai-", i)
				do(tel, c.req)
			}
			shutdown(t, tel)
			inFile := fileAttrs(t, file)
			atCollector := map[string]map[string]any{}
			for _, s := range col.spans {
				a := otlpAttrs(s)
				atCollector[a["RequestId"].(string)] = a
			}
			for i, c := range genAISpanCases {
				id := fmt.Sprint("genai-", i)
				if inFile[id] == nil || atCollector[id] == nil {
					t.Fatalf("span %s: in traces_file %v, at the collector %v", id, inFile[id] != nil, atCollector[id] != nil)
				}
				checkEqual(t, c.name+": traces_file (SDK span)", c.want, genAIOnly(inFile[id]))
				checkEqual(t, c.name+": "+protocol+" collector", c.want, genAIOnly(atCollector[id]))
			}
		})
	}
}

// A language-model call's access-log line names the caller, the operation, the models, where the
// counts came from and the counts; a plain request's names its caller only.
func TestAccessLogGenAI(t *testing.T) {
	var log accessLog
	tel, _ := newTel(t, func(c *config.Config) { c.Telemetry.AccessLog = true }, Options{AccessLog: log.logger()})
	for i, c := range genAISpanCases {
		c.req.id = fmt.Sprint("genai-", i)
		do(tel, c.req)
	}
	shutdown(t, tel)
	lines := log.lines(t)
	pick := func(line map[string]any) map[string]any {
		out := map[string]any{}
		for _, k := range []string{"caller", "gen_ai_operation", "request_model", "response_model", "usage", "input_tokens",
			"output_tokens", "first_token_ms"} {
			if v, ok := line[k]; ok {
				out[k] = v
			}
		}
		return out
	}
	want := []map[string]any{
		{"caller": "key:AbCdEf012345", "gen_ai_operation": "chat", "request_model": "gpt-4o-mini",
			"response_model": "gpt-4o-mini-2024-07-18", "usage": "reported", "input_tokens": 12.0, "output_tokens": 300.0,
			"first_token_ms": 42.0},
		{"caller": "principal:scoring-team", "gen_ai_operation": "text_completion", "request_model": "m", "response_model": "m",
			"usage": "missing"},
		{"caller": "key:AbCdEf012345", "gen_ai_operation": "chat", "request_model": "m"},
		{"gen_ai_operation": "chat", "request_model": "REDACTED", "response_model": "m\uFFFD" + strings.Repeat("é", 126),
			"usage": "unparsable"},
		{"caller": "key:AbCdEf012345"},
		{},
	}
	for i, c := range genAISpanCases {
		checkEqual(t, c.name, want[i], pick(lines[fmt.Sprint("genai-", i)]))
	}
	if bytes.Contains(log.buf.Bytes(), []byte("sgk_")) {
		t.Errorf("the access log holds a key: %s", log.buf.Bytes())
	}
}

// Bounding values that need no change allocates nothing.
func TestBoundChosenValuesAllocs(t *testing.T) {
	rec := &Record{Caller: "key:AbCdEf012345", GenAI: GenAI{Operation: "chat", RequestModel: "gpt-4o-mini",
		ResponseModel: "gpt-4o-mini-2024-07-18", Usage: "reported"}}
	if n := testing.AllocsPerRun(100, rec.boundChosenValues); n != 0 {
		t.Errorf("boundChosenValues allocates %v times", n)
	}
}

// FuzzGenAIValues feeds the values a client or a model chooses (the caller, the operation, the
// models, the usage source) through boundChosenValues and every span encoder: nothing panics;
// each value is at most maxValueLen bytes of valid UTF-8 holding no credential marker, and one
// that already was is kept as it was; the wire encoder's request is a valid OTLP message whose
// span carries exactly the attributes fillOTLP writes.
func FuzzGenAIValues(f *testing.F) {
	f.Add("key:AbCdEf012345", "chat", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "reported", int64(12), int64(-1))
	f.Add("principal:"+canaryServiceKey, "embeddings", "eyJhbGciOiJIUzI1NiJ9", "m\xff\xfe", "missing", int64(0), int64(1<<62))
	f.Add("", "x", strings.Repeat("é", 200)+"\xff", strings.Repeat("\xff", 300), "", int64(-1<<63), int64(7))
	f.Add("key:"+strings.Repeat("模", 90), "sgp_x", "%73gk_", "a", "cut", int64(1), int64(1))
	res := resource.Empty()
	tel := &Telemetry{redact: map[string]bool{}, computeType: "fuzz"}
	f.Fuzz(func(t *testing.T, caller, op, requestModel, responseModel, usage string, in, out int64) {
		rec := &Record{t: tel}
		rec.SetRequest([]byte("POST"), []byte("/api/v1/service/chat/v1/chat/completions"), nil, []byte("gw.test"), nil, nil, nil)
		rec.sampled, rec.status = true, 200
		rec.Caller = caller
		rec.GenAI = GenAI{Operation: op, RequestModel: requestModel, ResponseModel: responseModel, Usage: usage,
			InputTokens: in, OutputTokens: out, TimeToFirstToken: time.Duration(in)}
		rec.boundChosenValues()
		bounded := []string{rec.Caller}
		if op != "" {
			bounded = append(bounded, rec.GenAI.Operation, rec.GenAI.RequestModel, rec.GenAI.ResponseModel, rec.GenAI.Usage)
		}
		sent := []string{caller, op, requestModel, responseModel, usage}
		for i, v := range bounded {
			if len(v) > maxValueLen || !utf8.ValidString(v) || holdsCredential(v) {
				t.Fatalf("%q bounded to %q: %d bytes, valid UTF-8 %v, credential %v", sent[i], v, len(v), utf8.ValidString(v), holdsCredential(v))
			}
			if len(sent[i]) <= maxValueLen && utf8.ValidString(sent[i]) && !holdsCredential(sent[i]) && v != sent[i] {
				t.Fatalf("%q, fit to record as it is, bounded to %q", sent[i], v)
			}
		}

		enc, err := newSpanEncoder(res)
		if err != nil {
			t.Fatal(err)
		}
		enc.add(tel, rec)
		var msg collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(enc.request(), &msg); err != nil {
			t.Fatalf("the wire encoder's request is no OTLP message: %v", err)
		}
		s := newOTLPSpan()
		tel.fillOTLP(s, rec)
		if _, err := proto.Marshal(&s.span); err != nil {
			t.Fatalf("fillOTLP's span does not marshal: %v", err)
		}
		got := msg.ResourceSpans[0].ScopeSpans[0].Spans[0]
		if diff := cmp.Diff(s.span.Attributes, got.Attributes, protocmp.Transform()); diff != "" {
			t.Fatalf("attributes (-fillOTLP +wire):\n%s", diff)
		}
	})
}
