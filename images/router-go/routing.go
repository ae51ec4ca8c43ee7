package main

// routing.go owns the resolver: it turns the X-Sandbox-* routing headers of one request into a
// Target (or a RoutingError), the Go twin of RouteResolver in sandbox_router/routing.py, with
// the same checks in the same order and the same detail texts.
//
// watch mode (production): the target is the pod of the named Sandbox as the cluster's own
// objects describe it (SandboxRoutes, the pod index), in an allowed namespace, on an allowed
// port; a caller's X-Sandbox-Pod-IP only chooses among that pod's own addresses. dns mode
// (legacy, local tests): the caller's X-Sandbox-Pod-IP or the sandbox's Service name. Both
// apply the address policy to the address finally used.
//
// Resolve is the hot path of every request. Validation is pure and a client sends the same
// header values on every request, so its result is memoised per distinct header tuple, and in
// watch mode the target chosen on a pod is memoised on that pod's (immutable) route: a repeated
// request costs two map look-ups and allocates nothing.

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultNamespace = "default"
	defaultPort      = 8888

	// resolveCacheSize bounds the memoised header tuples (routing.py's lru_cache size).
	resolveCacheSize = 4096
	// resolveCacheShards spreads the memo over locks so that concurrent requests for different
	// sandboxes do not contend; each shard holds resolveCacheSize/resolveCacheShards tuples.
	resolveCacheShards = 16
	// maxCachedValueLen: a tuple with a longer header value is validated but not memoised. No
	// valid value is that long (IDs are at most 63 bytes, a pod IP 45), so memoising such
	// tuples would only let a caller pin up to 4096 large header values in memory.
	maxCachedValueLen = 96

	// maxTargetsPerPod bounds the targets memoised on one route (MAX_TARGETS_PER_POD): a caller
	// cycling timeout values must not grow it without bound.
	maxTargetsPerPod = 64
)

// SandboxRoutes is what the resolver needs from the sandbox pod index (pods.go).
type SandboxRoutes interface {
	// Get returns the route of a sandbox, nil when no routable pod is known. It must not
	// allocate: it is on the hot path.
	Get(namespace, name string) *SandboxRoute
	// Wait returns the route once known, or nil after timeout (or when ctx ends).
	Wait(ctx context.Context, namespace, name string, timeout time.Duration) *SandboxRoute
}

// The shared refusals of the routing headers (callers must not modify them).
var (
	errIDRequired       = routingError("X-Sandbox-ID header is required.")
	errInvalidID        = routingError("Invalid sandbox ID format.")
	errInvalidNamespace = routingError("Invalid namespace format.")
	errInvalidPort      = routingError("Invalid port format.")
)

func routingError(detail string) *RoutingError {
	return &RoutingError{Status: 400, Detail: detail, Reason: "routing"}
}

// UnknownSandbox is the refusal for a sandbox the router cannot reach: the same 502 the router
// has always given for a sandbox that does not exist (DNS failure, connection refused), so that
// a caller learns nothing about which names, namespaces or pods exist.
func UnknownSandbox(id string) *RoutingError {
	return &RoutingError{Status: 502, Detail: "Could not connect to the backend sandbox: " + id,
		Reason: "unknown_sandbox"}
}

// sandboxUnavailable is UnknownSandbox marked as "not in the pod index (yet)": the caller may
// wait for the sandbox before answering with it.
func sandboxUnavailable(id string) *RoutingError {
	err := UnknownSandbox(id)
	err.Unavailable = true
	return err
}

// resolution is the memoised outcome of validating one header tuple: exactly one of target
// (dns mode), request (watch mode) or err is set.
type resolution struct {
	target  *Target
	request *RouteRequest
	err     *RoutingError
	// unavailable is the answer while request's sandbox is not in the pod index, built once.
	unavailable *RoutingError
}

// memoEntry is one memoised header tuple. Entries whose tuples hash alike are chained.
type memoEntry struct {
	key  RoutingHeaders
	res  resolution
	next *memoEntry
}

