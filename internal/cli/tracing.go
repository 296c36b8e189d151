//go:build !otpq_notrace

package cli

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/tracing"
)

// Tracing is configured by the standard OpenTelemetry environment variables
// (read through Main.Getenv, so tests configure it as users do). It is off
// unless an OTLP endpoint is set (or OTEL_TRACES_EXPORTER=otlp asks for the
// default one); spans go out as OTLP over HTTP (protobuf).
const (
	envOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envOTLPHeaders        = "OTEL_EXPORTER_OTLP_HEADERS"
	envOTLPTracesHeaders  = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
	envOTLPTimeout        = "OTEL_EXPORTER_OTLP_TIMEOUT"
	envOTLPTracesTimeout  = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
	envOTLPProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envTracesExporter     = "OTEL_TRACES_EXPORTER"
	envSDKDisabled        = "OTEL_SDK_DISABLED"
	envServiceName        = "OTEL_SERVICE_NAME"
	envResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	envTracesSampler      = "OTEL_TRACES_SAMPLER"
	envTracesSamplerArg   = "OTEL_TRACES_SAMPLER_ARG"
)

// defaultOTLPEndpoint is the OTLP/HTTP default of the specification.
const defaultOTLPEndpoint = "http://localhost:4318"

// defaultServiceName is service.name when neither OTEL_SERVICE_NAME nor
// OTEL_RESOURCE_ATTRIBUTES names the service.
const defaultServiceName = "otpq"

// tracerProvider builds the tracer provider the OTEL_* environment
// describes for the otpq command named command, or nil when tracing is off.
// A value it cannot use is a usage error naming the variable (never
// quoting a header value: it may be a credential).
func (m *Main) tracerProvider(command string) (*sdktrace.TracerProvider, error) {
	if strings.EqualFold(strings.TrimSpace(m.Getenv(envSDKDisabled)), "true") {
		return nil, nil
	}
	exporter := strings.TrimSpace(m.Getenv(envTracesExporter))
	switch exporter {
	case "", "otlp":
	case "none":
		return nil, nil
	default:
		return nil, usagef("%s: %q is not supported: otpq exports traces as otlp (or none)", envTracesExporter, exporter)
	}
	endpoint, err := m.otlpTracesURL(exporter == "otlp")
	if endpoint == "" || err != nil {
		return nil, err
	}
	for _, name := range []string{envOTLPTracesProtocol, envOTLPProtocol} {
		if v := strings.TrimSpace(m.Getenv(name)); v != "" {
			if v != "http/protobuf" {
				return nil, usagef("%s: %q is not supported: otpq exports OTLP over HTTP (http/protobuf)", name, v)
			}
			break
		}
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)}
	if name, v := m.firstEnv(envOTLPTracesHeaders, envOTLPHeaders); v != "" {
		h, err := parseKeyValues(name, v, true)
		if err != nil {
			return nil, err
		}
		opts = append(opts, otlptracehttp.WithHeaders(h))
	}
	if name, v := m.firstEnv(envOTLPTracesTimeout, envOTLPTimeout); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, usagef("%s: %q is not a positive number of milliseconds", name, v)
		}
		opts = append(opts, otlptracehttp.WithTimeout(time.Duration(ms)*time.Millisecond))
	}
	sampler, err := m.sampler()
	if err != nil {
		return nil, err
	}
	res, err := m.traceResource(command)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, usagef("tracing: %v", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithSampler(sampler)), nil
}

// firstEnv is the first of names set (trimmed), and its name.
func (m *Main) firstEnv(names ...string) (name, value string) {
	for _, n := range names {
		if v := strings.TrimSpace(m.Getenv(n)); v != "" {
			return n, v
		}
	}
	return "", ""
}

