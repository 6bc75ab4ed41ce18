package main

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// roleGRPCModel is the helper role serving the gRPC model.
const roleGRPCModel = "grpc-model"

// The gRPC model is a KServe v2-shaped service, "inference.GRPCInferenceService", written without
// protoc as proxy/grpc_test.go's is: the service descriptor by hand, the messages protobuf's
// well-known BytesValue. ModelInfer takes the fast profile's JSON body and answers the same
// logistic regression's JSON, so that a call carries about what a fast-profile request does.
const (
	grpcServiceName = "inference.GRPCInferenceService"
	grpcMethodInfer = "/" + grpcServiceName + "/ModelInfer"
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