// resolveShard is one lock and its part of the memo, keyed by the tuple's hash (computed once
// per request: a map keyed by the tuple itself would hash all of it a second time).
type resolveShard struct {
	mu      sync.RWMutex
	entries map[uint64]*memoEntry
	count   int      // tuples in entries
	_       [64]byte // keeps neighbouring shards' locks off one cache line
}

func (s *resolveShard) lookup(sum uint64, key *RoutingHeaders) (resolution, bool) {
	for e := s.entries[sum]; e != nil; e = e.next {
		if e.key == *key {
			return e.res, true
		}
	}
	return resolution{}, false
}

// Resolver validates routing headers and chooses targets. Safe for concurrent use.
type Resolver struct {
	policy       *AddressPolicy
	routes       SandboxRoutes // nil in dns mode
	watch        bool
	dnsSuffix    string              // ".svc.<cluster domain>"
	namespaces   map[string]struct{} // empty: any namespace
	ports        map[int]struct{}    // nil: any port
	proxyTimeout time.Duration
	log          *slog.Logger // nil: slog.Default() at the time of logging

	seed   maphash.Seed
	shards [resolveCacheShards]resolveShard
}

// NewResolver builds the resolver for s. routes is the pod index in watch mode and nil in dns
// mode; watch mode without it is a programming error and panics.
func NewResolver(s *Settings, policy *AddressPolicy, routes SandboxRoutes) *Resolver {
	r := &Resolver{
		policy:       policy,
		routes:       routes,
		watch:        s.Resolver == "watch",
		dnsSuffix:    ".svc." + s.ClusterDomain,
		namespaces:   make(map[string]struct{}, len(s.SandboxNamespaces)),
		proxyTimeout: s.ProxyTimeout,
		seed:         maphash.MakeSeed(),
	}
	if r.watch && routes == nil {
		panic("sandbox router: watch mode needs the sandbox pod index")
	}
	for _, namespace := range s.SandboxNamespaces {
		r.namespaces[namespace] = struct{}{}
	}
	if s.SandboxPorts != nil {
		r.ports = make(map[int]struct{}, len(s.SandboxPorts))
		for _, port := range s.SandboxPorts {
			r.ports[port] = struct{}{}
		}
	}
	for i := range r.shards {
		r.shards[i].entries = make(map[uint64]*memoEntry)
	}
	return r
}

// Resolve validates the routing headers of one request and returns its target. On refusal it
// returns (nil, nil, err); in watch mode, when the sandbox is not in the pod index, it returns
// (nil, req, err) with err.Unavailable set, and the caller may WaitFor(req). The errors are
// shared: callers must not modify them.
func (r *Resolver) Resolve(h *RoutingHeaders) (*Target, *RouteRequest, *RoutingError) {
	res := r.validated(h)
	switch {
	case res.target != nil:
		return res.target, nil, nil
	case res.request != nil:
		route := r.routes.Get(res.request.Namespace, res.request.SandboxID)
		if route == nil {
			return nil, res.request, res.unavailable
		}
		target, err := r.podTarget(route, res.request)
		return target, nil, err
	default:
		return nil, nil, res.err
	}
}

// WaitFor waits up to timeout for the sandbox of req (from Resolve) to become routable and
// returns its target; the error is UnknownSandbox (with Unavailable set) when it does not.
func (r *Resolver) WaitFor(ctx context.Context, req *RouteRequest, timeout time.Duration) (*Target, *RoutingError) {
	if r.routes == nil {
		return nil, sandboxUnavailable(req.SandboxID)
	}
	route := r.routes.Wait(ctx, req.Namespace, req.SandboxID, timeout)
	if route == nil {
		return nil, sandboxUnavailable(req.SandboxID)
	}
	return r.podTarget(route, req)
}