// otlpTracesURL is where spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as
// it is, else OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended; ""
// (tracing off) when neither is set, unless orDefault.
func (m *Main) otlpTracesURL(orDefault bool) (string, error) {
	name, v := m.firstEnv(envOTLPTracesEndpoint, envOTLPEndpoint)
	if v == "" {
		if !orDefault {
			return "", nil
		}
		name, v = envOTLPEndpoint, defaultOTLPEndpoint
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		// Not quoted: a URL may carry credentials.
		return "", usagef("%s: not an http:// or https:// URL with a host and no user:password@", name)
	}
	if name != envOTLPTracesEndpoint {
		u.Path = strings.TrimRight(u.Path, "/") + "/v1/traces"
	}
	return u.String(), nil
}

// parseKeyValues reads a W3C-baggage-like list, k1=v1,k2=v2, values
// percent-decoded, as OTEL_EXPORTER_OTLP_HEADERS and
// OTEL_RESOURCE_ATTRIBUTES are written. secret: never quote a value.
func parseKeyValues(name, s string, secret bool) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, usagef("%s: entry %d is not key=value", name, len(out)+1)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			if secret {
				return nil, usagef("%s: the value of %q is not percent-encoded correctly", name, k)
			}
			return nil, usagef("%s: the value of %q (%q) is not percent-encoded correctly", name, k, v)
		}
		out[k] = dv
	}
	return out, nil
}

// sampler is OTEL_TRACES_SAMPLER (with OTEL_TRACES_SAMPLER_ARG, a ratio);
// default parentbased_always_on.
func (m *Main) sampler() (sdktrace.Sampler, error) {
	name := strings.TrimSpace(m.Getenv(envTracesSampler))
	ratio := func() (float64, error) {
		arg := strings.TrimSpace(m.Getenv(envTracesSamplerArg))
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, usagef("%s: %q is not a ratio between 0 and 1", envTracesSamplerArg, arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, usagef("%s: %q is not supported (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)", envTracesSampler, name)
}

// traceResource describes the process: OTEL_RESOURCE_ATTRIBUTES, the
// service name (OTEL_SERVICE_NAME first), its version and otpq.command.
func (m *Main) traceResource(command string) (*resource.Resource, error) {
	kv := map[string]string{}
	if v := strings.TrimSpace(m.Getenv(envResourceAttributes)); v != "" {
		var err error
		if kv, err = parseKeyValues(envResourceAttributes, v, false); err != nil {
			return nil, err
		}
	}
	if v := strings.TrimSpace(m.Getenv(envServiceName)); v != "" {
		kv["service.name"] = v
	}
	if kv["service.name"] == "" {
		kv["service.name"] = defaultServiceName
	}
	if kv["service.version"] == "" {
		kv["service.version"] = strings.TrimPrefix(m.version(), "otpq ")
	}
	kv["otpq.command"] = command
	attrs := make([]attribute.KeyValue, 0, len(kv))
	for k, v := range kv {
		attrs = append(attrs, attribute.String(k, v))
	}
	return resource.NewSchemaless(attrs...), nil
}

// flushTracing exports the spans still buffered and stops tp, within 5 s;
// a failure is a warning (the command's own work is done).
func flushTracing(tp *sdktrace.TracerProvider, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans not exported", "error", err.Error())
	}
}

// rootSpan starts the span of a short-lived command (otpq send, otpq bulk)
// when tracing is on; end ends it (a no-op otherwise).
func rootSpan(ctx context.Context, tp *sdktrace.TracerProvider, name string) (context.Context, trace.Span) {
	if tp == nil {
		return ctx, trace.SpanFromContext(context.Background()) // a no-op span
	}
	return tp.Tracer(tracing.Scope).Start(ctx, name)
}

// continueTrace makes the caller's W3C trace context (traceparent and
// tracestate headers) the parent of the enqueue span, so that the send
// continues the application's trace. It records no span of its own: the
// request's URL and headers stay out of traces.
func continueTrace(h http.Handler) http.Handler {
	var w3c propagation.TraceContext
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(w3c.Extract(r.Context(), propagation.HeaderCarrier(r.Header))))
	})
}
