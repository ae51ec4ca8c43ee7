package main

// Tests of routing.go: the resolver cases of tests/unit/test_router_routing.py (dns mode), the
// resolution cases of tests/unit/test_router_sandboxes.py (watch mode, against a stand-in pod
// index), and every X-Sandbox-* and pod-IP row of tests/component/test_router_hostile.py.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hdrs builds routing headers from "id", "namespace", "port", "pod_ip", "timeout" pairs.
func hdrs(pairs ...string) *RoutingHeaders {
	index := map[string]int{"id": HeaderID, "namespace": HeaderNamespace, "port": HeaderPort,
		"pod_ip": HeaderPodIP, "timeout": HeaderTimeout}
	h := &RoutingHeaders{}
	for i := 0; i+1 < len(pairs); i += 2 {
		n, ok := index[pairs[i]]
		if !ok {
			panic("unknown routing header " + pairs[i])
		}
		h.Values[n], h.Present[n] = pairs[i+1], true
	}
	return h
}

// dnsResolver is test_router_routing.py's resolver(): dns mode, any port, own address
// 10.9.9.9, the router itself on 127.0.0.1:8080.
func dnsResolver(change func(*Settings)) *Resolver {
	s := defaultSettings()
	s.AuthToken, s.AuthEnabled = strings.Repeat("t", 20), true
	s.Resolver, s.SandboxPorts = "dns", nil
	if change != nil {
		change(s)
	}
	policy := NewAddressPolicy(s.AllowedPodCIDRs, s.AllowLoopbackPodIP, []string{"10.9.9.9"})
	policy.AddOwnEndpoint(netip.MustParseAddr("127.0.0.1"), 8080)
	return NewResolver(s, policy, nil)
}

func mustResolve(t *testing.T, r *Resolver, h *RoutingHeaders) *Target {
	t.Helper()
	target, req, err := r.Resolve(h)
	if err != nil || req != nil || target == nil {
		t.Fatalf("Resolve(%v) = %v, %v, %v", h.Values, target, req, err)
	}
	return target
}

func TestDNSTargetUsesDefaultsAndClusterDomain(t *testing.T) {
	target := mustResolve(t, dnsResolver(func(s *Settings) { s.ClusterDomain = "corp.example" }), hdrs("id", "sbx-1"))
	if target.Host != "sbx-1.default.svc.corp.example" || target.Port != 8888 || target.IsIP {
		t.Errorf("target %+v", target)
	}
	if target.Authority != "sbx-1.default.svc.corp.example:8888" || target.Timeout != 180*time.Second ||
		target.RequestedTimeout != 0 {
		t.Errorf("target %+v", target)
	}
}

func TestPodIPTargetWithNamespacePortAndTimeout(t *testing.T) {
	target := mustResolve(t, dnsResolver(nil), hdrs("id", "a", "namespace", "team-1", "port", "9000",
		"pod_ip", "10.244.1.7", "timeout", "2.5"))
	if target.Host != "10.244.1.7" || target.Port != 9000 || !target.IsIP || target.Timeout != 2500*time.Millisecond ||
		target.RequestedTimeout != 2500*time.Millisecond {
		t.Errorf("target %+v", target)
	}
	if target.Namespace != "team-1" || target.Authority != "10.244.1.7:9000" || target.SandboxID != "a" {
		t.Errorf("target %+v", target)
	}
}

func TestIPv6PodIPIsBracketedAndMappedIPv4Unwrapped(t *testing.T) {
	r := dnsResolver(nil)
	if got := mustResolve(t, r, hdrs("id", "a", "pod_ip", "fd00:10:244::5")).Authority; got != "[fd00:10:244::5]:8888" {
		t.Errorf("authority %q", got)
	}
	if got := mustResolve(t, r, hdrs("id", "a", "pod_ip", "::ffff:10.1.2.3")).Host; got != "10.1.2.3" {
		t.Errorf("host %q", got)
	}
}

func TestTimeoutIsCappedAtProxyTimeout(t *testing.T) {
	r := dnsResolver(func(s *Settings) { s.ProxyTimeout = 30 * time.Second })
	if got := mustResolve(t, r, hdrs("id", "a", "timeout", "600")); got.Timeout != 30*time.Second ||
		got.RequestedTimeout != 30*time.Second {
		t.Errorf("target %+v", got)
	}
}

