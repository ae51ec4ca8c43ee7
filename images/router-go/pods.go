package main

// The sandbox pod index of the watch resolver: which pods are sandboxes, and where they are
// (the port of sandbox_router/sandboxes.py).
//
// SandboxRouteOf is a pure function from one Pod (the fields of the Kubernetes Pod object the
// router needs) to a *SandboxRoute, or nil when the pod must not be a target. PodIndex holds
// the routes of the watched namespaces, keyed by (namespace, Sandbox name), and is fed by the
// list+watch loop in kube.go; the request path only reads it (PodIndex.Get), and requests for a
// sandbox that is not there yet can wait for it (PodIndex.Wait).
//
// Facts about the controller (agent-sandbox v0.5.x) this relies on: the pod of a Sandbox is
// named after the Sandbox and controlled by it (a controller ownerReference of kind Sandbox in
// group agents.x-k8s.io), carries the label agents.x-k8s.io/sandbox-name-hash, and, while it is
// an unclaimed warm-pool member, the label agents.x-k8s.io/warm-pool-sandbox (removed on
// adoption). The SDK sends the Sandbox name (the claim's status.sandbox.name) as X-Sandbox-ID,
// also for warm-pool-adopted sandboxes, whose name is the pool-generated one, not the claim's.

import (
	"cmp"
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The controller's API group, owner kind and pod labels (see the file comment).
const (
	SandboxGroup         = "agents.x-k8s.io"
	SandboxKind          = "Sandbox"
	SandboxNameHashLabel = "agents.x-k8s.io/sandbox-name-hash"
	WarmPoolLabel        = "agents.x-k8s.io/warm-pool-sandbox"
)

// Pod is the part of a Kubernetes Pod object the router looks at, as encoding/json decodes it
// from a list or watch answer; every other field of the object is skipped while decoding.
type Pod struct {
	Metadata PodMetadata `json:"metadata"`
	Spec     PodSpec     `json:"spec"`
	Status   PodStatus   `json:"status"`
}

// PodMetadata is the part of a pod's metadata the router uses.
type PodMetadata struct {
	Name            string            `json:"name"`
	Namespace       string            `json:"namespace"`
	UID             string            `json:"uid"`
	Labels          map[string]string `json:"labels"`
	OwnerReferences []OwnerReference  `json:"ownerReferences"`
	// DeletionTimestamp is set (non-empty) once the pod is terminating.
	DeletionTimestamp string `json:"deletionTimestamp"`
	// ResourceVersion is where a resumed watch continues from.
	ResourceVersion string `json:"resourceVersion"`
}

// OwnerReference is one entry of metadata.ownerReferences.
type OwnerReference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Controller bool   `json:"controller"`
}

// PodSpec is the part of a pod's spec the router uses.
type PodSpec struct {
	HostNetwork bool `json:"hostNetwork"`
}

// PodStatus is the part of a pod's status the router uses.
type PodStatus struct {
	Phase  string  `json:"phase"`
	PodIP  string  `json:"podIP"`
	PodIPs []PodIP `json:"podIPs"`
}

// PodIP is one entry of status.podIPs.
type PodIP struct {
	IP string `json:"ip"`
}

// controllingSandbox is the name of the Sandbox that controls the pod, or "" when its
// controller (the first ownerReference with controller: true) is something else or absent.
func controllingSandbox(meta *PodMetadata) string {
	for i := range meta.OwnerReferences {
		ref := &meta.OwnerReferences[i]
		if !ref.Controller {
			continue
		}
		group, _, _ := strings.Cut(ref.APIVersion, "/")
		if ref.Kind == SandboxKind && group == SandboxGroup {
			return ref.Name
		}
		return "" // controlled by something else: a pod has at most one controller
	}
	return ""
}

// podAddresses are the pod's distinct IP addresses, IPv4 first (as the SDK prefers it, so the
// caller's X-Sandbox-Pod-IP usually matches the first one). status.podIPs is authoritative;
// status.podIP is only the fallback for an API that does not fill podIPs. Unparsable entries
// are skipped and IPv4-mapped IPv6 addresses count as the IPv4 address they map.
func podAddresses(status *PodStatus) []netip.Addr {
	raw := make([]string, 0, max(len(status.PodIPs), 1))
	for _, entry := range status.PodIPs {
		raw = append(raw, entry.IP)
	}
	if len(raw) == 0 && status.PodIP != "" {
		raw = append(raw, status.PodIP)
	}
	var found []netip.Addr
	for _, text := range raw {
		address, err := netip.ParseAddr(text)
		if err != nil {
			continue
		}
		address = address.Unmap()
		if !slices.Contains(found, address) {
			found = append(found, address)
		}
	}
	// Stable: among addresses of one family the API's order is kept.
	slices.SortStableFunc(found, func(a, b netip.Addr) int {
		return cmp.Compare(addressVersion(a), addressVersion(b))
	})
	return found
}

func addressVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// PodRefusal says why pod is not a routable sandbox pod, or "" when it is (pure).
func PodRefusal(pod *Pod, allowUnclaimedPool bool) string {
	meta := &pod.Metadata
	sandbox := controllingSandbox(meta)
	if sandbox == "" {
		return "not controlled by a Sandbox"
	}
	// The controller names the pod after its Sandbox. Requiring it means a pod that merely
	// claims a Sandbox as its owner (ownerReferences are not verified by the API server) can
	// never take over the name of the real sandbox pod, since pod names are unique.
	if sandbox != meta.Name {
		return "not named after its Sandbox"
	}
	if meta.DeletionTimestamp != "" {
		return "terminating"
	}
	if pod.Status.Phase != "Running" {
		return "not running"
	}
	if pod.Spec.HostNetwork {
		return "uses the host network (its address is the node's)"
	}
	if !allowUnclaimedPool {
		if _, pooled := meta.Labels[WarmPoolLabel]; pooled {
			return "an unclaimed warm-pool pod" // reachable only once a claim adopted it
		}
	}
	if len(podAddresses(&pod.Status)) == 0 {
		return "has no IP address"
	}
	return ""
}

// SandboxRouteOf is the route to a sandbox pod, or nil when the pod must not be a target (pure).
func SandboxRouteOf(pod *Pod, allowUnclaimedPool bool) *SandboxRoute {
	if PodRefusal(pod, allowUnclaimedPool) != "" {
		return nil
	}
	meta := &pod.Metadata
	return &SandboxRoute{
		Namespace: meta.Namespace,
		Sandbox:   meta.Name, // == the controlling Sandbox's name, checked above
		Pod:       meta.Name,
		PodUID:    meta.UID,
		Addresses: podAddresses(&pod.Status),
	}
}

// podKey is the (namespace, name) of a pod; ok is false when it has neither. An empty string
// counts as missing: no watched namespace and no routable name is empty.
func podKey(pod *Pod) (namespace, name string, ok bool) {
	namespace, name = pod.Metadata.Namespace, pod.Metadata.Name
	return namespace, name, namespace != "" && name != ""
}

// sameTarget reports whether a new route of a pod leads where the old one does: then the old
// route (and the targets memoised on it) is kept, since only status churn (conditions,
// restarts) changed.
func sameTarget(old, fresh *SandboxRoute) bool {
	return old != nil && old.PodUID == fresh.PodUID && slices.Equal(old.Addresses, fresh.Addresses)
}

// PodIndex holds the routable sandbox pods of the watched namespaces, keyed by (namespace,
// Sandbox name). It is safe for concurrent use.
//
// Get is the request hot path, so reads take no lock: each namespace's routes are an immutable
// map behind an atomic pointer, and a writer (the namespace's watch goroutine, serialised with
// the others by mu) installs a modified copy. Reads then cost two map lookups and an atomic
// load and do not contend across cores, which a read lock's shared counter does. The price is a
// copy of one namespace's map per route change; events that leave the route as it is (status
// churn, the bulk of pod updates) copy nothing, and a relist builds a fresh map anyway.
type PodIndex struct {
	allowUnclaimedPool bool
	// routes has one entry per watched namespace, fixed at construction (so reading the outer
	// map needs no lock); the maps behind the pointers are never modified once stored.
	routes map[string]*atomic.Pointer[map[string]*SandboxRoute]
	total  atomic.Int64 // routes summed over the namespaces (Len)
	ready  atomic.Bool  // every namespace synced (read by /readyz)

	mu      sync.Mutex                         // serialises writers; guards what follows
	synced  map[string]struct{}                // namespaces listed at least once
	waiters map[[2]string][]chan *SandboxRoute // Wait calls, woken by a new route of their key
}

// NewPodIndex is an empty index of namespaces; unclaimed warm-pool pods are routable only when
// allowUnclaimedPool is set (ROUTER_ROUTE_UNCLAIMED_POOL_PODS).
func NewPodIndex(namespaces []string, allowUnclaimedPool bool) *PodIndex {
	x := &PodIndex{
		allowUnclaimedPool: allowUnclaimedPool,
		routes:             make(map[string]*atomic.Pointer[map[string]*SandboxRoute], len(namespaces)),
		synced:             make(map[string]struct{}, len(namespaces)),
		waiters:            make(map[[2]string][]chan *SandboxRoute),
	}
	for _, ns := range namespaces {
		if x.routes[ns] == nil {
			x.routes[ns] = new(atomic.Pointer[map[string]*SandboxRoute])
			x.routes[ns].Store(&map[string]*SandboxRoute{})
		}
	}
	x.ready.Store(len(x.routes) == 0) // nothing to list: ready, as in sandboxes.py
	return x
}

// Ready reports whether every watched namespace has been listed at least once (GET /readyz).
func (x *PodIndex) Ready() bool { return x.ready.Load() }

// Len is the number of routable sandboxes (the sandbox_router_sandbox_targets gauge).
func (x *PodIndex) Len() int { return int(x.total.Load()) }

// Count is the number of routable sandboxes in one namespace.
func (x *PodIndex) Count(namespace string) int {
	if routes := x.routes[namespace]; routes != nil {
		return len(*routes.Load())
	}
	return 0
}

