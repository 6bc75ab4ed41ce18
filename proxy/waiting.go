package proxy

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/scoregate/scoregate/config"
)

// UndecidableServer returns a net/http server for a data-plane listener of an instance that
// cannot check credentials yet (it waits for its store): every request gets the answer the
// gateway gives when it cannot decide, 503 with the contract's JSON error body, Retry-After,
// the request id under both names and Connection: close; a gRPC call (Content-Type
// application/grpc) gets a trailers-only UNAVAILABLE. Nothing is routed, authenticated or
// forwarded. With h2c the server speaks cleartext HTTP/2 with prior knowledge, as the HTTP/2
// listener does; otherwise HTTP/1.1. Its protocol errors go to log at debug level.
func UndecidableServer(s config.Server, h2c bool, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           http.HandlerFunc(serveUndecidable),
		ReadHeaderTimeout: s.ReadTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("component", "waiting").Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	if h2c {
		srv.Protocols.SetUnencryptedHTTP2(true)
	} else {
		srv.Protocols.SetHTTP1(true)
	}
	return srv
}

// serveUndecidable answers one request with errUndecidable.
func serveUndecidable(w http.ResponseWriter, r *http.Request) {
	var idBuf [requestIDMaxLen]byte
	id := requestID([]byte(r.Header.Get(HeaderRequestID)), idBuf[:0])
	h := w.Header()
	setIDHeaders(h, id, r, nil)
	e := errUndecidable
	if r.ProtoMajor == 2 && isGRPCContentType(r.Header.Get("Content-Type")) {
		h.Set("Content-Type", grpcContentType)
		h.Set(headerGRPCStatus, strconv.Itoa(grpcCode(e)))
		h.Set(headerGRPCMessage, encodeGRPCMessage(e.Message))
		h.Set(headerGRPCRetryPushback, strconv.Itoa(e.RetryAfter*1000))
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	h.Set("Connection", "close")
	h.Set("Content-Length", strconv.Itoa(len(e.body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(e.body)
	}
}
