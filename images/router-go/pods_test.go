package main

// Tests of pods.go: which pods are sandbox targets, and the pod index fed by list+watch (the
// port of tests/unit/test_router_sandboxes.py up to its resolution cases, which exercise
// routing.go). Pods are built as the JSON objects the API returns and decoded the way kube.go
// decodes them, so the field mapping of Pod is tested along the way.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const podsTestNS = "agent-sandbox-demo"

var podSerial atomic.Int64

// podOption changes one aspect of sandboxPod's object (the keyword arguments of the Python
// harness's sandbox_pod).
type podOption func(metadata, spec, status map[string]any)

func withSandbox(name string) podOption {
	return func(metadata, _, _ map[string]any) {
		metadata["ownerReferences"].([]any)[0].(map[string]any)["name"] = name
	}
}

func withOwner(kind, apiVersion string) podOption {
	return func(metadata, _, _ map[string]any) {
		ref := metadata["ownerReferences"].([]any)[0].(map[string]any)
		ref["kind"], ref["apiVersion"] = kind, apiVersion
	}
}

func withPhase(phase string) podOption {
	return func(_, _, status map[string]any) { status["phase"] = phase }
}

func withLabels(labels map[string]string) podOption {
	return func(metadata, _, _ map[string]any) {
		for k, v := range labels {
			metadata["labels"].(map[string]any)[k] = v
		}
	}
}

func withUID(uid string) podOption {
	return func(metadata, _, _ map[string]any) { metadata["uid"] = uid }
}

func withHostNetwork() podOption {
	return func(_, spec, _ map[string]any) { spec["hostNetwork"] = true }
}

func deleting() podOption {
	return func(metadata, _, _ map[string]any) { metadata["deletionTimestamp"] = "2026-08-20T10:05:00Z" }
}

// sandboxPod is a Pod object shaped like the agent-sandbox controller's: named after its
// Sandbox, labelled with the Sandbox name hash and controlled (ownerReference) by the Sandbox.
// An empty ip means the pod has no address yet. Every call gets a fresh UID, as in the harness.
func sandboxPod(name, namespace, ip string, options ...podOption) map[string]any {
	serial := podSerial.Add(1)
	metadata := map[string]any{
		"name": name, "namespace": namespace, "uid": fmt.Sprintf("uid-%d", serial),
		"creationTimestamp": "2026-08-20T10:00:00Z",
		"labels":            map[string]any{SandboxNameHashLabel: "0badc0de"},
		"ownerReferences": []any{map[string]any{
			"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": name,
			"uid": fmt.Sprintf("owner-%d", serial), "controller": true, "blockOwnerDeletion": true,
		}},
	}
	spec := map[string]any{"hostNetwork": false,
		"containers": []any{map[string]any{"name": "runtime", "image": "runtime:test"}}}
	podIPs := []any{}
	if ip != "" {
		podIPs = append(podIPs, map[string]any{"ip": ip})
	}
	status := map[string]any{"phase": "Running", "podIP": ip, "podIPs": podIPs,
		"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}
	for _, option := range options {
		option(metadata, spec, status)
	}
	return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}
}

