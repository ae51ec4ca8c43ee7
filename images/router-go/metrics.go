package main

// Prometheus metrics of the router in the text exposition format (GET /metrics), with the same
// names and labels as the Python router's. Per-request series are atomics; labelled counters of
// rare events sit behind one mutex.

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 180}

var routeWaitBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10}

type histogram struct {
	bounds []float64
	hits   []atomic.Int64 // last slot: above the largest bound
	sumNs  atomic.Int64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, hits: make([]atomic.Int64, len(bounds)+1)}
}

func (h *histogram) observe(d time.Duration) {
	seconds := d.Seconds()
	i := sort.SearchFloat64s(h.bounds, seconds)
	h.hits[i].Add(1)
	h.sumNs.Add(int64(d))
}

func (h *histogram) render(b *strings.Builder, name, labels string) {
	var cumulative int64
	sep := ""
	if labels != "" {
		sep = ","
	}
	for i := range h.hits {
		cumulative += h.hits[i].Load()
		bound := "+Inf"
		if i < len(h.bounds) {
			bound = formatFloat(h.bounds[i])
		}
		fmt.Fprintf(b, "%s_bucket{%s%sle=\"%s\"} %d.0\n", name, labels, sep, bound, cumulative)
	}
	braces := ""
	if labels != "" {
		braces = "{" + labels + "}"
	}
	fmt.Fprintf(b, "%s_count%s %d.0\n", name, braces, cumulative)
	fmt.Fprintf(b, "%s_sum%s %s\n", name, braces, formatFloat(float64(h.sumNs.Load())/1e9))
}

// formatFloat writes a float as Prometheus clients do ("0.005", "1.0", "+Inf").
func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// Metrics is every series the router exports.
type Metrics struct {
	byCode              [600]atomic.Int64
	latency             *histogram
	clientConnections   atomic.Int64
	upstreamConnections atomic.Int64
	upstreamConnects    atomic.Int64
	websockets          atomic.Int64
	targets             func() int // routable sandbox pods (the pod index), nil in dns mode
	evictions           atomic.Int64

	mu             sync.Mutex
	upstreamErrors map[string]int64
	rejected       map[string]int64
	watchErrors    map[string]int64
	routeWaits     map[string]*histogram
}

func newMetrics() *Metrics {
	return &Metrics{latency: newHistogram(latencyBuckets), upstreamErrors: map[string]int64{},
		rejected: map[string]int64{}, watchErrors: map[string]int64{},
		routeWaits: map[string]*histogram{"found": newHistogram(routeWaitBuckets), "not_found": newHistogram(routeWaitBuckets)}}
}

// record counts one answered request and its latency.
func (m *Metrics) record(status int, d time.Duration) {
	if status >= 0 && status < len(m.byCode) {
		m.byCode[status].Add(1)
	}
	m.latency.observe(d)
}

func (m *Metrics) count(table map[string]int64, key string) {
	m.mu.Lock()
	table[key]++
	m.mu.Unlock()
}

func (m *Metrics) upstreamError(kind string) { m.count(m.upstreamErrors, kind) }
func (m *Metrics) reject(reason string)      { m.count(m.rejected, reason) }
func (m *Metrics) watchError(kind string)    { m.count(m.watchErrors, kind) }

func (m *Metrics) routeWait(outcome string, d time.Duration) { m.routeWaits[outcome].observe(d) }

const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

func renderCounterTable(b *strings.Builder, name, help, label string, table map[string]int64) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "%s{%s=%q} %d.0\n", name, label, k, table[k])
	}
}

func gauge(b *strings.Builder, name, help, kind string, value int64) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %d.0\n", name, help, name, kind, name, value)
}

// render returns the metrics in the text exposition format.
func (m *Metrics) render() []byte {
	var b strings.Builder
	b.WriteString("# HELP sandbox_router_requests_total Requests answered by the router, by HTTP status code.\n" +
		"# TYPE sandbox_router_requests_total counter\n")
	for code := range m.byCode {
		if n := m.byCode[code].Load(); n > 0 {
			fmt.Fprintf(&b, "sandbox_router_requests_total{code=\"%d\"} %d.0\n", code, n)
		}
	}
	b.WriteString("# HELP sandbox_router_request_duration_seconds Time from the end of the request headers to the end of the response.\n" +
		"# TYPE sandbox_router_request_duration_seconds histogram\n")
	m.latency.render(&b, "sandbox_router_request_duration_seconds", "")
	m.mu.Lock()
	renderCounterTable(&b, "sandbox_router_upstream_errors_total", "Failures talking to sandboxes, by kind.", "kind", m.upstreamErrors)
	renderCounterTable(&b, "sandbox_router_rejected_total", "Requests or connections refused before reaching a sandbox, by reason.", "reason", m.rejected)
	renderCounterTable(&b, "sandbox_router_watch_errors_total", "Failed or expired list/watch requests to the Kubernetes API, by kind.", "kind", m.watchErrors)
	m.mu.Unlock()
	gauge(&b, "sandbox_router_client_connections", "Open client connections.", "gauge", m.clientConnections.Load())
	gauge(&b, "sandbox_router_upstream_connections", "Open upstream connections (active and idle).", "gauge", m.upstreamConnections.Load())
	gauge(&b, "sandbox_router_upstream_connections_opened_total", "Upstream connections opened (low relative to requests = pooling works).", "counter", m.upstreamConnects.Load())
	gauge(&b, "sandbox_router_websocket_tunnels", "Open WebSocket tunnels.", "gauge", m.websockets.Load())
	var targets int64
	if m.targets != nil {
		targets = int64(m.targets())
	}
	gauge(&b, "sandbox_router_sandbox_targets", "Sandbox pods the watch resolver can route to.", "gauge", targets)
	gauge(&b, "sandbox_router_evicted_connections_total", "Idle or still-unsent client connections closed to admit a new one at the global connection limit.", "counter", m.evictions.Load())
	b.WriteString("# HELP sandbox_router_route_wait_seconds Time requests for a sandbox not yet in the pod index waited for it, by outcome.\n" +
		"# TYPE sandbox_router_route_wait_seconds histogram\n")
	for _, outcome := range []string{"found", "not_found"} {
		m.routeWaits[outcome].render(&b, "sandbox_router_route_wait_seconds", `outcome="`+outcome+`"`)
	}
	return []byte(b.String())
}
