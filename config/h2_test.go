package config

import (
	"strings"
	"testing"
)

// TestValidateH2 checks the h2 listener and services[].protocol: each problem names its field.
func TestValidateH2(t *testing.T) {
	grpcService := strings.Replace(validBase(), "auth: key", "auth: key\n    protocol: grpc", 1)
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"h2c listener with a grpc service", "h2:\n  listen: 127.0.0.1:8081\n" + grpcService, nil},
		{"protocol defaults to http", validBase(), nil},
		{"unknown protocol", strings.Replace(validBase(), "auth: key", "auth: key\n    protocol: grpcs", 1), []string{`services[0].protocol: "grpcs" is not one of http, grpc`}},
		{"grpc service without the h2 listener", grpcService, []string{"services[0].protocol: grpc needs the HTTP/2 listener"}},
		{"h2 listener without a port", "h2:\n  listen: localhost\n" + validBase(), []string{`h2.listen: "localhost" is not host:port`}},
		{"h2 listener on the plain address", "listen: 127.0.0.1:8080\nh2:\n  listen: 127.0.0.1:8080\n" + validBase(), []string{"h2.listen: must differ"}},
		{"h2 tls without the tls section", "h2:\n  listen: 127.0.0.1:8081\n  tls: true\n" + validBase(), []string{"h2.tls: needs the certificates of the tls section"}},
		{"h2 tls without a listener", "h2:\n  tls: true\n" + validBase(), []string{"h2.listen: required"}},
		{"h2 tls with the tls section", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    names: [a.example.com]\nh2:\n  listen: 127.0.0.1:8081\n  tls: true\n" + validBase(), nil},
		{"grpc service with an HTTP health check", "h2:\n  listen: 127.0.0.1:8081\n" + grpcService + "    health_check:\n      path: /\n", []string{"services[0].health_check.path: active health checks are HTTP/1.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), noEnv)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = c.Validate()
			var probs Problems
			if err != nil {
				var ok bool
				if probs, ok = err.(Problems); !ok {
					t.Fatalf("Validate = %v (%T), want Problems", err, err)
				}
			}
			if len(probs) != len(tt.want) {
				t.Fatalf("got problems %v, want %v", probs, tt.want)
			}
			for i, p := range probs {
				if !strings.HasPrefix(p.String(), tt.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, p, tt.want[i])
				}
			}
		})
	}
}