// decodePod turns a Pod object into a *Pod the way a list or watch answer is decoded.
func decodePod(t testing.TB, object map[string]any) *Pod {
	t.Helper()
	data, err := json.Marshal(object)
	if err != nil {
		t.Fatal(err)
	}
	pod := new(Pod)
	if err := json.Unmarshal(data, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func pod(t testing.TB, name, namespace, ip string, options ...podOption) *Pod {
	t.Helper()
	return decodePod(t, sandboxPod(name, namespace, ip, options...))
}

func addressStrings(route *SandboxRoute) []string {
	var out []string
	for _, a := range route.Addresses {
		out = append(out, a.String())
	}
	return out
}

// indexWith is an index of podsTestNS and team-b after one list of each.
func indexWith(pods ...*Pod) *PodIndex {
	index := NewPodIndex([]string{podsTestNS, "team-b"}, false)
	for _, ns := range []string{podsTestNS, "team-b"} {
		var of []*Pod
		for _, p := range pods {
			if p.Metadata.Namespace == ns {
				of = append(of, p)
			}
		}
		index.Replace(ns, of)
	}
	return index
}

// -- which pods are targets -----------------------------------------------------------------

func TestARunningPodControlledByItsSandboxIsATarget(t *testing.T) {
	route := SandboxRouteOf(pod(t, "sbx-a", podsTestNS, "10.244.1.5"), false)
	if route == nil || route.Namespace != podsTestNS || route.Sandbox != "sbx-a" || route.Pod != "sbx-a" {
		t.Fatalf("route = %+v", route)
	}
	if !slices.Equal(route.Addresses, []netip.Addr{netip.MustParseAddr("10.244.1.5")}) {
		t.Fatalf("addresses = %v", route.Addresses)
	}
	if route.PodUID == "" {
		t.Fatal("the route lost the pod UID")
	}
}

// What the SDK sends for a warm-pool claim: X-Sandbox-ID = status.sandbox.name, the
// pool-generated Sandbox name (the pod has the same name), not the claim name.
func TestWarmPoolAdoptedSandboxIsATargetUnderItsOwnName(t *testing.T) {
	p := pod(t, "python-sandbox-warmpool-x7k2p", podsTestNS, "10.244.1.6",
		withLabels(map[string]string{"agents.x-k8s.io/claim-uid": "1234"}))
	if SandboxRouteOf(p, false) == nil {
		t.Fatalf("refused: %s", PodRefusal(p, false))
	}
}

func TestPodsThatAreNotTargets(t *testing.T) {
	cases := []struct {
		pod    map[string]any
		reason string
	}{
		{sandboxPod("web", podsTestNS, "127.0.0.1", withOwner("ReplicaSet", "apps/v1")), "not controlled by a Sandbox"},
		{sandboxPod("fake", podsTestNS, "127.0.0.1", withOwner("Sandbox", "evil.example.com/v1")), "not controlled by a Sandbox"},
		{sandboxPod("impostor", podsTestNS, "127.0.0.1", withSandbox("sbx-a")), "not named after its Sandbox"},
		{sandboxPod("sbx-p", podsTestNS, "127.0.0.1", withPhase("Pending")), "not running"},
		{sandboxPod("sbx-d", podsTestNS, "127.0.0.1", deleting()), "terminating"},
		{sandboxPod("sbx-h", podsTestNS, "127.0.0.1", withHostNetwork()), "host network"},
		{sandboxPod("pool-abcde", podsTestNS, "127.0.0.1", withLabels(map[string]string{WarmPoolLabel: "1a2b3c4d"})), "unclaimed warm-pool"},
		{sandboxPod("sbx-n", podsTestNS, ""), "no IP address"},
	}
	for _, c := range cases {
		p := decodePod(t, c.pod)
		t.Run(p.Metadata.Name, func(t *testing.T) {
			if got := PodRefusal(p, false); !strings.Contains(got, c.reason) {
				t.Errorf("refusal = %q, want it to say %q", got, c.reason)
			}
			if route := SandboxRouteOf(p, false); route != nil {
				t.Errorf("route = %+v, want nil", route)
			}
		})
	}
}

func TestNonControllerOwnerReferenceDoesNotCount(t *testing.T) {
	object := sandboxPod("sbx-a", podsTestNS, "127.0.0.1")
	object["metadata"].(map[string]any)["ownerReferences"].([]any)[0].(map[string]any)["controller"] = false
	if route := SandboxRouteOf(decodePod(t, object), false); route != nil {
		t.Fatalf("route = %+v, want nil", route)
	}
}

// The first controller reference decides: a Sandbox reference after a foreign controller does
// not make the pod a sandbox (a pod has one controller; anything else is not the controller's).
func TestOnlyTheFirstControllerReferenceCounts(t *testing.T) {
	object := sandboxPod("sbx-a", podsTestNS, "127.0.0.1")
	metadata := object["metadata"].(map[string]any)
	sandboxRef := metadata["ownerReferences"].([]any)[0]
	metadata["ownerReferences"] = []any{
		map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}, // not a controller: skipped
		map[string]any{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "sbx-a", "controller": true},
		sandboxRef,
	}
	if got := PodRefusal(decodePod(t, object), false); got != "not controlled by a Sandbox" {
		t.Fatalf("refusal = %q", got)
	}
	metadata["ownerReferences"] = []any{map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}, sandboxRef}
	if got := PodRefusal(decodePod(t, object), false); got != "" {
		t.Fatalf("a non-controller reference before the Sandbox's counted: %q", got)
	}
}

func TestUnclaimedPoolPodsCanBeAllowedExplicitly(t *testing.T) {
	p := pod(t, "pool-abcde", podsTestNS, "127.0.0.1", withLabels(map[string]string{WarmPoolLabel: "1a2b3c4d"}))
	if SandboxRouteOf(p, true) == nil {
		t.Fatalf("refused: %s", PodRefusal(p, true))
	}
}

