//go:build !otpq_notrace

package cli

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/receipts"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes each export
// request's protobuf and keeps its spans with their service name.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service string
	res     []*commonpb.KeyValue
	span    *tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans = append(o.spans, receivedSpan{service: service, res: rs.GetResource().GetAttributes(), span: s})
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (o *otlpReceiver) received() []receivedSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.spans)
}

// render prints the spans of one trace as the receiver decoded them: a
// tree by parent span ID, each span with its kind, duration, service,
// attributes and links (by the linked span's name).
func render(spans []receivedSpan) string {
	byID := map[string]receivedSpan{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.span.GetSpanId())] = s
	}
	children := map[string][]receivedSpan{}
	var roots []receivedSpan
	for _, s := range spans {
		p := hex.EncodeToString(s.span.GetParentSpanId())
		if _, ok := byID[p]; ok {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s receivedSpan, depth int)
	walk = func(s receivedSpan, depth int) {
		sp := s.span
		d := time.Duration(sp.GetEndTimeUnixNano() - sp.GetStartTimeUnixNano())
		fmt.Fprintf(&b, "%s%s [%s, %s, service %s, span %x, parent %x]", strings.Repeat("    ", depth), sp.GetName(),
			strings.TrimPrefix(sp.GetKind().String(), "SPAN_KIND_"), d.Round(10*time.Microsecond), s.service, sp.GetSpanId(), sp.GetParentSpanId())
		for _, l := range sp.GetLinks() {
			name := "another trace"
			if ls, ok := byID[hex.EncodeToString(l.GetSpanId())]; ok {
				name = ls.span.GetName()
			}
			fmt.Fprintf(&b, " link→%s", name)
		}
		if st := sp.GetStatus(); st.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			fmt.Fprintf(&b, " status=ERROR(%s)", st.GetMessage())
		}
		b.WriteString("\n")
		for _, kv := range sp.GetAttributes() {
			fmt.Fprintf(&b, "%s    %s=%s\n", strings.Repeat("    ", depth), kv.GetKey(), anyText(kv.GetValue()))
		}
		kids := children[hex.EncodeToString(sp.GetSpanId())]
		slices.SortFunc(kids, func(a, b receivedSpan) int {
			return int(a.span.GetStartTimeUnixNano()) - int(b.span.GetStartTimeUnixNano())
		})
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

func anyText(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

// otpq send and otpq worker, configured by OTEL_* variables only, export
// one trace over OTLP/HTTP to the receiver: send's root span, the enqueue,
// the delivery attempt and the provider request, with the service name
// set; neither the code nor the full destination is in any attribute.
func TestTracingExportsOverOTLP(t *testing.T) {
	b := setup(t)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: "CANARY-SECRET"})
	srv := httptest.NewServer(fake)
	defer srv.Close()
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "key", "CANARY-SECRET", srv.URL
	b.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.URL
	b.env["OTEL_SERVICE_NAME"] = "otpq-e2e"

	werr, stop := b.startWorker(t, "--concurrency", "4", "--http-addr", "")
	defer stop()
	const to = "+8613800000001"
	r := b.run(t, context.Background(), "send", "--to", to, "--code", canaryCode, "--template", "login")
	require.Equal(t, ExitOK, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	require.Eventually(t, func() bool {
		return strings.Contains(b.run(t, context.Background(), "status", id).stdout, "state:          completed\n")
	}, 15*time.Second, 20*time.Millisecond, "never delivered; worker log:\n%s", werr.String())
	stop() // the worker flushes its spans on the way out

	spans := recv.received()
	t.Logf("the trace as the receiver decoded it:\n%s", render(spans))
	names := map[string]receivedSpan{}
	for _, s := range spans {
		require.Equal(t, "otpq-e2e", s.service, "span %s", s.span.GetName())
		require.Equal(t, spans[0].span.GetTraceId(), s.span.GetTraceId(), "span %s is in another trace", s.span.GetName())
		names[s.span.GetName()] = s
	}
	require.Len(t, spans, 4, render(spans))
	root, enq, del, post := names["otpq send"].span, names["otpq.enqueue"].span, names["otpq.deliver"].span, names["POST"].span
	require.NotNil(t, root, render(spans))
	require.NotNil(t, enq, render(spans))
	require.NotNil(t, del, render(spans))
	require.NotNil(t, post, render(spans))
	require.Empty(t, root.GetParentSpanId())
	require.Equal(t, root.GetSpanId(), enq.GetParentSpanId())
	require.Equal(t, enq.GetSpanId(), del.GetParentSpanId(), "the attempt continues the enqueue across Redis")
	require.Len(t, del.GetLinks(), 1)
	require.Equal(t, enq.GetSpanId(), del.GetLinks()[0].GetSpanId())
	require.Equal(t, del.GetSpanId(), post.GetParentSpanId())
	require.Equal(t, tracepb.Span_SPAN_KIND_CLIENT, post.GetKind())
	require.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, del.GetKind())
	require.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, enq.GetKind())
	require.Equal(t, "worker", resAttr(names["otpq.deliver"].res, "otpq.command"))
	require.Equal(t, "send", resAttr(names["otpq send"].res, "otpq.command"))

	// Canary search: nothing the receiver got holds the code, the secret
	// or the full destination.
	noCanary(t, spans, canaryCode, "CANARY-SECRET", to)
}

