package config

import (
	"net"
	"strconv"
)

// H2 configures the second data-plane listener: HTTP/2 for gRPC inference, over TLS (ALPN h2)
// or in cleartext (h2c with prior knowledge, for sidecars). Only services with protocol grpc are
// reached through it, and only through it.
type H2 struct {
	// Listen is the address of the HTTP/2 listener (host:port). Default "" (off).
	Listen string `yaml:"listen"`
	// TLS serves TLS with ALPN h2, with the certificates of the tls section (which must then
	// have tls.listen and certificates or ACME). False serves cleartext h2c with prior
	// knowledge. Default false.
	TLS bool `yaml:"tls"`
}

// Enabled reports whether the HTTP/2 listener is on.
func (h H2) Enabled() bool { return h.Listen != "" }

// Service protocols.
const (
	// ProtocolHTTP is a model served over HTTP/1.1 through the listen and tls.listen listeners.
	ProtocolHTTP = "http"
	// ProtocolGRPC is a gRPC model served through the h2 listener.
	ProtocolGRPC = "grpc"
)

// GRPCServiceHeader is the gRPC metadata key that names the service of a call on the h2
// listener.
const GRPCServiceHeader = "scoregate-service"

func (s *Service) applyProtocolDefaults() {
	setDefault(&s.Protocol, ProtocolHTTP)
}

func (c *Config) validateH2(add func(path, format string, args ...any)) {
	h := c.H2
	if !h.Enabled() {
		if h.TLS {
			add("h2.listen", "required (host:port of the HTTP/2 listener) with h2.tls")
		}
		return
	}
	if err := checkHostPort(h.Listen); err != "" {
		add("h2.listen", "%q %s", h.Listen, err)
	} else if h.Listen == c.Listen || h.Listen == c.AdminListen || h.Listen == c.TLS.Listen {
		add("h2.listen", "must differ from listen, admin_listen and tls.listen")
	}
	if h.TLS && (!c.TLS.Enabled() || (len(c.TLS.Certificates) == 0 && len(c.TLS.ACME.Names) == 0 && !c.OnDemandEnabled())) {
		add("h2.tls", "needs the certificates of the tls section (tls.listen with tls.certificates or tls.acme)")
	}
}

func checkHostPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not host:port"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "has no valid port"
	}
	return ""
}

// validateProtocol checks services[i].protocol and what a gRPC service cannot have.
func (c *Config) validateProtocol(p string, svc Service, add func(path, format string, args ...any)) {
	switch svc.Protocol {
	case ProtocolHTTP:
		return
	case ProtocolGRPC:
	default:
		add(p+".protocol", "%q is not one of %s, %s", svc.Protocol, ProtocolHTTP, ProtocolGRPC)
		return
	}
	if !c.H2.Enabled() {
		add(p+".protocol", "grpc needs the HTTP/2 listener (h2.listen)")
	}
	if svc.HealthCheck.Path != "" {
		add(p+".health_check.path", "active health checks are HTTP/1.1 GETs; a grpc service relies on passive ejection")
	}
	if svc.Mirror.Deployment != "" || svc.Mirror.Percent > 0 {
		add(p+".mirror", "not supported with protocol grpc (calls are streamed)")
	}
	if len(svc.ContentTypes) > 0 {
		add(p+".content_types", "not supported with protocol grpc (the type is always application/grpc)")
	}
}