func TestDualStackAddressesPutIPv4First(t *testing.T) {
	object := sandboxPod("sbx-a", podsTestNS, "fd00:10:244::5")
	object["status"].(map[string]any)["podIPs"] = []any{
		map[string]any{"ip": "fd00:10:244::5"}, map[string]any{"ip": "10.244.1.5"}}
	route := SandboxRouteOf(decodePod(t, object), false)
	if got := addressStrings(route); !slices.Equal(got, []string{"10.244.1.5", "fd00:10:244::5"}) {
		t.Fatalf("addresses = %v", got)
	}
}

func TestAddressesAreParsedDedupedAndUnmapped(t *testing.T) {
	cases := []struct {
		podIP  string
		podIPs []string
		want   []string
	}{
		{"10.0.0.1", nil, []string{"10.0.0.1"}},                                         // podIP only: the fallback
		{"10.0.0.9", []string{"10.0.0.1"}, []string{"10.0.0.1"}},                        // podIPs win over podIP
		{"", []string{"::ffff:10.0.0.1", "10.0.0.1"}, []string{"10.0.0.1"}},             // mapped = the IPv4 address
		{"", []string{"bogus", "010.0.0.1", "fd00::1", "fd00::1"}, []string{"fd00::1"}}, // unparsable skipped
		{"10.0.0.1", []string{""}, nil},                                                 // an entry without an ip: no fallback, no address
	}
	for _, c := range cases {
		status := PodStatus{PodIP: c.podIP}
		for _, ip := range c.podIPs {
			status.PodIPs = append(status.PodIPs, PodIP{IP: ip})
		}
		var got []string
		for _, a := range podAddresses(&status) {
			got = append(got, a.String())
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("podIP %q podIPs %q: addresses %v, want %v", c.podIP, c.podIPs, got, c.want)
		}
	}
}

// -- the index ------------------------------------------------------------------------------

func TestIndexFollowsListAndWatchEvents(t *testing.T) {
	index := NewPodIndex([]string{podsTestNS}, false)
	if index.Ready() {
		t.Fatal("ready before the first list")
	}
	index.Replace(podsTestNS, []*Pod{pod(t, "sbx-a", podsTestNS, "10.244.1.5"),
		pod(t, "web", podsTestNS, "10.244.1.8", withOwner("ReplicaSet", "apps/v1"))})
	if !index.Ready() || index.Len() != 1 || index.Get(podsTestNS, "web") != nil {
		t.Fatalf("after the list: ready %v, len %d", index.Ready(), index.Len())
	}
	moved := pod(t, "sbx-a", podsTestNS, "10.244.2.9")
	index.Put(moved)
	if got := index.Get(podsTestNS, "sbx-a"); got == nil || got.Addresses[0].String() != "10.244.2.9" {
		t.Fatalf("after MODIFIED: %+v", got)
	}
	index.Put(pod(t, "sbx-a", podsTestNS, "10.244.2.9", deleting()))
	if index.Get(podsTestNS, "sbx-a") != nil || index.Len() != 0 {
		t.Fatal("a terminating pod stayed routable")
	}
	index.Put(moved)
	index.Remove(moved)
	if index.Get(podsTestNS, "sbx-a") != nil || index.Len() != 0 {
		t.Fatal("a deleted pod stayed routable")
	}
}

func TestLateDeleteOfAnOldPodKeepsItsReplacement(t *testing.T) {
	index := NewPodIndex([]string{podsTestNS}, false)
	old, replacement := pod(t, "sbx-a", podsTestNS, "10.244.1.5"), pod(t, "sbx-a", podsTestNS, "10.244.1.6")
	index.Replace(podsTestNS, []*Pod{old})
	index.Put(replacement)
	index.Remove(old)
	if got := index.Get(podsTestNS, "sbx-a"); got == nil || got.Addresses[0].String() != "10.244.1.6" {
		t.Fatalf("route = %+v", got)
	}
	// A DELETED without a UID removes whatever is there.
	anonymous := pod(t, "sbx-a", podsTestNS, "10.244.1.6")
	anonymous.Metadata.UID = ""
	index.Remove(anonymous)
	if index.Get(podsTestNS, "sbx-a") != nil || index.Len() != 0 {
		t.Fatal("a DELETED without UID did not remove the pod")
	}
}

