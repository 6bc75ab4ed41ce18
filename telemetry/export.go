package telemetry

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/scoregate/scoregate/config"
)

// otlpFromEnv chooses the OTLP exporter: none unless OTEL_TRACES_EXPORTER is "otlp", or is unset
// and an OTLP endpoint is set. The protocol comes from OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf", the default, gets the gateway's own OTLP/HTTP
// exporter (otlpHTTP, configured from the other OTEL_EXPORTER_OTLP_* variables here); "grpc" gets
// the library's client, not yet started, which reads them itself.
func otlpFromEnv(getenv func(string) string, res *resource.Resource, log *slog.Logger) (otlptrace.Client, *otlpHTTP, error) {
	kind := getenv("OTEL_TRACES_EXPORTER")
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	switch {
	case kind == "otlp" || (kind == "" && endpoint):
	case kind == "" || kind == "none":
		return nil, nil, nil
	default:
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER %q: use otlp or none (and telemetry.traces_file for a file)", kind)
	}
	variable := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	protocol := getenv(variable)
	if protocol == "" {
		variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
		protocol = getenv(variable)
	}
	switch protocol {
	case "", "http/protobuf":
		exp, err := newOTLPHTTP(getenv, os.ReadFile, res, log)
		return nil, exp, err
	case "grpc":
		return otlptracegrpc.NewClient(), nil, nil
	}
	return nil, nil, fmt.Errorf("%s %q: use http/protobuf or grpc", variable, protocol)
}

// fileExporters is the exporter writing the JSON-lines file of telemetry.traces_file, if any.
func fileExporters(cfg config.Telemetry) ([]sdktrace.SpanExporter, error) {
	if cfg.TracesFile == "" {
		return nil, nil
	}
	f, err := os.OpenFile(cfg.TracesFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("telemetry.traces_file: %w", err)
	}
	e, err := stdouttrace.New(stdouttrace.WithWriter(f))
	if err != nil {
		f.Close()
		return nil, err
	}
	return []sdktrace.SpanExporter{fileExporter{SpanExporter: e, f: f}}, nil
}

// fileExporter closes its file when shut down.
type fileExporter struct {
	sdktrace.SpanExporter
	f *os.File
}

func (e fileExporter) Shutdown(ctx context.Context) error {
	err := e.SpanExporter.Shutdown(ctx)
	if cerr := e.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// newResource describes the gateway: service.name "scoregate" unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise.
func newResource(ctx context.Context) (*resource.Resource, error) {
	env, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("reading OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return resource.Merge(resource.NewSchemaless(attribute.String("service.name", "scoregate")), env)
}

// sampler decides which requests get a span, after OTEL_TRACES_SAMPLER: always_on, always_off,
// traceidratio, and their parentbased_ forms (the default is parentbased_always_on).
type sampler struct {
	parentBased bool
	threshold   uint64 // sample when the trace id's low 8 bytes are below it; max means all
	all         bool
}

func samplerFromEnv(getenv func(string) string) (sampler, error) {
	name := getenv("OTEL_TRACES_SAMPLER")
	if name == "" {
		name = "parentbased_always_on"
	}
	s := sampler{}
	base, ok := strings.CutPrefix(name, "parentbased_")
	s.parentBased = ok
	switch base {
	case "always_on":
		s.all = true
	case "always_off":
	case "traceidratio":
		ratio := 1.0
		if arg := getenv("OTEL_TRACES_SAMPLER_ARG"); arg != "" {
			r, err := strconv.ParseFloat(arg, 64)
			if err != nil || !(r >= 0 && r <= 1) { // NaN too
				return s, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q: a ratio from 0 to 1", arg)
			}
			ratio = r
		}
		if ratio >= 1 {
			s.all = true
		} else {
			s.threshold = uint64(ratio * (1 << 63) * 2)
		}
	default:
		return s, fmt.Errorf("OTEL_TRACES_SAMPLER %q is not supported", name)
	}
	return s, nil
}

func (s sampler) sample(traceID [16]byte, hasParent, parentSampled bool) bool {
	if s.parentBased && hasParent {
		return parentSampled
	}
	return s.all || binary.BigEndian.Uint64(traceID[8:]) < s.threshold
}
