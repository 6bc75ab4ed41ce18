package main

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// profile is one kind of scoring request: the path the model serves it on and the body sent.
type profile struct {
	name        string
	path        string // on the model; through a proxy it is servicePrefix + path
	contentType string
	body        []byte
	wantInBody  string // a fragment every correct answer contains, for the peer checks
	describe    string
}

// servicePrefix is the scoring route of the one service every proxy fronts. The peers other than
// scoregate are configured to strip it the same way.
const servicePrefix = "/api/v1/service/bench"

// slowWait is the slow profile's model latency. It is a wait, not CPU work: on a two-core machine
// shared by proxy, model and load generator, CPU-bound model work would measure the model.
const slowWait = 3 * time.Millisecond

// largeBody is the large profile's request and response size.
const largeBody = 64 << 10

// streamedBody is the streamed profile's request size: over the 64 KB the gateway reads whole.
const streamedBody = 1 << 20

// mediumBody is the medium profile's: over the 4 KB write buffers of fasthttp's client and
// server, under the 64 KB a loopback segment carries, so that a header and body written apart
// show as two segments.
const mediumBody = 16 << 10

var fastBody = []byte(`{"data": [[1.2, 0.4, -0.3, 2.0], [-1.5, -0.2, 0.8, -1.1]]}`)

var profiles = []profile{
	{name: "fast", path: "/fast", contentType: "application/json", body: fastBody, wantInBody: `"probabilities"`,
		describe: "a small JSON body scored by a logistic regression over four features (about 60 bytes each way)"},
	{name: "slow", path: "/slow", contentType: "application/json", body: fastBody, wantInBody: `"probabilities"`,
		describe: "the fast model after a " + slowWait.String() + " wait (inference time that does not occupy the shared cores)"},
	{name: "chunked", path: "/chunked", contentType: "application/json", body: fastBody, wantInBody: `"probabilities"`,
		describe: "the fast model's answer sent chunked, as a server that streams its responses sends it (not in the default -profiles)"},
	{name: "medium", path: "/large", contentType: "application/octet-stream", body: pattern(mediumBody), wantInBody: "0123456789",
		describe: "a 16 KB request body echoed back as a 16 KB response (not in the default -profiles)"},
	{name: "streamed", path: sinkPath, contentType: "application/octet-stream", body: pattern(streamedBody), wantInBody: `"bytes"`,
		describe: "a 1 MB request body, over what the gateway reads whole, so that it streams through to the model, answered with its size (not in the default -profiles)"},
	{name: "large", path: "/large", contentType: "application/octet-stream", body: pattern(largeBody), wantInBody: "0123456789",
		describe: "a 64 KB request body echoed back as a 64 KB response"},
}

var profileByName = func() map[string]profile {
	m := map[string]profile{}
	for _, p := range profiles {
		m[p.name] = p
	}
	return m
}()

// sinkPath reads any body and answers its size: the body-size sweep's route.
const sinkPath = "/sink"

// pattern returns n bytes of repeated digits.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = '0' + byte(i%10)
	}
	return b
}

// runUpstream serves the sample model on addr. One process serves every profile, so that every
// peer forwards to the same upstream.
func runUpstream(addr string) error {
	s := &fasthttp.Server{
		Handler:            serveModel,
		Name:               "bench-model",
		MaxRequestBodySize: 64 << 20,
		ReadTimeout:        time.Minute,
		IdleTimeout:        time.Minute,
	}
	return s.ListenAndServe(addr)
}

// serveModel routes by path to the profiles and the sink.
func serveModel(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/fast":
		score(ctx)
	case "/slow":
		time.Sleep(slowWait)
		score(ctx)
	case "/chunked":
		b, err := scoreJSON(ctx.PostBody())
		if err != nil {
			ctx.Error(`{"error": "want {\"data\": [[4 numbers], ...]}"}`, fasthttp.StatusBadRequest)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyStream(bytes.NewReader(b), -1) // no length: fasthttp sends it chunked
	case "/large":
		ctx.SetContentType("application/octet-stream")
		ctx.SetBody(ctx.PostBody())
	case sinkPath:
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"bytes": ` + strconv.Itoa(len(ctx.PostBody())) + "}")
	default:
		ctx.Error(`{"error": "no such route"}`, fasthttp.StatusNotFound)
	}
}

// model is a fixed logistic regression over four features, the same shape as quickstart's.
var model = struct {
	weights [4]float64
	bias    float64
}{weights: [4]float64{1.8, -0.9, 0.6, 1.1}, bias: -0.2}

type scoreRequest struct {
	Data [][4]float64 `json:"data"`
}

type scoreResponse struct {
	Probabilities []float64 `json:"probabilities"`
	Labels        []int     `json:"labels"`
}

// score answers a scoring request as a small model server would: parse, compute, encode.
func score(ctx *fasthttp.RequestCtx) {
	b, err := scoreJSON(ctx.PostBody())
	if err != nil {
		ctx.Error(`{"error": "want {\"data\": [[4 numbers], ...]}"}`, fasthttp.StatusBadRequest)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