func TestRelistDropsPodsThatDisappearedAndIgnoresOtherNamespaces(t *testing.T) {
	index := indexWith(pod(t, "sbx-a", podsTestNS, "127.0.0.1"), pod(t, "sbx-b", podsTestNS, "127.0.0.1"),
		pod(t, "sbx-t", "team-b", "127.0.0.1"))
	index.Replace(podsTestNS, []*Pod{pod(t, "sbx-b", podsTestNS, "127.0.0.1"), pod(t, "sbx-t2", "team-b", "127.0.0.1")})
	if index.Get(podsTestNS, "sbx-a") != nil || index.Get(podsTestNS, "sbx-b") == nil {
		t.Fatal("the relist was not applied")
	}
	if index.Get("team-b", "sbx-t") == nil || index.Get("team-b", "sbx-t2") != nil {
		t.Fatal("a list of one namespace changed another")
	}
	if index.Len() != 2 || index.Count(podsTestNS) != 1 || index.Count("team-b") != 1 {
		t.Fatalf("len %d, counts %d/%d", index.Len(), index.Count(podsTestNS), index.Count("team-b"))
	}
	index.Put(pod(t, "sbx-x", "kube-system", "127.0.0.1"))
	index.Replace("kube-system", []*Pod{pod(t, "sbx-y", "kube-system", "127.0.0.1")})
	if index.Get("kube-system", "sbx-x") != nil || index.Get("kube-system", "sbx-y") != nil || index.Len() != 2 {
		t.Fatal("a namespace that is not watched was indexed")
	}
}

func TestStatusChurnKeepsTheSameRouteObject(t *testing.T) {
	object := sandboxPod("sbx-a", podsTestNS, "127.0.0.1", withUID("u-1"))
	index := indexWith(decodePod(t, object))
	route := index.Get(podsTestNS, "sbx-a")
	object["status"].(map[string]any)["conditions"] = []any{map[string]any{"type": "Ready", "status": "False"}}
	index.Put(decodePod(t, object))
	if index.Get(podsTestNS, "sbx-a") != route {
		t.Fatal("a status-only change replaced the route")
	}
	index.Replace(podsTestNS, []*Pod{decodePod(t, object)})
	if index.Get(podsTestNS, "sbx-a") != route {
		t.Fatal("a relist of an unchanged pod replaced the route")
	}
	index.Put(pod(t, "sbx-a", podsTestNS, "127.0.0.1", withUID("u-2"))) // same address, another pod
	if index.Get(podsTestNS, "sbx-a") == route {
		t.Fatal("a new pod UID kept the old route")
	}
}

func TestReadyOnceEveryNamespaceWasListed(t *testing.T) {
	index := NewPodIndex([]string{podsTestNS, "team-b", podsTestNS}, false)
	index.Replace(podsTestNS, nil)
	index.Replace(podsTestNS, nil)
	if index.Ready() {
		t.Fatal("ready with team-b never listed")
	}
	index.Replace("other", nil)
	if index.Ready() {
		t.Fatal("a namespace that is not watched counted")
	}
	index.Replace("team-b", nil)
	if !index.Ready() {
		t.Fatal("not ready after both lists")
	}
	if !NewPodIndex(nil, false).Ready() {
		t.Fatal("an index without namespaces has nothing to wait for")
	}
}

func TestWaitReturnsASandboxThatAppearsAndTimesOutOtherwise(t *testing.T) {
	index := NewPodIndex([]string{podsTestNS}, false)
	late := pod(t, "late", podsTestNS, "127.0.0.1")
	time.AfterFunc(50*time.Millisecond, func() { index.Put(late) })
	started := time.Now()
	found := index.Wait(context.Background(), podsTestNS, "late", 2*time.Second)
	if found == nil || found.Sandbox != "late" {
		t.Fatalf("found = %+v", found)
	}
	if elapsed := time.Since(started); elapsed > time.Second {
		t.Fatalf("the wait took %s: it did not wake when the pod appeared", elapsed)
	}
	started = time.Now()
	if missing := index.Wait(context.Background(), podsTestNS, "never", 50*time.Millisecond); missing != nil {
		t.Fatalf("missing = %+v", missing)
	}
	if elapsed := time.Since(started); elapsed < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", elapsed)
	}
	index.mu.Lock()
	defer index.mu.Unlock()
	if len(index.waiters) != 0 {
		t.Fatalf("waiters left behind: %v", index.waiters)
	}
}