// Get is the route of a sandbox, or nil (the request hot path: lock-free).
func (x *PodIndex) Get(namespace, name string) *SandboxRoute {
	if routes := x.routes[namespace]; routes != nil {
		return (*routes.Load())[name]
	}
	return nil
}

// edit installs a copy of namespace's routes with name set to route (nil: removed); x.mu must
// be held.
func (x *PodIndex) edit(namespace, name string, route *SandboxRoute) {
	pointer := x.routes[namespace]
	old := *pointer.Load()
	fresh := maps.Clone(old)
	if route == nil {
		delete(fresh, name)
	} else {
		fresh[name] = route
	}
	x.total.Add(int64(len(fresh) - len(old)))
	pointer.Store(&fresh)
}

// Put applies an ADDED/MODIFIED pod: it is indexed, or dropped when it stopped being routable.
func (x *PodIndex) Put(pod *Pod) {
	namespace, name, ok := podKey(pod)
	if !ok || x.routes[namespace] == nil { // no key, or a namespace that is not watched
		return
	}
	route := SandboxRouteOf(pod, x.allowUnclaimedPool)
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.Get(namespace, name)
	switch {
	case route == nil:
		if old != nil {
			x.edit(namespace, name, nil)
		}
	case sameTarget(old, route):
		// status churn: keep the route and the targets memoised on it
	default:
		x.edit(namespace, name, route)
		x.wake(namespace, name, route)
	}
}

// Remove applies a DELETED pod. A late delete of an older pod (another UID) does not remove
// its replacement.
func (x *PodIndex) Remove(pod *Pod) {
	namespace, name, ok := podKey(pod)
	if !ok || x.routes[namespace] == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	current := x.Get(namespace, name)
	if current != nil && (pod.Metadata.UID == "" || current.PodUID == pod.Metadata.UID) {
		x.edit(namespace, name, nil)
	}
}

// Replace applies a full list of a namespace: exactly these pods are its routes from now on,
// and the namespace counts as synced. Routes that did not change are kept (with their memoised
// targets); pods of other namespaces in the list are ignored.
func (x *PodIndex) Replace(namespace string, pods []*Pod) {
	pointer := x.routes[namespace]
	if pointer == nil {
		return
	}
	fresh := make(map[string]*SandboxRoute, len(pods))
	for _, pod := range pods {
		ns, name, ok := podKey(pod)
		if !ok || ns != namespace {
			continue
		}
		if route := SandboxRouteOf(pod, x.allowUnclaimedPool); route != nil {
			fresh[name] = route
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	old := *pointer.Load()
	var woken []string
	for name, route := range fresh {
		if previous := old[name]; sameTarget(previous, route) {
			fresh[name] = previous
		} else {
			woken = append(woken, name)
		}
	}
	x.total.Add(int64(len(fresh) - len(old)))
	pointer.Store(&fresh)
	for _, name := range woken { // after the Store: a woken request finds the route by Get, too
		x.wake(namespace, name, fresh[name])
	}
	x.synced[namespace] = struct{}{}
	if len(x.synced) == len(x.routes) {
		x.ready.Store(true)
	}
}

// Wait is the route of a sandbox, waiting up to timeout for it to appear (a claim can be Ready
// a moment before its pod's adoption reaches the watch). It returns as soon as the route is
// indexed, and nil on timeout or when ctx ends first. A namespace that is not watched is not
// waited for: nothing could ever appear there.
func (x *PodIndex) Wait(ctx context.Context, namespace, name string, timeout time.Duration) *SandboxRoute {
	if route := x.Get(namespace, name); route != nil || timeout <= 0 || x.routes[namespace] == nil {
		return route
	}
	key := [2]string{namespace, name}
	woken := make(chan *SandboxRoute, 1) // buffered: wake never blocks under the lock
	x.mu.Lock()
	if route := x.Get(namespace, name); route != nil { // it came between Get and Lock
		x.mu.Unlock()
		return route
	}
	x.waiters[key] = append(x.waiters[key], woken)
	x.mu.Unlock()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case route := <-woken:
		return route
	case <-timer.C:
	case <-ctx.Done():
	}
	// Gave up: unregister, unless a wake already took this waiter (then its route is the
	// answer after all: it arrived while giving up).
	x.mu.Lock()
	defer x.mu.Unlock()
	waiters := x.waiters[key]
	if i := slices.Index(waiters, woken); i >= 0 {
		waiters = slices.Delete(waiters, i, i+1)
		if len(waiters) == 0 {
			delete(x.waiters, key)
		} else {
			x.waiters[key] = waiters
		}
		return nil
	}
	return <-woken
}

// wake hands route to every Wait for (namespace, name); x.mu must be held.
func (x *PodIndex) wake(namespace, name string, route *SandboxRoute) {
	key := [2]string{namespace, name}
	for _, waiter := range x.waiters[key] {
		waiter <- route
	}
	delete(x.waiters, key)
}