// noCanary requires that no span name, status, attribute, event or
// resource attribute the receiver got holds any of secrets.
func noCanary(t *testing.T, spans []receivedSpan, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		texts := []string{s.span.GetName(), s.span.GetStatus().GetMessage()}
		kvs := slices.Concat(s.span.GetAttributes(), s.res)
		for _, e := range s.span.GetEvents() {
			texts = append(texts, e.GetName())
			kvs = append(kvs, e.GetAttributes()...)
		}
		for _, l := range s.span.GetLinks() {
			kvs = append(kvs, l.GetAttributes()...)
		}
		for _, kv := range kvs {
			texts = append(texts, kv.GetKey()+"="+anyText(kv.GetValue()))
		}
		for _, text := range texts {
			for _, secret := range secrets {
				require.NotContains(t, text, secret, "span %s", s.span.GetName())
			}
		}
	}
}

// otpq dev is traced by the same OTEL_* variables: every sample send is a
// trace of its own (the enqueue, each attempt under it with its provider
// call, the receipts under the attempt that sent the code, linked to the
// callback request's server span, a trace of its own), exported when it
// stops, from service "otpq" and command "dev", and no span holds a
// sample's code or full destination.
func TestDevTraced(t *testing.T) {
	callbackSpan := "POST " + receipts.Path
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()
	b := bundle{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL}}
	r := b.run(t, context.Background(), "dev", "--once")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "Tracing: on (OTEL_* variables)")

	spans := recv.received()
	byID := map[string]*tracepb.Span{}
	count := map[string]int{}
	traces := map[string]bool{}
	for _, s := range spans {
		require.Equal(t, "otpq", s.service)
		require.Equal(t, "dev", resAttr(s.res, "otpq.command"))
		byID[string(s.span.GetSpanId())] = s.span
		count[s.span.GetName()]++
		if s.span.GetName() != callbackSpan {
			traces[string(s.span.GetTraceId())] = true
		}
	}
	parentOf := func(s *tracepb.Span) string {
		p := byID[string(s.GetParentSpanId())]
		require.NotNil(t, p, "span %s has no parent among the exported spans:\n%s", s.GetName(), render(spans))
		require.Equal(t, s.GetTraceId(), p.GetTraceId())
		return p.GetName()
	}
	linked := 0
	for _, s := range spans {
		switch s.span.GetName() {
		case "otpq.enqueue":
			require.Empty(t, s.span.GetParentSpanId(), "a sample's send starts its trace")
		case "otpq.deliver":
			require.Equal(t, "otpq.enqueue", parentOf(s.span))
		case "POST":
			require.Equal(t, "otpq.deliver", parentOf(s.span))
		case "otpq.receipt":
			require.Equal(t, "otpq.deliver", parentOf(s.span))
			// The attempt, and the callback request when the receipt was
			// applied inside it (not when it was held for its link).
			links := s.span.GetLinks()
			require.NotEmpty(t, links)
			require.LessOrEqual(t, len(links), 2)
			require.Equal(t, "otpq.deliver", byID[string(links[0].GetSpanId())].GetName())
			if len(links) == 2 {
				require.Equal(t, callbackSpan, byID[string(links[1].GetSpanId())].GetName())
				linked++
			}
		case callbackSpan:
			require.Empty(t, s.span.GetParentSpanId(), "each callback request is a trace of its own")
			require.Equal(t, tracepb.Span_SPAN_KIND_SERVER, s.span.GetKind())
		default:
			t.Fatalf("unexpected span %s", s.span.GetName())
		}
	}
	require.Equal(t, len(devSamples), count["otpq.enqueue"], render(spans))
	require.Len(t, traces, len(devSamples), "one trace per sample")
	require.Equal(t, len(devSamples)+1, count["otpq.deliver"], "one sample is retried once")
	require.Equal(t, len(devSamples)+1, count["POST"])
	require.GreaterOrEqual(t, count["otpq.receipt"], 3, "delivered, failed and the fallback's stages at least")
	require.GreaterOrEqual(t, count[callbackSpan], 3)
	require.Positive(t, linked, "no receipt links its callback request")
	var secrets []string
	for i, s := range devSamples {
		secrets = append(secrets, s.to)
		if i > 0 { // "100000" could be a substring of a message_id
			secrets = append(secrets, fmt.Sprintf("%06d", 100000+i*111111))
		}
	}
	noCanary(t, spans, secrets...)
}