func TestWaitEndsEarlyWithoutWaiting(t *testing.T) {
	index := indexWith(pod(t, "sbx-a", podsTestNS, "127.0.0.1"))
	if index.Wait(context.Background(), podsTestNS, "sbx-a", time.Hour) == nil {
		t.Fatal("a known sandbox was not returned at once")
	}
	done := make(chan *SandboxRoute)
	go func() { done <- index.Wait(context.Background(), "not-watched", "sbx-a", time.Hour) }()
	go func() { done <- index.Wait(context.Background(), podsTestNS, "ghost", 0) }()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- index.Wait(ctx, podsTestNS, "ghost", time.Hour) }()
	time.AfterFunc(20*time.Millisecond, cancel)
	for range 3 {
		select {
		case route := <-done:
			if route != nil {
				t.Fatalf("route = %+v", route)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a wait that should not wait (or was cancelled) is still waiting")
		}
	}
}

func TestReplaceWakesEveryWaiterOfTheSandbox(t *testing.T) {
	index := NewPodIndex([]string{podsTestNS}, false)
	const waiters = 5
	results := make(chan *SandboxRoute, waiters)
	for range waiters {
		go func() { results <- index.Wait(context.Background(), podsTestNS, "late", 5*time.Second) }()
	}
	for { // every waiter registered
		index.mu.Lock()
		n := len(index.waiters[[2]string{podsTestNS, "late"}])
		index.mu.Unlock()
		if n == waiters {
			break
		}
		time.Sleep(time.Millisecond)
	}
	index.Put(pod(t, "late", podsTestNS, "", withPhase("Pending"))) // not routable: wakes nobody
	index.Replace(podsTestNS, []*Pod{pod(t, "late", podsTestNS, "127.0.0.1")})
	want := index.Get(podsTestNS, "late")
	for range waiters {
		select {
		case got := <-results:
			if got != want || got == nil {
				t.Fatalf("woken with %+v, want %+v", got, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a waiter was not woken by the list")
		}
	}
}

// Readers, waiters and writers at once, for the race detector.
func TestIndexIsSafeForConcurrentUse(t *testing.T) {
	index := NewPodIndex([]string{podsTestNS}, false)
	pods := make([]*Pod, 20)
	for i := range pods {
		pods[i] = pod(t, fmt.Sprintf("sbx-%d", i), podsTestNS, fmt.Sprintf("10.0.0.%d", i+1))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				name := pods[(i+r)%len(pods)].Metadata.Name
				if route := index.Get(podsTestNS, name); route != nil && route.Sandbox != name {
					t.Errorf("Get(%s) = %s", name, route.Sandbox)
				}
				_ = index.Len()
				_ = index.Ready()
				index.Wait(ctx, podsTestNS, name, time.Millisecond)
			}
		})
	}
	for i := range 2000 {
		p := pods[i%len(pods)]
		switch i % 4 {
		case 0, 1:
			index.Put(p)
		case 2:
			index.Remove(p)
		case 3:
			index.Replace(podsTestNS, pods[:i%len(pods)])
		}
	}
	cancel()
	wg.Wait()
	index.Replace(podsTestNS, pods)
	if index.Len() != len(pods) || index.Count(podsTestNS) != len(pods) {
		t.Fatalf("len %d after the final list of %d pods", index.Len(), len(pods))
	}
}

// The decoder takes the fields it needs from a full API object and skips the rest.
func TestPodDecodesFromAnAPIObject(t *testing.T) {
	const object = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sbx-a","namespace":"ns","uid":"u",
	"resourceVersion":"42","labels":{"a":"b"},"annotations":{"x":"y"},"deletionTimestamp":null,
	"ownerReferences":[{"apiVersion":"agents.x-k8s.io/v1beta1","kind":"Sandbox","name":"sbx-a","controller":true}]},
	"spec":{"hostNetwork":false,"containers":[{"name":"c"}]},
	"status":{"phase":"Running","podIP":"10.0.0.1","podIPs":[{"ip":"10.0.0.1"},{"ip":"fd00::1"}]}}`
	var p Pod
	if err := json.Unmarshal([]byte(object), &p); err != nil {
		t.Fatal(err)
	}
	if p.Metadata.ResourceVersion != "42" || p.Metadata.Labels["a"] != "b" || len(p.Status.PodIPs) != 2 {
		t.Fatalf("decoded %+v", p)
	}
	if refusal := PodRefusal(&p, false); refusal != "" {
		t.Fatalf("refused: %s", refusal)
	}
}

func BenchmarkPodIndexGet(b *testing.B) {
	index := NewPodIndex([]string{podsTestNS}, false)
	var pods []*Pod
	for i := range 1000 {
		pods = append(pods, pod(b, fmt.Sprintf("sbx-%d", i), podsTestNS, "10.0.0.1"))
	}
	index.Replace(podsTestNS, pods)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if index.Get(podsTestNS, "sbx-500") == nil {
				b.Fatal("missing")
			}
		}
	})
}
