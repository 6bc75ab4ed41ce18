package main

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// runSink serves the telemetry sink: an OTLP/HTTP receiver that answers 200 to POST /v1/traces
// and throws the spans away, so that the telemetry tiers pay for exporting without a collector's
// cost in the measurement. GET /stats counts what arrived, to show the tiers did export.
func runSink(addr string) error {
	var requests, bytesIn atomic.Int64
	s := &fasthttp.Server{
		Name:               "bench-otlp-sink",
		MaxRequestBodySize: 64 << 20,
		IdleTimeout:        time.Minute,
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch {
			case ctx.IsPost() && string(ctx.Path()) == "/v1/traces":
				requests.Add(1)
				bytesIn.Add(int64(len(ctx.PostBody())))
				ctx.SetContentType("application/x-protobuf") // an empty ExportTraceServiceResponse
			case ctx.IsGet() && string(ctx.Path()) == "/stats":
				ctx.SetContentType("application/json")
				ctx.SetBodyString(`{"requests": ` + strconv.FormatInt(requests.Load(), 10) +
					`, "bytes": ` + strconv.FormatInt(bytesIn.Load(), 10) + "}")
			default:
				ctx.Error("not found", fasthttp.StatusNotFound)
			}
		},
	}
	return s.ListenAndServe(addr)
}
