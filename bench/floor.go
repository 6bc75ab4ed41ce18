package main

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"
)

// runFloor serves the floor: a fasthttp reverse proxy with no features at all (no auth, no header
// hygiene, no telemetry, no limits), forwarding to upstream with the service prefix stripped. What
// scoregate costs above it is what its features cost.
func runFloor(addr, upstream string) error {
	client := &fasthttp.HostClient{
		Addr:                upstream,
		MaxConns:            512,
		MaxConnWaitTimeout:  5 * time.Second, // queue rather than fail when all 512 are busy
		MaxIdleConnDuration: 10 * time.Second,
		ReadTimeout:         time.Minute,
		WriteTimeout:        time.Minute,
	}
	prefix := []byte(servicePrefix)
	s := &fasthttp.Server{
		Name:               "bench-floor",
		MaxRequestBodySize: 64 << 20,
		ReadTimeout:        time.Minute,
		IdleTimeout:        time.Minute,
		Handler: func(ctx *fasthttp.RequestCtx) {
			path := ctx.Path()
			if !bytes.HasPrefix(path, prefix) {
				ctx.Error("not found", fasthttp.StatusNotFound)
				return
			}
			ctx.Request.SetRequestURIBytes(path[len(prefix):])
			if err := client.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			}
		},
	}
	return s.ListenAndServe(addr)
}