func resAttr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return anyText(kv.GetValue())
		}
	}
	return ""
}

// Tracing is off without an endpoint; the standard variables are read,
// and values otpq cannot use are usage errors naming the variable.
func TestTracingConfiguration(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		on   bool
		err  string
	}{
		{"nothing set", nil, false, ""},
		{"service name alone", map[string]string{"OTEL_SERVICE_NAME": "x"}, false, ""},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, ""},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/v1/traces"}, true, ""},
		{"exporter otlp, default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, ""},
		{"exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, ""},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, ""},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, false, "OTEL_EXPORTER_OTLP_PROTOCOL: \"grpc\" is not supported"},
		{"zipkin", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, "OTEL_TRACES_EXPORTER: \"zipkin\" is not supported"},
		{"bad endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, false, "OTEL_EXPORTER_OTLP_ENDPOINT: not an http:// or https:// URL"},
		{"bad sampler", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "sometimes"}, false, "OTEL_TRACES_SAMPLER: \"sometimes\" is not supported"},
		{"bad ratio", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, false, "OTEL_TRACES_SAMPLER_ARG: \"2\" is not a ratio"},
		{"bad header, value not quoted", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%zzSECRET"}, false, "OTEL_EXPORTER_OTLP_HEADERS: the value of \"authorization\" is not percent-encoded correctly"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &Main{Getenv: func(k string) string { return c.env[k] }}
			tp, err := m.tracerProvider("worker")
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				require.NotContains(t, err.Error(), "SECRET")
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.on, tp != nil)
			if tp != nil {
				require.NoError(t, tp.Shutdown(context.Background()))
			}
		})
	}
}

// The traces endpoint is used as it is; the general one gets /v1/traces.
func TestOTLPTracesURL(t *testing.T) {
	for env, want := range map[[2]string]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}:              "http://c:4318/v1/traces",
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/otlp/"}:        "http://c:4318/otlp/v1/traces",
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c/custom"}:    "https://c/custom",
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/tr"}: "http://c:4318/v1/tr",
	} {
		m := &Main{Getenv: func(k string) string {
			if k == env[0] {
				return env[1]
			}
			return ""
		}}
		got, err := m.otlpTracesURL(false)
		require.NoError(t, err)
		require.Equal(t, want, got, "%s=%s", env[0], env[1])
	}
}

// otpq api, traced, continues the caller's trace: the task it queues
// carries the enqueue span's context in the trace of the request's
// traceparent header.
func TestAPIContinuesCallersTrace(t *testing.T) {
	b := setup(t)
	collector := httptest.NewServer(&otlpReceiver{})
	t.Cleanup(collector.Close) // after otpq api's stop, which flushes its spans
	b.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.URL
	base, log := b.startAPI(t, "--insecure-no-auth")
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, err := http.NewRequest(http.MethodPost, base+"/v1/codes", strings.NewReader(`{"to":"+8618701235678","code":"`+canaryCode+`","template":{"id":"login"}}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+spanID+"-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s\n%s", body, log.String())
	var ans map[string]string
	require.NoError(t, json.Unmarshal(body, &ans))

	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number})
	defer ins.Close()
	info, err := ins.GetTaskInfo("critical", ans["message_id"])
	require.NoError(t, err)
	tp := info.Headers["traceparent"]
	require.Regexp(t, "^00-"+traceID+"-[0-9a-f]{16}-01$", tp, "the caller's trace")
	require.NotContains(t, tp, spanID, "the enqueue span's own ID, not the caller's")
}
