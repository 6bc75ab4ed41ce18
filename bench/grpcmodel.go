package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// roleGRPCModel is the helper role serving the gRPC model.
const roleGRPCModel = "grpc-model"

// The gRPC model is a KServe v2-shaped service, "inference.GRPCInferenceService", written without
// protoc as proxy/grpc_test.go's is: the service descriptor by hand, the messages protobuf's
// well-known wrappers. ModelInfer takes the fast profile's JSON body and answers the same
// logistic regression's JSON, so that a call carries about what a fast-profile request does.
// ModelInferStream, server-streaming, answers a number of short messages, each stamped with the
// time the model sent it. inference.proto describes both for ghz.
const (
	grpcServiceName       = "inference.GRPCInferenceService"
	grpcMethodInfer       = "/" + grpcServiceName + "/ModelInfer"
	grpcMethodInferStream = "/" + grpcServiceName + "/ModelInferStream"
)

// inferenceProto is the model's service as a .proto file, for ghz.
//
//go:embed inference.proto
var inferenceProto []byte

// Bounds of a ModelInferStream request.
const (
	grpcStreamMaxCount    = 10_000
	grpcStreamMaxInterval = time.Second
)

type grpcModel struct{}

var grpcModelDesc = grpc.ServiceDesc{
	ServiceName: grpcServiceName,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "ModelInfer",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			out, err := scoreJSON(in.GetValue())
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			return wrapperspb.Bytes(out), nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "ModelInferStream",
		ServerStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			in := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			count, every, err := parseStreamRequest(in.GetValue())
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			return sendStamped(stream, count, every)
		},
	}},
}

// streamRequest is the request of ModelInferStream for count messages every interval apart.
func streamRequest(count int, every time.Duration) string {
	return strconv.Itoa(count) + " " + every.String()
}

// parseStreamRequest reads "<count> <interval>".
func parseStreamRequest(s string) (int, time.Duration, error) {
	var count int
	var every string
	if _, err := fmt.Sscanf(s, "%d %s", &count, &every); err != nil {
		return 0, 0, fmt.Errorf(`want "<count> <interval>", such as "10 2ms": %w`, err)
	}
	d, err := time.ParseDuration(every)
	if err != nil || count < 1 || count > grpcStreamMaxCount || d < 0 || d > grpcStreamMaxInterval {
		return 0, 0, fmt.Errorf("want a count from 1 to %d and an interval from 0 to %s, got %q", grpcStreamMaxCount, grpcStreamMaxInterval, s)
	}
	return count, d, nil
}

// sendStamped sends count messages every apart (on a schedule from the first, so that the sleeps'
// overshoot does not add up), each "<index> <send time in Unix nanoseconds>", the time read just
// before the message goes to grpc-go.
func sendStamped(stream grpc.ServerStream, count int, every time.Duration) error {
	start := time.Now()
	out := new(wrapperspb.StringValue)
	var buf []byte
	for i := range count {
		if wait := time.Until(start.Add(time.Duration(i) * every)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-stream.Context().Done():
				return status.FromContextError(stream.Context().Err()).Err()
			}
		}
		buf = strconv.AppendInt(append(strconv.AppendInt(buf[:0], int64(i), 10), ' '), time.Now().UnixNano(), 10)
		out.Value = string(buf)
		if err := stream.SendMsg(out); err != nil {
			return err
		}
	}
	return nil
}

// parseStamp reads a ModelInferStream message: its index and send time.
func parseStamp(s string) (int, time.Time, error) {
	idx, stamp, ok := strings.Cut(s, " ")
	i, err1 := strconv.Atoi(idx)
	ns, err2 := strconv.ParseInt(stamp, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return 0, time.Time{}, fmt.Errorf("malformed stream message %q", s)
	}
	return i, time.Unix(0, ns), nil
}

// runGRPCModel serves the gRPC model on addr over cleartext HTTP/2 (h2c, prior knowledge), as a
// sidecar model server would.
func runGRPCModel(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpcModelDesc, grpcModel{})
	return srv.Serve(ln)
}

// scoreJSON is the fast profile's scoring for a body: parse, compute, encode.
func scoreJSON(body []byte) ([]byte, error) {
	var req scoreRequest
	if err := json.Unmarshal(body, &req); err != nil || len(req.Data) == 0 {
		return nil, errors.New(`want {"data": [[4 numbers], ...]}`)
	}
	var resp scoreResponse
	for _, row := range req.Data {
		z := model.bias
		for i, x := range row {
			z += model.weights[i] * x
		}
		p := 1 / (1 + math.Exp(-z))
		resp.Probabilities = append(resp.Probabilities, math.Round(p*1e4)/1e4)
		resp.Labels = append(resp.Labels, int(math.Round(p)))
	}
	return json.Marshal(resp) // cannot fail: plain numbers
}
