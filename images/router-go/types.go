package main

// The types shared by the routing side (routing.go, policy.go), the pod index (pods.go, kube.go)
// and the data path (proxy.go, upstream.go): what a request asks for, where it goes, and why it
// is refused.

import (
	"net/netip"
	"sync"
	"time"
)

// Indices of the routing headers in RoutingHeaders.
const (
	HeaderID = iota
	HeaderNamespace
	HeaderPort
	HeaderPodIP
	HeaderTimeout
	routingHeaderCount
)

// RoutingHeaderNames are the lower-case names of the routing headers, by index.
var RoutingHeaderNames = [routingHeaderCount]string{
	"x-sandbox-id", "x-sandbox-namespace", "x-sandbox-port", "x-sandbox-pod-ip", "x-sandbox-timeout",
}

// RoutingHeaders are the raw values of the routing headers of one request (each at most once:
// the head parser refuses duplicates before this is filled).
type RoutingHeaders struct {
	Values  [routingHeaderCount]string
	Present [routingHeaderCount]bool
}

// RoutingError is a request the router refuses: Status and Detail become the JSON answer,
// Reason the label of sandbox_router_rejected_total. Unavailable marks "no routable pod is known
// (yet)": the caller may wait for the sandbox before answering.
type RoutingError struct {
	Status      int
	Detail      string
	Reason      string
	Unavailable bool
}

func (e *RoutingError) Error() string { return e.Detail }

// Target is where one request goes: a literal IP or a Service DNS name, and a port.
type Target struct {
	SandboxID string
	Namespace string
	Host      string // IP literal (no brackets) or DNS name
	Port      int
	IsIP      bool
	// Timeout is the inactivity timeout of the request; RequestedTimeout the caller's
	// X-Sandbox-Timeout (capped), zero when it sent none.
	Timeout          time.Duration
	RequestedTimeout time.Duration
	Authority        string // host:port for the upstream Host header (IPv6 bracketed)
	PoolKey          string // idle upstream connections are shared only within one key (host, port, pod UID)
}

// RouteRequest is the validated routing headers of one request before a target is chosen
// (watch mode). Interned by the resolver: one pointer per distinct header tuple.
type RouteRequest struct {
	SandboxID        string
	Namespace        string
	Port             int
	PodIP            netip.Addr // zero when the caller sent none
	Timeout          time.Duration
	RequestedTimeout time.Duration
}

// SandboxRoute is where one sandbox's pod can be reached. Immutable once built: a changed pod
// gets a new route, which also drops the targets memoised on the old one.
type SandboxRoute struct {
	Namespace string
	Sandbox   string
	Pod       string
	PodUID    string
	Addresses []netip.Addr // never empty
	// Targets memoises, per *RouteRequest, the *Target or *RoutingError chosen on this pod
	// (owned by routing.go).
	Targets sync.Map
	// targetCount bounds Targets (owned by routing.go).
	TargetCount int64
}