func TestInvalidHeadersAreRefusedWithTheirDetail(t *testing.T) {
	for _, c := range []struct {
		headers []string
		detail  string
	}{
		{nil, "X-Sandbox-ID header is required."},
		{[]string{"id", ""}, "X-Sandbox-ID header is required."},
		{[]string{"id", "Upper"}, "Invalid sandbox ID format."},
		{[]string{"id", "a.b"}, "Invalid sandbox ID format."},
		{[]string{"id", strings.Repeat("a", 64)}, "Invalid sandbox ID format."},
		{[]string{"id", "a\n"}, "Invalid sandbox ID format."},
		{[]string{"id", "-a"}, "Invalid sandbox ID format."},
		{[]string{"id", "a", "namespace", "kube_system"}, "Invalid namespace format."},
		{[]string{"id", "a", "namespace", "a.b"}, "Invalid namespace format."},
		{[]string{"id", "a", "port", "0"}, "Invalid port format."},
		{[]string{"id", "a", "port", "65536"}, "Invalid port format."},
		{[]string{"id", "a", "port", "08888"}, "Invalid port format."},
		{[]string{"id", "a", "port", "+1"}, "Invalid port format."},
		{[]string{"id", "a", "timeout", "nan"}, "Invalid timeout format."},
		{[]string{"id", "a", "timeout", "0"}, "Invalid timeout format."},
		{[]string{"id", "a", "timeout", "-1"}, "Invalid timeout format."},
		{[]string{"id", "a", "timeout", "1e309"}, "Invalid timeout format."},
		{[]string{"id", "a", "pod_ip", "10.0.0.1%eth0"}, "Invalid target IP address format."},
		{[]string{"id", "a", "pod_ip", "127.1"}, "Invalid target IP address format."},
		{[]string{"id", "a", "pod_ip", "010.0.0.1"}, "Invalid target IP address format."},
	} {
		target, req, err := dnsResolver(nil).Resolve(hdrs(c.headers...))
		if err == nil || target != nil || req != nil {
			t.Errorf("%v: %v, %v, %v", c.headers, target, req, err)
			continue
		}
		if err.Status != 400 || err.Detail != c.detail || err.Reason != "routing" || err.Unavailable {
			t.Errorf("%v: %#v, want 400 %q", c.headers, err, c.detail)
		}
	}
}

func TestChecksRunInRoutingPysOrder(t *testing.T) {
	// Each header is judged before the next: the first bad one in routing.py's order answers.
	r := dnsResolver(func(s *Settings) { s.SandboxNamespaces = []string{"ns"}; s.SandboxPorts = []int{8888} })
	for _, c := range []struct {
		headers []string
		detail  string
	}{
		{[]string{"id", "A", "namespace", "B", "port", "0"}, "Invalid sandbox ID format."},
		{[]string{"id", "a", "namespace", "B", "port", "0"}, "Invalid namespace format."},
		{[]string{"id", "a", "port", "0", "timeout", "x"}, "Invalid port format."},
		{[]string{"id", "a", "timeout", "x", "pod_ip", "x"}, "Invalid timeout format."},
		{[]string{"id", "a", "pod_ip", "x", "namespace", "other"}, "Invalid target IP address format."},
		{[]string{"id", "a", "namespace", "other", "port", "1"}, "Could not connect to the backend sandbox: a"},
		{[]string{"id", "a", "namespace", "ns", "port", "1"}, "Port 1 is not a sandbox port this router proxies to."},
		{[]string{"id", "a", "namespace", "ns", "pod_ip", "169.254.169.254"},
			"Invalid target IP address: it is link-local (metadata endpoints live there)."},
	} {
		_, _, err := r.Resolve(hdrs(c.headers...))
		if err == nil || err.Detail != c.detail {
			t.Errorf("%v: %v, want %q", c.headers, err, c.detail)
		}
	}
	_, _, err := r.Resolve(hdrs("id", "a", "namespace", "other"))
	if err.Status != 502 || err.Reason != "unknown_sandbox" || err.Unavailable {
		t.Errorf("namespace not proxied to: %#v", err)
	}
}

func TestRefusalsAreNotPoisonedByTheCache(t *testing.T) {
	r := dnsResolver(nil)
	for range 3 {
		if _, _, err := r.Resolve(hdrs("id", "BAD")); err == nil {
			t.Fatal("BAD accepted")
		}
	}
	if got := mustResolve(t, r, hdrs("id", "good")); got.SandboxID != "good" {
		t.Fatalf("target %+v", got)
	}
}