// validated is validate, memoised per distinct header tuple.
func (r *Resolver) validated(h *RoutingHeaders) resolution {
	// The key holds only the values that are present, so a stale value behind a false
	// Present flag does not make a second entry for the same request.
	key := *h
	cacheable := true
	for i := range key.Values {
		if !key.Present[i] {
			key.Values[i] = ""
		} else if len(key.Values[i]) > maxCachedValueLen {
			cacheable = false
		}
	}
	if !cacheable {
		return r.validate(cloneHeaders(&key))
	}
	sum := r.hash(&key)
	shard := &r.shards[sum%resolveCacheShards]
	shard.mu.RLock()
	res, ok := shard.lookup(sum, &key)
	shard.mu.RUnlock()
	if ok {
		return res
	}

	// A miss: copy the values (they may point into the connection's read buffer) and validate.
	stored := cloneHeaders(&key)
	res = r.validate(stored)
	shard.mu.Lock()
	defer shard.mu.Unlock()
	if existing, ok := shard.lookup(sum, stored); ok {
		return existing // another request validated it meanwhile: keep one RouteRequest per tuple
	}
	if shard.count >= resolveCacheSize/resolveCacheShards {
		for evicted, e := range shard.entries { // map order is random: this evicts arbitrary tuples
			for ; e != nil; e = e.next {
				shard.count--
			}
			delete(shard.entries, evicted)
			break
		}
	}
	shard.entries[sum] = &memoEntry{key: *stored, res: res, next: shard.entries[sum]}
	shard.count++
	return res
}

