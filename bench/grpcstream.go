package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The stream delay rows: ghz times whole calls, not the messages of a stream, so a grpc-go client
// of the harness's own reads ModelInferStream streams, paced by the model, and times every
// message from the model's send stamp to its arrival (both read from the machine's wall clock, in
// two processes), directly and through the gateway.
const (
	streamDelaySelect   = "grpc stream delay"
	streamDelayDirect   = "stream delay direct"
	streamDelayGateway  = "stream delay scoregate"
	streamDelayStreams  = 8                    // streams open at once
	streamDelayMessages = 10                   // messages a stream, the first at once
	streamDelayEvery    = 2 * time.Millisecond // between two messages of a stream
)

var grpcStreamDesc = grpc.StreamDesc{StreamName: "ModelInferStream", ServerStreams: true}

// readStamped makes one ModelInferStream call on conn for count messages every apart, reads them
// all, and gives each message's delay (arrival less the model's stamp) to record.
func readStamped(ctx context.Context, conn *grpc.ClientConn, count int, every time.Duration, record func(time.Duration)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := conn.NewStream(ctx, &grpcStreamDesc, grpcMethodInferStream)
	if err != nil {
		return err
	}
	if err := s.SendMsg(wrapperspb.String(streamRequest(count, every))); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	msg := new(wrapperspb.StringValue)
	for n := 0; ; n++ {
		err := s.RecvMsg(msg)
		arrived := time.Now()
		if errors.Is(err, io.EOF) {
			if n != count {
				return fmt.Errorf("%d messages, want %d", n, count)
			}
			return nil
		}
		if err != nil {
			return err
		}
		i, sent, err := parseStamp(msg.GetValue())
		if err != nil {
			return err
		}
		if i != n {
			return fmt.Errorf("message %d arrived as number %d", i, n)
		}
		record(arrived.Sub(sent))
	}
}

// grpcStreamDelays keeps streamDelayStreams paced streams open on t's connections for d, each
// worker opening the next as soon as its stream ends. The result counts messages, not streams:
// its latencies are the messages' delays, its errors the streams that failed.
func grpcStreamDelays(ctx context.Context, t *grpcTarget, d time.Duration) (loadResult, error) {
	lctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	if t.key != "" {
		lctx = metadata.AppendToOutgoingContext(lctx, "authorization", "Bearer "+t.key)
	}
	var (
		mu       sync.Mutex
		delays   = newHistogram()
		messages int64
	)
	r := closedLoop(ctx, streamDelayStreams, d, func(g int) (func() string, func()) {
		conn, h, n := t.conns[g%len(t.conns)], newHistogram(), int64(0)
		record := func(delay time.Duration) {
			h.RecordValue(max(int64(delay/time.Microsecond), 0))
			n++
		}
		call := func() string {
			if err := readStamped(lctx, conn, streamDelayMessages, streamDelayEvery, record); err != nil {
				return status.Code(err).String() + ": " + status.Convert(err).Message()
			}
			return ""
		}
		return call, func() {
			mu.Lock()
			delays.Merge(h)
			messages += n
			mu.Unlock()
		}
	})
	out := loadResult{requests: messages, errors: r.errors, firstErr: r.firstErr, elapsed: r.elapsed, lat: percentiles(delays)}
	if messages == 0 {
		return out, errors.New("no message arrived")
	}
	return out, ctx.Err()
}
