package main

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/bojand/ghz/protodesc"
	"github.com/bojand/ghz/runner"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestInferenceProtoMatchesTheModel holds inference.proto, which ghz reads, against the model's
// hand-written service: the same methods, each with the streaming shape the model serves and the
// message types its handler decodes and sends, as ghz itself resolves them.
func TestInferenceProtoMatchesTheModel(t *testing.T) {
	name := func(m proto.Message) string { return string(m.ProtoReflect().Descriptor().FullName()) }
	types := map[string][2]string{ // what the handlers in grpcmodel.go read and write
		"ModelInfer":       {name(&wrapperspb.BytesValue{}), name(&wrapperspb.BytesValue{})},
		"ModelInferStream": {name(&wrapperspb.StringValue{}), name(&wrapperspb.StringValue{})},
	}
	type shape struct {
		In, Out                      string
		ClientStreams, ServerStreams bool
	}
	model := map[string]shape{}
	for _, m := range grpcModelDesc.Methods {
		model[m.MethodName] = shape{In: types[m.MethodName][0], Out: types[m.MethodName][1]}
	}
	for _, s := range grpcModelDesc.Streams {
		model[s.StreamName] = shape{In: types[s.StreamName][0], Out: types[s.StreamName][1], ClientStreams: s.ClientStreams, ServerStreams: s.ServerStreams}
	}
	if len(model) != len(types) {
		t.Fatalf("the model serves %d methods, the test knows the types of %d: add the new one's", len(model), len(types))
	}
	got := map[string]shape{}
	var inProto []string
	for method := range model {
		mtd, err := protodesc.GetMethodDescFromProto(ghzCall("/"+grpcServiceName+"/"+method), "inference.proto", nil)
		if err != nil {
			t.Errorf("ghz cannot find %s in inference.proto: %v", method, err)
			continue
		}
		got[method] = shape{In: mtd.GetInputType().GetFullyQualifiedName(), Out: mtd.GetOutputType().GetFullyQualifiedName(),
			ClientStreams: mtd.IsClientStreaming(), ServerStreams: mtd.IsServerStreaming()}
		inProto = nil
		for _, m := range mtd.GetService().GetMethods() {
			inProto = append(inProto, m.GetName())
		}
	}
	if diff := cmp.Diff(model, got); diff != "" {
		t.Errorf("inference.proto against the model (-model +proto):\n%s", diff)
	}
	slices.Sort(inProto)
	if diff := cmp.Diff(slices.Sorted(maps.Keys(model)), inProto); diff != "" {
		t.Errorf("methods of the service in inference.proto (-model +proto):\n%s", diff)
	}
}

func TestParseStreamRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		count   int
		every   time.Duration
		wantErr bool
	}{
		{name: "back to back", in: "10 0s", count: 10},
		{name: "paced", in: "10 2ms", count: 10, every: 2 * time.Millisecond},
		{name: "what streamRequest writes", in: streamRequest(3, 1500*time.Microsecond), count: 3, every: 1500 * time.Microsecond},
		{name: "the largest count", in: "10000 1s", count: grpcStreamMaxCount, every: time.Second},
		{name: "no message", in: "0 1ms", wantErr: true},
		{name: "too many messages", in: "10001 0s", wantErr: true},
		{name: "a negative interval", in: "10 -1ms", wantErr: true},
		{name: "an interval over a second", in: "10 2s", wantErr: true},
		{name: "no interval", in: "10", wantErr: true},
		{name: "not a number", in: "ten 1ms", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count, every, err := parseStreamRequest(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseStreamRequest(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if count != tc.count || every != tc.every {
				t.Errorf("parseStreamRequest(%q) = %d, %s; want %d, %s", tc.in, count, every, tc.count, tc.every)
			}
		})
	}
}

func TestParseStamp(t *testing.T) {
	sent := time.Unix(1_800_000_000, 123_456_789)
	for _, tc := range []struct {
		name    string
		in      string
		index   int
		sent    time.Time
		wantErr bool
	}{
		{name: "a message", in: "7 1800000000123456789", index: 7, sent: sent},
		{name: "no stamp", in: "7", wantErr: true},
		{name: "a stamp that is not a number", in: "7 now", wantErr: true},
		{name: "an index that is not a number", in: "x 1800000000123456789", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, at, err := parseStamp(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseStamp(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if i != tc.index || !at.Equal(tc.sent) {
				t.Errorf("parseStamp(%q) = %d, %s; want %d, %s", tc.in, i, at, tc.index, tc.sent)
			}
		})
	}
}

func TestGhzCall(t *testing.T) {
	if got, want := ghzCall(grpcMethodInferStream), "inference.GRPCInferenceService.ModelInferStream"; got != want {
		t.Errorf("ghzCall(%q) = %q, want %q", grpcMethodInferStream, got, want)
	}
}

// TestOutcomeOf reads a ghz report as the harness does: every error counted, the most frequent
// one named, the latencies of every call (failed ones too) in the percentiles.
func TestOutcomeOf(t *testing.T) {
	rep := &runner.Report{Count: 100, Total: 2 * time.Second, EndReason: runner.ReasonTimeout,
		ErrorDist: map[string]int{"rpc error: code = Unavailable": 2, "rpc error: code = DeadlineExceeded": 5}}
	for i := range 100 {
		rep.Details = append(rep.Details, runner.ResultDetail{Latency: time.Duration(i+1) * 10 * time.Microsecond})
	}
	got := outcomeOf(rep)
	want := ghzOutcome{Calls: 100, Errors: 7, FirstError: "rpc error: code = DeadlineExceeded", Elapsed: 2 * time.Second,
		Latency: [4]time.Duration{500 * time.Microsecond, 900 * time.Microsecond, 990 * time.Microsecond, 1000 * time.Microsecond}, EndReason: "timeout"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomeOf (-want +got):\n%s", diff)
	}
}