func TestMemoKeyIsTheWholeHeaderTuple(t *testing.T) {
	r := dnsResolver(nil)
	// An absent namespace and an empty one are different requests (default vs invalid), and a
	// stale value behind Present=false is ignored.
	if _, _, err := r.Resolve(hdrs("id", "a", "namespace", "")); err == nil || err.Detail != "Invalid namespace format." {
		t.Fatalf("empty namespace: %v", err)
	}
	stale := hdrs("id", "a")
	stale.Values[HeaderNamespace] = "Bad_NS"
	if got := mustResolve(t, r, stale); got.Namespace != "default" {
		t.Fatalf("target %+v", got)
	}
	first := mustResolve(t, r, hdrs("id", "a", "timeout", "5"))
	if again := mustResolve(t, r, hdrs("id", "a", "timeout", "5")); again != first {
		t.Error("the same tuple was validated twice")
	}
	if other := mustResolve(t, r, hdrs("id", "a", "timeout", "6")); other == first || other.Timeout != 6*time.Second {
		t.Errorf("another timeout got %+v", other)
	}
}

func TestMemoIsBounded(t *testing.T) {
	r := dnsResolver(nil)
	for i := range 3 * resolveCacheSize {
		mustResolve(t, r, hdrs("id", "sbx-"+strconv.Itoa(i)))
	}
	total := 0
	for i := range r.shards {
		for _, e := range r.shards[i].entries {
			for ; e != nil; e = e.next {
				total++
			}
		}
		if r.shards[i].count > resolveCacheSize/resolveCacheShards {
			t.Errorf("shard %d holds %d tuples", i, r.shards[i].count)
		}
	}
	if total > resolveCacheSize {
		t.Fatalf("%d memoised tuples, bound %d", total, resolveCacheSize)
	}
	// Values no valid request has are validated every time rather than pinned in the memo.
	long := strings.Repeat("a", 1000)
	for range 10 {
		r.Resolve(hdrs("id", long))
	}
	for i := range r.shards {
		for _, e := range r.shards[i].entries {
			for ; e != nil; e = e.next {
				if e.key.Values[HeaderID] == long {
					t.Fatal("a 1000-byte ID was memoised")
				}
			}
		}
	}
}

func TestMemoDoesNotKeepTheCallersBuffer(t *testing.T) {
	r := dnsResolver(nil)
	buffer := []byte("sbx-buffer")
	target := mustResolve(t, r, hdrs("id", string(buffer)))
	copy(buffer, "XXXXXXXXXX")
	if target.SandboxID != "sbx-buffer" || mustResolve(t, r, hdrs("id", "sbx-buffer")) != target {
		t.Fatal("memoised target changed with the caller's buffer")
	}
}

// --- watch mode -------------------------------------------------------------------------------

const testNS = "agent-sandbox-demo"

// fakeRoutes stands in for the pod index (pods.go).
type fakeRoutes struct {
	mu     sync.Mutex
	routes map[[2]string]*SandboxRoute
	added  chan struct{}
}

func newFakeRoutes(routes ...*SandboxRoute) *fakeRoutes {
	f := &fakeRoutes{routes: map[[2]string]*SandboxRoute{}, added: make(chan struct{}, 16)}
	for _, route := range routes {
		f.put(route)
	}
	return f
}

func (f *fakeRoutes) put(route *SandboxRoute) {
	f.mu.Lock()
	f.routes[[2]string{route.Namespace, route.Sandbox}] = route
	f.mu.Unlock()
	select {
	case f.added <- struct{}{}:
	default:
	}
}

func (f *fakeRoutes) Get(namespace, name string) *SandboxRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[[2]string{namespace, name}]
}