// hash is the memo's hash of a header tuple (which values are present, and what they are).
func (r *Resolver) hash(key *RoutingHeaders) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	for i := range key.Values {
		if key.Present[i] {
			h.WriteByte(byte(1 + i))
			h.WriteString(key.Values[i])
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

func cloneHeaders(h *RoutingHeaders) *RoutingHeaders {
	c := *h
	for i := range c.Values {
		c.Values[i] = strings.Clone(c.Values[i])
	}
	return &c
}

// validate checks the routing headers in routing.py's order: ID, namespace, port, timeout, pod
// IP, then the namespace and port restrictions. The values are raw header bytes; only ASCII is
// valid anywhere, as with Python's latin-1 decoding and ASCII-only patterns.
func (r *Resolver) validate(h *RoutingHeaders) resolution {
	id := h.Values[HeaderID]
	if !h.Present[HeaderID] || id == "" {
		return resolution{err: errIDRequired}
	}
	if !isDNS1123Label(id) {
		return resolution{err: errInvalidID}
	}
	namespace := defaultNamespace
	if h.Present[HeaderNamespace] {
		namespace = h.Values[HeaderNamespace]
	}
	if !isDNS1123Label(namespace) {
		return resolution{err: errInvalidNamespace}
	}
	port := defaultPort
	if h.Present[HeaderPort] {
		var ok bool
		if port, ok = parsePortHeader(h.Values[HeaderPort]); !ok {
			return resolution{err: errInvalidPort}
		}
	}
	timeout, requested := r.proxyTimeout, time.Duration(0)
	if h.Present[HeaderTimeout] {
		var err *RoutingError
		if timeout, err = ParseTimeout(h.Values[HeaderTimeout], r.proxyTimeout); err != nil {
			return resolution{err: err}
		}
		requested = timeout
	}
	var address netip.Addr
	if h.Present[HeaderPodIP] {
		var ok bool
		if address, ok = parsePodIP(h.Values[HeaderPodIP]); !ok {
			return resolution{err: errInvalidPodIP}
		}
	}
	if len(r.namespaces) > 0 {
		if _, ok := r.namespaces[namespace]; !ok {
			return resolution{err: UnknownSandbox(id)} // the same answer as a sandbox that does not exist
		}
	}
	if r.ports != nil {
		if _, ok := r.ports[port]; !ok {
			return resolution{err: routingError(fmt.Sprintf("Port %d is not a sandbox port this router proxies to.", port))}
		}
	}

	if r.watch {
		request := &RouteRequest{SandboxID: id, Namespace: namespace, Port: port, PodIP: address,
			Timeout: timeout, RequestedTimeout: requested}
		return resolution{request: request, unavailable: sandboxUnavailable(id)}
	}
	if address.IsValid() {
		if reason := r.policy.Refusal(address, port); reason != "" {
			return resolution{err: routingError("Invalid target IP address: " + reason + ".")}
		}
		return resolution{target: newTarget(id, namespace, address.String(), port, true, timeout, requested, "")}
	}
	host := id + "." + namespace + r.dnsSuffix
	return resolution{target: newTarget(id, namespace, host, port, false, timeout, requested, "")}
}

// podTarget is the target for req on the sandbox pod of route, memoised on the route (which is
// replaced, memo and all, when the pod changes).
func (r *Resolver) podTarget(route *SandboxRoute, req *RouteRequest) (*Target, *RoutingError) {
	if memo, ok := route.Targets.Load(req); ok {
		return unpackTarget(memo) // the hot path
	}
	var chosen any = r.chooseAddress(route, req)
	if atomic.AddInt64(&route.TargetCount, 1) > maxTargetsPerPod {
		// Approximate under concurrency (a racing store may go uncounted until the next
		// clear), which is all the bound needs.
		route.Targets.Clear()
		atomic.StoreInt64(&route.TargetCount, 1)
	}
	if memo, loaded := route.Targets.LoadOrStore(req, chosen); loaded {
		atomic.AddInt64(&route.TargetCount, -1)
		chosen = memo
	}
	return unpackTarget(chosen)
}

func unpackTarget(memo any) (*Target, *RoutingError) {
	switch v := memo.(type) {
	case *Target:
		return v, nil
	case *RoutingError:
		return nil, v
	}
	panic("sandbox router: unexpected memoised target")
}

// chooseAddress picks the pod address for req and checks it against the policy. The caller's
// pod IP may pick one of the pod's own addresses (dual stack); anything else it names is
// ignored: the cluster, not the caller, says where the sandbox is. The result is a *Target or
// a *RoutingError.
func (r *Resolver) chooseAddress(route *SandboxRoute, req *RouteRequest) any {
	if len(route.Addresses) == 0 {
		return UnknownSandbox(req.SandboxID) // the index never builds such a route
	}
	address := route.Addresses[0]
	if req.PodIP.IsValid() {
		for _, a := range route.Addresses {
			if a == req.PodIP {
				address = a
				break
			}
		}
	}
	if reason := r.policy.Refusal(address, req.Port); reason != "" {
		logger := r.log
		if logger == nil {
			logger = slog.Default()
		}
		logger.Warn(fmt.Sprintf("sandbox pod %s/%s has address %s, which the address policy refuses (%s)",
			route.Namespace, route.Pod, address, reason))
		return UnknownSandbox(req.SandboxID)
	}
	return newTarget(req.SandboxID, req.Namespace, address.String(), req.Port, true, req.Timeout,
		req.RequestedTimeout, route.PodUID)
}

// newTarget builds a target with its Host header value and pool key precomputed. The pod UID is
// part of the pool key so that a pooled connection is never handed to a request for another
// pod that happens to get the same IP address later.
func newTarget(id, namespace, host string, port int, isIP bool, timeout, requested time.Duration,
	podUID string) *Target {
	authority := host + ":" + strconv.Itoa(port)
	if strings.IndexByte(host, ':') >= 0 {
		authority = "[" + host + "]:" + strconv.Itoa(port)
	}
	return &Target{
		SandboxID: id, Namespace: namespace, Host: host, Port: port, IsIP: isIP,
		Timeout: timeout, RequestedTimeout: requested,
		Authority: authority,
		// A DNS name or IP literal contains no space, so the key is unambiguous.
		PoolKey: authority + " " + podUID,
	}
}

// isDNS1123Label is a full match of [a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?: what Kubernetes accepts
// for Sandbox and Namespace names (ASCII only; any other byte makes the value invalid).
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parsePortHeader is a full match of [1-9][0-9]{0,4} that is at most 65535.
func parsePortHeader(s string) (int, bool) {
	if len(s) == 0 || len(s) > 5 || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	port := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		port = port*10 + int(s[i]-'0')
	}
	return port, port <= 65535
}
