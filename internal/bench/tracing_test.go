package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// exportRequest is an OTLP export of two resources whose scopes hold the
// given numbers of spans, with attributes and events in the way.
func exportRequest(t *testing.T, perScope ...[]int) []byte {
	t.Helper()
	attr := []*commonpb.KeyValue{{Key: "otpq.queue", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "critical"}}}}
	req := &coltracepb.ExportTraceServiceRequest{}
	for _, scopes := range perScope {
		rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: attr}}
		for _, n := range scopes {
			ss := &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: "s"}}
			for range n {
				ss.Spans = append(ss.Spans, &tracepb.Span{Name: "otpq.deliver", TraceId: make([]byte, 16), SpanId: make([]byte, 8),
					Attributes: attr, Events: []*tracepb.Span_Event{{Name: "e", Attributes: attr}}})
			}
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		req.ResourceSpans = append(req.ResourceSpans, rs)
	}
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	return b
}

// The sink counts the spans of OTLP exports, plain and gzipped, from the
// wire format (nested resource → scope → span fields, other fields
// skipped), answers 200, and refuses what is not an export.
func TestOTLPSinkCountsSpans(t *testing.T) {
	sink := &otlpSink{}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	post := func(body []byte, gz bool) int {
		var buf bytes.Buffer
		if gz {
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(body)
			require.NoError(t, zw.Close())
		} else {
			buf.Write(body)
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/traces", &buf)
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-protobuf")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	body := exportRequest(t, []int{3, 1}, []int{2, 0})
	n, err := countSpans(body)
	require.NoError(t, err)
	require.Equal(t, 6, n)
	require.Equal(t, http.StatusOK, post(body, false))
	require.Equal(t, http.StatusOK, post(body, true))
	spans, exports, bad := sink.counts()
	require.Equal(t, [3]int{12, 2, 0}, [3]int{spans, exports, bad})

	require.Equal(t, http.StatusBadRequest, post(body[:len(body)-3], false), "cut short")
	require.Equal(t, http.StatusBadRequest, post([]byte{0xff, 0xff, 0xff}, false))
	spans, exports, bad = sink.counts()
	require.Equal(t, [3]int{12, 2, 2}, [3]int{spans, exports, bad})
	resp, err := http.Get(srv.URL + "/v1/traces")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	sink.reset()
	spans, exports, bad = sink.counts()
	require.Equal(t, [3]int{0, 0, 0}, [3]int{spans, exports, bad})
}

// The OTLP/HTTP exporter otpq uses takes the sink's answer as a success
// and every span it exports is counted.
func TestOTLPSinkTakesTheExporter(t *testing.T) {
	sink := &otlpSink{}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"))
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	for range 5 {
		_, s := tp.Tracer("t").Start(ctx, "x")
		s.End()
	}
	require.NoError(t, tp.Shutdown(ctx))
	spans, exports, bad := sink.counts()
	require.Equal(t, 5, spans)
	require.Equal(t, 5, exports, "a syncer exports each span on its own")
	require.Zero(t, bad)
}

func run(rate float64, cpuPerDelivery time.Duration, total, spans, exports int) tracingRun {
	return tracingRun{e2eResult: e2eResult{rate: rate, workerCPU: rate * cpuPerDelivery.Seconds()}, total: total, spans: spans, exports: exports}
}

// compareTracing keeps each side's median rate and median worker CPU per
// delivery (not the CPU of the median-rate run), the ratio of each round,
// and the spans of all rounds; the changes and notes read from them.
func TestCompareTracing(t *testing.T) {
	base := []tracingRun{run(1000, 300*time.Microsecond, 0, 0, 0), run(1100, 280*time.Microsecond, 0, 0, 0), run(900, 320*time.Microsecond, 0, 0, 0)}
	on := []tracingRun{run(900, 360*time.Microsecond, 10000, 19000, 40), run(990, 330*time.Microsecond, 10000, 20000, 41), run(600, 400*time.Microsecond, 9000, 18000, 38)}
	o := compareTracing(base, on)
	require.InDelta(t, 900, o.rate, 1e-9)
	require.InDelta(t, 1000, o.baseRate, 1e-9)
	require.InDelta(t, float64(360*time.Microsecond), float64(o.cpu), float64(time.Microsecond))
	require.InDelta(t, float64(300*time.Microsecond), float64(o.baseCPU), float64(time.Microsecond))
	require.Equal(t, []string{"0.90×", "0.90×", "0.67×"}, o.pairs)
	require.InDelta(t, -10.0, o.rateChange(), 1e-9)
	require.InDelta(t, 20.0, o.cpuChange(), 0.1)
	require.Equal(t, [3]int{57000, 29000, 119}, [3]int{o.spans, o.total, o.exports})
	require.Equal(t, "against the otpq_notrace build: delivered/s -10.0%, worker CPU per delivery 360 µs vs 300 µs (+20.0%); "+
		"median of 3 interleaved rounds (round ratios 0.90×, 0.90×, 0.67×)", o.note())
	require.Equal(t, "spans received 57,000 for 29,000 deliveries (1.97 per delivery, 2 expected: otpq.deliver + POST) in 119 OTLP requests, "+
		"1,000 spans not received (dropped by the SDK's batch processor when its queue is full, or cut by the stop)", o.spansNote())
	all := compareTracing(base, []tracingRun{run(1000, time.Millisecond, 10, 20, 1)})
	require.Equal(t, "spans received 20 for 10 deliveries (2.00 per delivery, 2 expected: otpq.deliver + POST) in 1 OTLP requests", all.spansNote())
	require.Zero(t, change(5, 0), "no base, no change")
}

// The tracing target is met when tracing off keeps ≥ 98% of the notrace
// build's delivered/s on every queue; tracing on has no target.
func TestTracingTarget(t *testing.T) {
	r := newReport(Config{})
	require.Empty(t, r.tracingTargets(), "no tracing case run")
	mk := func(q string, on bool, rate float64) tracingResult {
		return tracingResult{queue: q, on: on, overhead: overhead{rate: rate, baseRate: 1000, cpu: 290 * time.Microsecond, baseCPU: 280 * time.Microsecond}}
	}
	r.tracing = []tracingResult{mk("critical", false, 985), mk("critical", true, 500), mk("bulk", false, 1010), mk("bulk", true, 400)}
	ts := r.tracingTargets()
	require.Len(t, ts, 1)
	require.True(t, ts[0].met)
	require.Equal(t, "e2e delivered/s critical 0.98× (985/s vs 1,000/s); bulk 1.01× (1,010/s vs 1,000/s)", ts[0].measured)
	require.Contains(t, ts[0].bound, "critical 290 µs vs 280 µs (+3.6%)")
	r.tracing[2] = mk("bulk", false, 979)
	require.False(t, r.tracingTargets()[0].met)
}

// No OTEL_* variable of the benchmark's environment reaches a child.
func TestChildrenGetNoOTelVariables(t *testing.T) {
	require.Equal(t, []string{"PATH=/bin", "XOTEL_A=1"}, withoutOTel([]string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://x", "PATH=/bin", "OTEL_SERVICE_NAME=s", "XOTEL_A=1"}))
}

func TestRoundOrderAlternates(t *testing.T) {
	require.Equal(t, []int{0, 1, 2}, roundOrder(0, 3))
	require.Equal(t, []int{2, 1, 0}, roundOrder(1, 3))
	require.Equal(t, []int{0, 1, 2}, roundOrder(2, 3))
}