func (f *fakeRoutes) Wait(ctx context.Context, namespace, name string, timeout time.Duration) *SandboxRoute {
	deadline := time.After(timeout)
	for {
		if route := f.Get(namespace, name); route != nil {
			return route
		}
		select {
		case <-f.added:
		case <-deadline:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func sandboxRoute(name, namespace, uid string, addresses ...string) *SandboxRoute {
	route := &SandboxRoute{Namespace: namespace, Sandbox: name, Pod: name, PodUID: uid}
	for _, a := range addresses {
		route.Addresses = append(route.Addresses, netip.MustParseAddr(a))
	}
	return route
}

// watchResolver is test_router_sandboxes.py's watch_resolver: namespaces agent-sandbox-demo
// and team-b, port 8888, own address 10.244.0.9.
func watchResolver(routes SandboxRoutes) *Resolver {
	s := defaultSettings()
	s.Resolver, s.SandboxNamespaces, s.SandboxPorts = "watch", []string{testNS, "team-b"}, []int{8888}
	return NewResolver(s, NewAddressPolicy(nil, false, []string{"10.244.0.9"}), routes)
}

func TestWatchTargetIsThePodAddressNotTheCallers(t *testing.T) {
	r := watchResolver(newFakeRoutes(sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5")))
	target := mustResolve(t, r, hdrs("id", "sbx-a", "namespace", testNS, "port", "8888", "pod_ip", "169.254.169.254"))
	if target.Host != "10.244.1.5" || target.Port != 8888 || !target.IsIP {
		t.Errorf("target %+v", target)
	}
	target = mustResolve(t, r, hdrs("id", "sbx-a", "namespace", testNS, "timeout", "7"))
	if target.Host != "10.244.1.5" || target.Timeout != 7*time.Second || target.RequestedTimeout != 7*time.Second {
		t.Errorf("target %+v", target)
	}
}

func TestPodIPHeaderChoosesAmongThePodsOwnAddresses(t *testing.T) {
	r := watchResolver(newFakeRoutes(sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5", "fd00:10:244::5")))
	target := mustResolve(t, r, hdrs("id", "sbx-a", "namespace", testNS, "pod_ip", "fd00:10:244::5"))
	if target.Host != "fd00:10:244::5" || target.Authority != "[fd00:10:244::5]:8888" {
		t.Errorf("target %+v", target)
	}
}

func TestPoolKeySeparatesPodsThatReuseAnAddress(t *testing.T) {
	index := newFakeRoutes(sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5"))
	r := watchResolver(index)
	first := mustResolve(t, r, hdrs("id", "sbx-a", "namespace", testNS))
	index.put(sandboxRoute("sbx-a", testNS, "u-2", "10.244.1.5"))
	second := mustResolve(t, r, hdrs("id", "sbx-a", "namespace", testNS))
	if second.PoolKey == first.PoolKey {
		t.Fatalf("pool key %q for both pods", first.PoolKey)
	}
	for _, want := range []string{"10.244.1.5", "8888", "u-2"} {
		if !strings.Contains(second.PoolKey, want) {
			t.Errorf("pool key %q lacks %q", second.PoolKey, want)
		}
	}
}

func TestWatchModeRefusals(t *testing.T) {
	// The review's SSRF examples: the API server, kube-dns, another namespace, a non-sandbox
	// port. ("web" is a pod the index does not route: not in this stand-in at all.)
	r := watchResolver(newFakeRoutes(sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5")))
	for _, c := range []struct {
		headers     []string
		status      int
		detail      string
		unavailable bool
	}{
		{[]string{"id", "kubernetes", "namespace", "default", "port", "443"}, 502, "Could not connect to the backend sandbox", false},
		{[]string{"id", "kube-dns", "namespace", "kube-system", "port", "53"}, 502, "Could not connect to the backend sandbox", false},
		{[]string{"id", "sbx-a", "namespace", "other-team"}, 502, "Could not connect to the backend sandbox: sbx-a", false},
		{[]string{"id", "sbx-a", "namespace", testNS, "port", "10250"}, 400, "Port 10250 is not a sandbox port", false},
		{[]string{"id", "web", "namespace", testNS, "pod_ip", "10.244.1.8"}, 502, "Could not connect to the backend sandbox: web", true},
		{[]string{"id", "ghost", "namespace", testNS, "pod_ip", "10.244.1.5"}, 502, "Could not connect to the backend sandbox: ghost", true},
		{[]string{"id", "sbx-a", "namespace", testNS, "pod_ip", "not-an-ip"}, 400, "Invalid target IP address format.", false},
		{[]string{"id", "Bad", "namespace", testNS}, 400, "Invalid sandbox ID format.", false},
	} {
		target, req, err := r.Resolve(hdrs(c.headers...))
		if err == nil || target != nil {
			t.Errorf("%v: %v, %v", c.headers, target, err)
			continue
		}
		if err.Status != c.status || !strings.HasPrefix(err.Detail, c.detail) || err.Unavailable != c.unavailable ||
			(req != nil) != c.unavailable {
			t.Errorf("%v: %#v (request %v), want %d %q unavailable=%v", c.headers, err, req, c.status, c.detail, c.unavailable)
		}
		if want := map[int]string{400: "routing", 502: "unknown_sandbox"}[c.status]; err.Reason != want {
			t.Errorf("%v: reason %q, want %q", c.headers, err.Reason, want)
		}
	}
}

func TestUnknownSandboxCanBeWaitedFor(t *testing.T) {
	index := newFakeRoutes()
	r := watchResolver(index)
	target, req, err := r.Resolve(hdrs("id", "late", "namespace", testNS))
	if target != nil || req == nil || err == nil || !err.Unavailable ||
		err.Detail != "Could not connect to the backend sandbox: late" {
		t.Fatalf("Resolve: %v, %v, %#v", target, req, err)
	}
	if _, again, _ := r.Resolve(hdrs("id", "late", "namespace", testNS)); again != req {
		t.Error("the request of one header tuple is not interned")
	}
	time.AfterFunc(50*time.Millisecond, func() { index.put(sandboxRoute("late", testNS, "u-3", "10.244.3.3")) })
	found, werr := r.WaitFor(context.Background(), req, 2*time.Second)
	if werr != nil || found.Host != "10.244.3.3" {
		t.Fatalf("WaitFor: %v, %v", found, werr)
	}
	_, missing, _ := r.Resolve(hdrs("id", "never", "namespace", testNS))
	if found, werr := r.WaitFor(context.Background(), missing, 20*time.Millisecond); found != nil || werr == nil ||
		werr.Status != 502 || werr.Detail != "Could not connect to the backend sandbox: never" || werr.Reason != "unknown_sandbox" {
		t.Fatalf("WaitFor of a sandbox that never comes: %v, %#v", found, werr)
	}
}

func TestAPodAddressThePolicyRefusesIsNotUsed(t *testing.T) {
	r := watchResolver(newFakeRoutes(sandboxRoute("sbx-own", testNS, "u-1", "10.244.0.9"),
		sandboxRoute("sbx-meta", testNS, "u-2", "169.254.169.254")))
	var logged bytes.Buffer
	r.log = slog.New(slog.NewTextHandler(&logged, nil))
	for _, name := range []string{"sbx-own", "sbx-meta"} {
		for range 2 { // the second answer comes from the route's memo
			target, req, err := r.Resolve(hdrs("id", name, "namespace", testNS))
			if target != nil || req != nil || err == nil || err.Status != 502 || err.Unavailable ||
				err.Detail != "Could not connect to the backend sandbox: "+name {
				t.Fatalf("%s: %v, %v, %#v", name, target, req, err)
			}
		}
	}
	for _, want := range []string{
		"sandbox pod agent-sandbox-demo/sbx-own has address 10.244.0.9, which the address policy refuses " +
			"(it is the router's own address)",
		"sandbox pod agent-sandbox-demo/sbx-meta has address 169.254.169.254, which the address policy refuses " +
			"(it is link-local (metadata endpoints live there))",
	} {
		if strings.Count(logged.String(), want) != 1 { // once: the refusal is memoised on the route
			t.Errorf("log %q lacks one %q", logged.String(), want)
		}
	}
}

func TestTargetsMemoisedOnARouteAreBounded(t *testing.T) {
	route := sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5")
	r := watchResolver(newFakeRoutes(route))
	for i := range 5 * maxTargetsPerPod {
		mustResolve(t, r, hdrs("id", "sbx-a", "namespace", testNS, "timeout", strconv.Itoa(i+1)))
	}
	count := 0
	route.Targets.Range(func(any, any) bool { count++; return true })
	if count > maxTargetsPerPod {
		t.Fatalf("%d targets memoised on one route, bound %d", count, maxTargetsPerPod)
	}
}

func TestResolveIsSafeForConcurrentUse(t *testing.T) {
	index := newFakeRoutes()
	for i := range 20 {
		index.put(sandboxRoute(fmt.Sprintf("sbx-%d", i), testNS, fmt.Sprintf("u-%d", i), fmt.Sprintf("10.244.1.%d", i+1)))
	}
	r := watchResolver(index)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 2000 {
				i := (g + j) % 20
				h := hdrs("id", fmt.Sprintf("sbx-%d", i), "namespace", testNS, "timeout", strconv.Itoa(j%100+1))
				target, _, err := r.Resolve(h)
				if err != nil || target.Host != fmt.Sprintf("10.244.1.%d", i+1) {
					t.Errorf("sbx-%d: %v, %v", i, target, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestResolveAllocatesNothingOnAMemoHit(t *testing.T) {
	watch := watchResolver(newFakeRoutes(sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5")))
	for name, c := range map[string]struct {
		r *Resolver
		h *RoutingHeaders
	}{
		"dns":          {dnsResolver(nil), hdrs("id", "sbx-1", "pod_ip", "10.244.1.7", "port", "8888", "timeout", "5")},
		"dns refusal":  {dnsResolver(nil), hdrs("id", "sbx-1", "pod_ip", "169.254.169.254")},
		"watch":        {watch, hdrs("id", "sbx-a", "namespace", testNS, "port", "8888", "timeout", "5")},
		"watch absent": {watch, hdrs("id", "ghost", "namespace", testNS)},
	} {
		c.r.Resolve(c.h)
		if allocs := testing.AllocsPerRun(200, func() { c.r.Resolve(c.h) }); allocs != 0 {
			t.Errorf("%s: %v allocations per memoised Resolve", name, allocs)
		}
	}
}

func BenchmarkResolveWatch(b *testing.B) {
	r := watchResolver(newFakeRoutes(sandboxRoute("sbx-a", testNS, "u-1", "10.244.1.5")))
	h := hdrs("id", "sbx-a", "namespace", testNS, "port", "8888")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if target, _, _ := r.Resolve(h); target == nil {
				b.Fatal("no target")
			}
		}
	})
}

// --- tests/component/test_router_hostile.py ------------------------------------------------------

// TestHostileRoutingHeaders runs every X-Sandbox-* and pod-IP row of the hostile table
// against the resolver configured as that test's routers are. The rows that send a routing
// header twice are refused by the head parser before the resolver sees the request, and the
// Authorization and request-level rows are not the resolver's; they are left out.
func TestHostileRoutingHeaders(t *testing.T) {
	const routerPort, upstreamPort = 18080, 18081
	build := func(env map[string]string) *Resolver {
		env = with(map[string]string{"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": strconv.Itoa(routerPort),
			"ROUTER_LOG_LEVEL": "WARNING", "ROUTER_RESOLVER": "dns", "ROUTER_AUTH_TOKEN": "hostile-test-token",
			"ROUTER_CONNECT_TIMEOUT_SECONDS": "2"}, flatten(env)...)
		s := mustLoad(t, env)
		policy := NewAddressPolicy(s.AllowedPodCIDRs, s.AllowLoopbackPodIP, s.OwnAddresses)
		policy.AddOwnEndpoint(netip.MustParseAddr(s.Host), s.Port)
		return NewResolver(s, policy, nil)
	}
	routers := map[string]*Resolver{
		"main": build(map[string]string{"ROUTER_ALLOW_LOOPBACK_POD_IP": "true",
			"ROUTER_ALLOWED_POD_CIDRS": "127.0.0.0/24,::1/128", "ROUTER_MAX_REQUEST_BODY_BYTES": "1048576"}),
		"strict": build(map[string]string{"ROUTER_ALLOW_LOOPBACK_POD_IP": "false",
			"ROUTER_ALLOWED_POD_CIDRS": "10.0.0.0/8"}),
	}
	// base is the table's valid request with some headers changed ("" removes one, as None).
	const remove = "\x00remove"
	base := func(changes ...string) *RoutingHeaders {
		values := map[string]string{"id": "sbx-hostile", "namespace": "default", "port": strconv.Itoa(upstreamPort),
			"pod_ip": "127.0.0.1"}
		for i := 0; i+1 < len(changes); i += 2 {
			if changes[i+1] == remove {
				delete(values, changes[i])
			} else {
				values[changes[i]] = changes[i+1]
			}
		}
		var pairs []string
		for _, name := range []string{"id", "namespace", "port", "pod_ip", "timeout"} {
			if v, ok := values[name]; ok {
				pairs = append(pairs, name, v)
			}
		}
		return hdrs(pairs...)
	}
	rows := []struct {
		name, router, detail string
		headers              *RoutingHeaders
	}{
		// X-Sandbox-ID
		{"id-missing", "main", "X-Sandbox-ID header is required", base("id", remove)},
		{"id-empty", "main", "X-Sandbox-ID header is required", base("id", "")},
		{"id-uppercase", "main", "Invalid sandbox ID", base("id", "SBX")},
		{"id-underscore", "main", "Invalid sandbox ID", base("id", "sbx_1")},
		{"id-leading-hyphen", "main", "Invalid sandbox ID", base("id", "-sbx")},
		{"id-trailing-hyphen", "main", "Invalid sandbox ID", base("id", "sbx-")},
		{"id-dns-injection", "main", "Invalid sandbox ID", base("id", "sbx.evil.com")},
		{"id-too-long", "main", "Invalid sandbox ID", base("id", strings.Repeat("a", 64))},
		{"id-path-traversal", "main", "Invalid sandbox ID", base("id", "sbx/../x")},
		{"id-percent-encoded", "main", "Invalid sandbox ID", base("id", "sbx%2e")},
		{"id-inner-space", "main", "Invalid sandbox ID", base("id", "sb x")},
		{"id-latin1-byte", "main", "Invalid sandbox ID", base("id", "sbx\xe9")},
		{"id-with-port", "main", "Invalid sandbox ID", base("id", "sbx:80")},
		{"id-userinfo", "main", "Invalid sandbox ID", base("id", "sbx@evil.com")},
		// X-Sandbox-Namespace
		{"ns-uppercase", "main", "Invalid namespace", base("namespace", "Default")},
		{"ns-underscore", "main", "Invalid namespace", base("namespace", "kube_system")},
		{"ns-dns-injection", "main", "Invalid namespace", base("namespace", "ns.evil.com")},
		{"ns-empty", "main", "Invalid namespace", base("namespace", "")},
		{"ns-too-long", "main", "Invalid namespace", base("namespace", strings.Repeat("n", 64))},
		{"ns-traversal", "main", "Invalid namespace", base("namespace", "../ns")},
		// X-Sandbox-Port
		{"port-zero", "main", "Invalid port", base("port", "0")},
		{"port-too-big", "main", "Invalid port", base("port", "65536")},
		{"port-negative", "main", "Invalid port", base("port", "-1")},
		{"port-alpha", "main", "Invalid port", base("port", "88a")},
		{"port-hex", "main", "Invalid port", base("port", "0x22b8")},
		{"port-empty", "main", "Invalid port", base("port", "")},
		{"port-leading-zero", "main", "Invalid port", base("port", "08888")},
		{"port-decimal", "main", "Invalid port", base("port", "8888.0")},
		{"port-exponent", "main", "Invalid port", base("port", "1e3")},
		{"port-huge", "main", "Invalid port", base("port", strings.Repeat("9", 20))},
		{"port-plus", "main", "Invalid port", base("port", "+8888")},
		{"port-fullwidth", "main", "Invalid port", base("port", "\xef\xbc\x98\xef\xbc\x98")},
		// X-Sandbox-Pod-IP
		{"ip-garbage", "main", "Invalid target IP", base("pod_ip", "not-an-ip")},
		{"ip-hostname", "main", "Invalid target IP", base("pod_ip", "localhost")},
		{"ip-unspecified-v4", "main", "unspecified", base("pod_ip", "0.0.0.0")},
		{"ip-unspecified-v6", "main", "unspecified", base("pod_ip", "::")},
		{"ip-this-network", "main", "unspecified", base("pod_ip", "0.1.2.3")},
		{"ip-metadata", "main", "link-local", base("pod_ip", "169.254.169.254")},
		{"ip-mapped-metadata", "main", "link-local", base("pod_ip", "::ffff:169.254.169.254")},
		{"ip-link-local-v6", "main", "link-local", base("pod_ip", "fe80::1")},
		{"ip-zone-id", "main", "Invalid target IP", base("pod_ip", "fe80::1%eth0")},
		{"ip-multicast-v4", "main", "multicast", base("pod_ip", "224.0.0.1")},
		{"ip-multicast-v6", "main", "multicast", base("pod_ip", "ff02::1")},
		{"ip-broadcast", "main", "broadcast", base("pod_ip", "255.255.255.255")},
		{"ip-reserved", "main", "reserved", base("pod_ip", "240.0.0.1")},
		{"ip-aws-imds-v6", "main", "metadata", base("pod_ip", "fd00:ec2::254")},
		{"ip-alibaba-metadata", "main", "metadata", base("pod_ip", "100.100.100.200")},
		{"ip-azure-wireserver", "main", "metadata", base("pod_ip", "168.63.129.16")},
		{"ip-outside-pod-cidr", "main", "outside the configured pod CIDRs", base("pod_ip", "127.0.1.1")},
		{"ip-public-outside-cidr", "main", "outside the configured pod CIDRs", base("pod_ip", "8.8.8.8")},
		{"ip-gcp-metadata-v6", "main", "metadata", base("pod_ip", "fd20:ce::254")},
		{"ip-6to4-metadata", "main", "embeds an IPv4 address", base("pod_ip", "2002:a9fe:a9fe::")},
		{"ip-nat64-metadata", "main", "embeds an IPv4 address", base("pod_ip", "64:ff9b::a9fe:a9fe")},
		{"ip-teredo", "main", "embeds an IPv4 address", base("pod_ip", "2001:0:4136:e378:8000:63bf:3fff:fdd2")},
		{"ip-cgnat", "main", "shared address space", base("pod_ip", "100.64.0.1")},
		{"ip-ietf-protocol", "main", "special-purpose", base("pod_ip", "192.0.0.170")},
		{"ip-benchmarking", "main", "benchmarking", base("pod_ip", "198.18.0.1")},
		{"ip-documentation", "main", "documentation", base("pod_ip", "192.0.2.10")},
		{"ip-class-e", "main", "reserved", base("pod_ip", "240.0.0.1")},
		{"ip-this-network-high", "main", "unspecified", base("pod_ip", "0.255.255.254")},
		{"ip-shorthand", "main", "Invalid target IP", base("pod_ip", "127.1")},
		{"ip-hex-octet", "main", "Invalid target IP", base("pod_ip", "0x7f.0.0.1")},
		{"ip-leading-zero", "main", "Invalid target IP", base("pod_ip", "127.000.0.1")},
		{"ip-with-port", "main", "Invalid target IP", base("pod_ip", "127.0.0.1:8080")},
		{"ip-bracketed", "main", "Invalid target IP", base("pod_ip", "[::1]")},
		{"ip-cidr", "main", "Invalid target IP", base("pod_ip", "127.0.0.0/8")},
		{"ip-inner-space", "main", "Invalid target IP", base("pod_ip", "127.0.0.1 8")},
		{"ip-url", "main", "Invalid target IP", base("pod_ip", "http://127.0.0.1")},
		{"ip-empty", "main", "Invalid target IP", base("pod_ip", "")},
		{"ip-router-itself", "main", "router itself", base("port", strconv.Itoa(routerPort))},
		// X-Sandbox-Timeout
		{"timeout-alpha", "main", "Invalid timeout", base("timeout", "abc")},
		{"timeout-negative", "main", "Invalid timeout", base("timeout", "-5")},
		{"timeout-zero", "main", "Invalid timeout", base("timeout", "0")},
		{"timeout-nan", "main", "Invalid timeout", base("timeout", "nan")},
		{"timeout-inf", "main", "Invalid timeout", base("timeout", "inf")},
		{"timeout-overflow", "main", "Invalid timeout", base("timeout", "1e400")},
		{"timeout-unit", "main", "Invalid timeout", base("timeout", "5s")},
		// The production default: loopback refused.
		{"strict-loopback-v4", "strict", "loopback", base()},
		{"strict-loopback-127-2", "strict", "loopback", base("pod_ip", "127.0.0.2")},
		{"strict-loopback-v6", "strict", "loopback", base("pod_ip", "::1")},
		{"strict-mapped-loopback", "strict", "loopback", base("pod_ip", "::ffff:127.0.0.1")},
	}
	for _, row := range rows {
		target, req, err := routers[row.router].Resolve(row.headers)
		if target != nil || req != nil || err == nil {
			t.Errorf("%s: not refused: %v, %v, %v", row.name, target, req, err)
			continue
		}
		if err.Status != 400 || !strings.Contains(err.Detail, row.detail) || err.Reason != "routing" {
			t.Errorf("%s: %d %q (%s), want 400 with %q", row.name, err.Status, err.Detail, err.Reason, row.detail)
		}
	}
	// The control request of the table is valid: the main router proxies it.
	target := mustResolve(t, routers["main"], base())
	if target.Authority != "127.0.0.1:"+strconv.Itoa(upstreamPort) || !target.IsIP {
		t.Fatalf("control request: %+v", target)
	}
}

func flatten(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k, v)
	}
	return out
}
