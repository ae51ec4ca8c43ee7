package main

// Tests of kube.go: the list+watch loop against a fake Kubernetes API over real TLS
// (httptest.NewTLSServer, its certificate as the service-account CA). fakeKube mirrors
// FakeKubeAPI of tests/component/sdk_harness.py, which the component tests run the router
// against: namespaced RBAC (403 elsewhere), a bearer token (401 otherwise), paginated lists,
// watches streaming JSON lines from an event log, and 410 Gone on compaction.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeEvent struct {
	version   int
	namespace string
	kind      string
	object    map[string]any
}

type recordedRequest struct{ path, auth string }

// fakeKube is a loopback HTTPS API answering GET /api/v1/namespaces/<ns>/pods, list and watch.
type fakeKube struct {
	server *httptest.Server
	saDir  string

	mu             sync.Mutex
	changed        chan struct{} // closed (and replaced) on every change: wakes the watches
	namespaces     map[string]bool
	token          string
	pods           map[[2]string]map[string]any
	events         []fakeEvent
	version        int
	compactedBelow int // watches from an older resourceVersion get 410 Gone
	generation     int // bumped by expireWatches: open watches end with 410
	failStatus     int // answer every request with this status (0: off)
	silentWatches  bool
	requests       []recordedRequest
}

func newFakeKube(t *testing.T, namespaces ...string) *fakeKube {
	t.Helper()
	k := &fakeKube{
		saDir:      t.TempDir(),
		changed:    make(chan struct{}),
		namespaces: map[string]bool{},
		token:      "fake-service-account-token",
		pods:       map[[2]string]map[string]any{},
		version:    1000,
	}
	for _, ns := range namespaces {
		k.namespaces[ns] = true
	}
	k.server = newTLSServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.server.Close) // registered first: runs after the watcher stopped
	writeCA(t, k.saDir, k.server)
	k.writeToken(t, k.token)
	return k
}

// newTLSServer is httptest.NewTLSServer without the server's log of the handshakes that the
// watcher's cancelled connections cut short.
func newTLSServer(handler http.Handler) *httptest.Server {
	server := httptest.NewUnstartedServer(handler)
	server.Config.ErrorLog = log.New(io.Discard, "", 0)
	server.StartTLS()
	return server
}

func writeCA(t *testing.T, dir string, server *httptest.Server) {
	t.Helper()
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), block, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (k *fakeKube) writeToken(t *testing.T, token string) {
	t.Helper()
	// A newline after the token, as a file written by hand has: the client trims it.
	if err := os.WriteFile(filepath.Join(k.saDir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (k *fakeKube) config() KubeConfig {
	address, _ := url.Parse(k.server.URL)
	port, _ := strconv.Atoi(address.Port())
	return KubeConfig{Host: address.Hostname(), Port: port, ServiceAccountDir: k.saDir}
}

// notifyLocked wakes the open watches; k.mu must be held.
func (k *fakeKube) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// putPod creates or updates a pod (ADDED or MODIFIED event).
func (k *fakeKube) putPod(object map[string]any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	metadata := object["metadata"].(map[string]any)
	key := [2]string{metadata["namespace"].(string), metadata["name"].(string)}
	kind := "ADDED"
	if _, exists := k.pods[key]; exists {
		kind = "MODIFIED"
	}
	k.version++
	metadata["resourceVersion"] = strconv.Itoa(k.version)
	k.pods[key] = object
	k.events = append(k.events, fakeEvent{k.version, key[0], kind, deepCopy(object)})
	k.notifyLocked()
}

// deletePod deletes a pod (DELETED event).
func (k *fakeKube) deletePod(namespace, name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := [2]string{namespace, name}
	object := k.pods[key]
	delete(k.pods, key)
	k.version++
	object["metadata"].(map[string]any)["resourceVersion"] = strconv.Itoa(k.version)
	k.events = append(k.events, fakeEvent{k.version, namespace, "DELETED", deepCopy(object)})
	k.notifyLocked()
}

// expireWatches compacts the history: open watches end with 410 Gone, and so does any later
// watch from an older resourceVersion (the client must list again).
func (k *fakeKube) expireWatches() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.compactedBelow = k.version
	k.generation++
	k.notifyLocked()
}

// rotateToken accepts only token from now on and puts it in the service-account dir.
func (k *fakeKube) rotateToken(t *testing.T, token string) {
	k.writeToken(t, token)
	k.mu.Lock()
	k.token = token
	k.mu.Unlock()
}

func (k *fakeKube) setFailStatus(status int) {
	k.mu.Lock()
	k.failStatus = status
	k.mu.Unlock()
}

func (k *fakeKube) recorded() []recordedRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.requests)
}

// listCalls counts the list (non-watch) requests of a namespace.
func (k *fakeKube) listCalls(namespace string) int {
	prefix := "/api/v1/namespaces/" + namespace + "/pods?"
	n := 0
	for _, r := range k.recorded() {
		if strings.HasPrefix(r.path, prefix) && !strings.Contains(r.path, "watch=") {
			n++
		}
	}
	return n
}

func (k *fakeKube) watchPaths() []string {
	var paths []string
	for _, r := range k.recorded() {
		if strings.Contains(r.path, "watch=1") {
			paths = append(paths, r.path)
		}
	}
	return paths
}

func deepCopy(object map[string]any) map[string]any {
	data, _ := json.Marshal(object)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return out
}

func kubeStatus(code int, reason, message string) map[string]any {
	return map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": message, "reason": reason, "code": code}
}

func writeJSON(w http.ResponseWriter, code int, payload any) {
	body, _ := json.Marshal(payload)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

var podsPathPattern = regexp.MustCompile(`^/api/v1/namespaces/([a-z0-9-]+)/pods$`)

func (k *fakeKube) serve(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	k.mu.Lock()
	k.requests = append(k.requests, recordedRequest{r.RequestURI, auth})
	// The generation is taken when the request is recorded: an expireWatches after a test saw
	// the watch request must end it.
	token, failStatus, generation := k.token, k.failStatus, k.generation
	k.mu.Unlock()
	if auth != "Bearer "+token {
		writeJSON(w, 401, kubeStatus(401, "Unauthorized", "Unauthorized"))
		return
	}
	if failStatus != 0 {
		writeJSON(w, failStatus, kubeStatus(failStatus, "InternalError", "injected failure"))
		return
	}
	match := podsPathPattern.FindStringSubmatch(r.URL.Path)
	if match == nil {
		writeJSON(w, 404, kubeStatus(404, "NotFound", "the server could not find the requested resource"))
		return
	}
	namespace := match[1]
	k.mu.Lock()
	allowed := k.namespaces[namespace]
	k.mu.Unlock()
	if !allowed {
		writeJSON(w, 403, kubeStatus(403, "Forbidden", fmt.Sprintf("pods is forbidden in namespace %q", namespace)))
		return
	}
	query := r.URL.Query()
	selector := query.Get("labelSelector")
	if query.Get("watch") == "1" || query.Get("watch") == "true" {
		since, _ := strconv.Atoi(query.Get("resourceVersion"))
		timeout, err := strconv.Atoi(query.Get("timeoutSeconds"))
		if err != nil {
			timeout = 300
		}
		k.watch(w, r, namespace, since, generation, selector, time.Duration(timeout)*time.Second)
		return
	}
	limit, _ := strconv.Atoi(query.Get("limit"))
	offset, _ := strconv.Atoi(query.Get("continue"))
	k.list(w, namespace, selector, limit, offset)
}

func selected(object map[string]any, selector string) bool {
	if selector == "" {
		return true
	}
	labels, _ := object["metadata"].(map[string]any)["labels"].(map[string]any)
	_, ok := labels[selector]
	return ok
}

func (k *fakeKube) list(w http.ResponseWriter, namespace, selector string, limit, offset int) {
	k.mu.Lock()
	var keys [][2]string
	for key, object := range k.pods {
		if key[0] == namespace && selected(object, selector) {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[1], b[1]) })
	items := []any{}
	for _, key := range keys {
		items = append(items, deepCopy(k.pods[key]))
	}
	version := k.version
	k.mu.Unlock()
	metadata := map[string]any{"resourceVersion": strconv.Itoa(version)}
	if limit > 0 {
		if offset+limit < len(items) {
			metadata["continue"] = strconv.Itoa(offset + limit)
		}
		items = items[min(offset, len(items)):min(offset+limit, len(items))]
	}
	writeJSON(w, 200, map[string]any{"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items})
}

func (k *fakeKube) watch(w http.ResponseWriter, r *http.Request, namespace string, since, generation int,
	selector string, timeout time.Duration) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	flusher := w.(http.Flusher)
	flusher.Flush()
	k.mu.Lock()
	silent := k.silentWatches
	k.mu.Unlock()
	if silent { // a dead link: the head, then nothing
		<-r.Context().Done()
		return
	}
	line := func(payload any) {
		data, _ := json.Marshal(payload)
		_, _ = w.Write(append(data, '\n'))
		flusher.Flush()
	}
	deadline := time.After(timeout)
	for {
		k.mu.Lock()
		if since < k.compactedBelow || generation != k.generation {
			k.mu.Unlock()
			line(map[string]any{"type": "ERROR", "object": kubeStatus(410, "Expired", "too old resource version")})
			return
		}
		var batch []fakeEvent
		for _, e := range k.events {
			if e.version > since && e.namespace == namespace {
				batch = append(batch, e)
			}
		}
		changed := k.changed
		k.mu.Unlock()
		for _, e := range batch {
			since = e.version
			if selected(e.object, selector) {
				line(map[string]any{"type": e.kind, "object": e.object})
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-deadline:
			return // the server's timeoutSeconds: a normal end of the watch
		case <-r.Context().Done():
			return
		}
	}
}

// -- test scaffolding -------------------------------------------------------------------------

// syncBuffer collects log output written from the watcher's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// errorLog records the kinds passed to onError.
type errorLog struct {
	mu    sync.Mutex
	kinds []string
}

func (e *errorLog) add(kind string) {
	e.mu.Lock()
	e.kinds = append(e.kinds, kind)
	e.mu.Unlock()
}

func (e *errorLog) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.kinds)
}

type watcherRun struct {
	watcher *PodWatcher
	index   *PodIndex
	errors  *errorLog
	logs    *syncBuffer
	cancel  context.CancelFunc
}

// newWatcher builds a watcher of namespaces against cfg with short back-offs; tune may change
// its timings before it starts. Cleanup stops it and waits for its goroutines.
func newWatcher(t *testing.T, cfg KubeConfig, namespaces []string, tune func(*PodWatcher)) *watcherRun {
	t.Helper()
	run := &watcherRun{index: NewPodIndex(namespaces, false), errors: &errorLog{}, logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(run.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	watcher, err := NewPodWatcher(cfg, run.index, namespaces, run.errors.add, logger)
	if err != nil {
		t.Fatal(err)
	}
	watcher.backoffMin, watcher.backoffMax = 10*time.Millisecond, 50*time.Millisecond
	if tune != nil {
		tune(watcher)
	}
	run.watcher = watcher
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel = cancel
	watcher.Start(ctx)
	t.Cleanup(func() {
		cancel()
		stopped := make(chan struct{})
		go func() { watcher.wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Error("the watcher did not stop after its context was cancelled")
		}
	})
	return run
}

func eventually(t *testing.T, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// -- against the fake API -----------------------------------------------------------------------

func TestWatcherListsPagesThenFollowsWatchEvents(t *testing.T) {
	kube := newFakeKube(t, podsTestNS, "team-b")
	const listed = 1100 // three pages of 500
	for i := range listed {
		kube.putPod(sandboxPod(fmt.Sprintf("sbx-%04d", i), podsTestNS, "127.0.0.1"))
	}
	kube.putPod(sandboxPod("pending", podsTestNS, "127.0.0.1", withPhase("Pending")))
	unlabelled := sandboxPod("unlabelled", podsTestNS, "127.0.0.1")
	delete(unlabelled["metadata"].(map[string]any)["labels"].(map[string]any), SandboxNameHashLabel)
	kube.putPod(unlabelled) // the label selector keeps it out
	run := newWatcher(t, kube.config(), []string{podsTestNS, "team-b"}, nil)

	eventually(t, "the index is ready", run.index.Ready)
	if run.index.Len() != listed || run.index.Get(podsTestNS, "pending") != nil {
		t.Fatalf("after the list: %d routable", run.index.Len())
	}
	if n := kube.listCalls(podsTestNS); n != 3 {
		t.Fatalf("%d list requests for %d pods, want 3 pages", n, listed)
	}

	kube.putPod(sandboxPod("sbx-new", "team-b", "127.0.0.1"))
	eventually(t, "an ADDED pod is routable", func() bool { return run.index.Get("team-b", "sbx-new") != nil })
	moved := sandboxPod("sbx-new", "team-b", "127.0.0.2")
	kube.putPod(moved)
	eventually(t, "a MODIFIED pod has its new address", func() bool {
		route := run.index.Get("team-b", "sbx-new")
		return route != nil && route.Addresses[0].String() == "127.0.0.2"
	})
	kube.putPod(sandboxPod("pending", podsTestNS, "127.0.0.1")) // now Running
	eventually(t, "a pod that started is routable", func() bool { return run.index.Get(podsTestNS, "pending") != nil })
	kube.deletePod("team-b", "sbx-new")
	eventually(t, "a DELETED pod is gone", func() bool { return run.index.Get("team-b", "sbx-new") == nil })

	for _, r := range kube.recorded() {
		if r.auth != "Bearer fake-service-account-token" {
			t.Errorf("%s sent %q", r.path, r.auth)
		}
		if !strings.HasPrefix(r.path, "/api/v1/namespaces/"+podsTestNS+"/pods?labelSelector=agents.x-k8s.io%2Fsandbox-name-hash&") &&
			!strings.HasPrefix(r.path, "/api/v1/namespaces/team-b/pods?labelSelector=agents.x-k8s.io%2Fsandbox-name-hash&") {
			t.Errorf("unexpected request %s", r.path)
		}
	}
	for _, path := range kube.watchPaths() {
		for _, want := range []string{"&allowWatchBookmarks=true", "&timeoutSeconds=240", "&resourceVersion="} {
			if !strings.Contains(path, want) {
				t.Errorf("watch %s lacks %s", path, want)
			}
		}
	}
	if errs := run.errors.get(); len(errs) != 0 {
		t.Errorf("errors: %v\n%s", errs, run.logs)
	}
}

func TestExpiredWatchIsRelistedAtOnce(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	kube.putPod(sandboxPod("sbx-a", podsTestNS, "127.0.0.1"))
	run := newWatcher(t, kube.config(), []string{podsTestNS}, func(w *PodWatcher) {
		w.backoffMin, w.backoffMax = time.Hour, time.Hour // 410 must not wait for a back-off
	})
	eventually(t, "the index is ready", run.index.Ready)
	eventually(t, "the watch is open", func() bool { return len(kube.watchPaths()) == 1 })
	lists := kube.listCalls(podsTestNS)
	kube.expireWatches()
	eventually(t, "the router lists again after 410 Gone", func() bool { return kube.listCalls(podsTestNS) > lists })
	kube.putPod(sandboxPod("sbx-after-relist", podsTestNS, "127.0.0.1"))
	eventually(t, "a pod added after the relist is routable", func() bool {
		return run.index.Get(podsTestNS, "sbx-after-relist") != nil
	})
	if errs := run.errors.get(); !slices.Equal(errs, []string{"expired"}) {
		t.Fatalf("errors = %v", errs)
	}
	if run.index.Get(podsTestNS, "sbx-a") == nil {
		t.Fatal("the relist lost a pod")
	}
}

func TestRotatedTokenIsSentOnTheNextRequest(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	run := newWatcher(t, kube.config(), []string{podsTestNS}, nil)
	// Once the watch is open no request is in flight, so none can fall between the new token
	// file and the fake accepting it.
	eventually(t, "the watch is open", func() bool { return len(kube.watchPaths()) == 1 })
	kube.rotateToken(t, "rotated-service-account-token")
	kube.expireWatches() // the next list/watch must authenticate with the new token
	kube.putPod(sandboxPod("sbx-rotated", podsTestNS, "127.0.0.1"))
	eventually(t, "the rotated token was picked up", func() bool { return run.index.Get(podsTestNS, "sbx-rotated") != nil })
	requests := kube.recorded()
	first := slices.IndexFunc(requests, func(r recordedRequest) bool {
		return r.auth == "Bearer rotated-service-account-token"
	})
	if first < 0 {
		t.Fatal("the rotated token was never sent")
	}
	for _, r := range requests[first:] {
		if r.auth != "Bearer rotated-service-account-token" {
			t.Errorf("after the rotation %s still sent %q", r.path, r.auth)
		}
	}
	if errs := run.errors.get(); !slices.Equal(errs, []string{"expired"}) { // no 401 on the way
		t.Fatalf("errors = %v", errs)
	}
}

func TestReadinessWaitsForTheFirstList(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	kube.setFailStatus(500)
	run := newWatcher(t, kube.config(), []string{podsTestNS}, nil)
	eventually(t, "a few lists failed", func() bool { return len(run.errors.get()) >= 3 })
	if run.index.Ready() {
		t.Fatal("ready although no list succeeded")
	}
	for _, kind := range run.errors.get() {
		if kind != "error" {
			t.Fatalf("a 500 counted as %q", kind)
		}
	}
	if !strings.Contains(run.logs.String(), "HTTP 500: injected failure") {
		t.Fatalf("the log does not show the API's message:\n%s", run.logs)
	}
	kube.setFailStatus(0)
	eventually(t, "the index is ready", run.index.Ready)
}

func TestUnauthorizedAndForbiddenAreCountedAsForbidden(t *testing.T) {
	kube := newFakeKube(t, podsTestNS) // "team-b" is not granted: 403
	kube.putPod(sandboxPod("sbx-a", podsTestNS, "127.0.0.1"))
	kube.writeToken(t, "a-stale-token") // 401 until the right one is back
	run := newWatcher(t, kube.config(), []string{podsTestNS, "team-b"}, nil)
	eventually(t, "401s were reported", func() bool { return len(run.errors.get()) >= 4 })
	kube.writeToken(t, "fake-service-account-token")
	eventually(t, "the namespace that is granted is listed", func() bool { return run.index.Get(podsTestNS, "sbx-a") != nil })
	eventually(t, "the 403 of team-b is logged", func() bool { return strings.Contains(run.logs.String(), "HTTP 403") })
	for _, kind := range run.errors.get() {
		if kind != "forbidden" {
			t.Fatalf("errors = %v", run.errors.get())
		}
	}
	logs := run.logs.String()
	if !strings.Contains(logs, "needs pods list/watch in this namespace") || !strings.Contains(logs, "HTTP 401") ||
		!strings.Contains(logs, "level=WARN") {
		t.Fatalf("the log does not explain the failures:\n%s", logs)
	}
	if run.index.Ready() {
		t.Fatal("ready although team-b was never listed")
	}
}

// The Python unit test of the loop, with a scripted API: the pages of a list, a watch that
// ends with a 410 ERROR event, a relist that fails once (403) and then works.
func TestWatchLoopListsPagesWatchesRelistsOn410AndSurvivesErrors(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	added := sandboxPod("sbx-c", podsTestNS, "127.0.0.1")
	added["metadata"].(map[string]any)["resourceVersion"] = "11"
	script := []func(http.ResponseWriter){
		func(w http.ResponseWriter) {
			writeJSON(w, 200, map[string]any{"metadata": map[string]any{"continue": "c1"},
				"items": []any{sandboxPod("sbx-a", podsTestNS, "127.0.0.1")}})
		},
		func(w http.ResponseWriter) {
			writeJSON(w, 200, map[string]any{"metadata": map[string]any{"resourceVersion": "10"},
				"items": []any{sandboxPod("sbx-b", podsTestNS, "127.0.0.1")}})
		},
		func(w http.ResponseWriter) {
			for _, event := range []any{
				map[string]any{"type": "ADDED", "object": added},
				map[string]any{"type": "DELETED", "object": sandboxPod("sbx-a", podsTestNS, "127.0.0.1")},
				map[string]any{"type": "ERROR", "object": map[string]any{"code": 410, "message": "too old"}},
			} {
				data, _ := json.Marshal(event)
				_, _ = w.Write(append(data, '\n'))
			}
		},
		func(w http.ResponseWriter) { writeJSON(w, 403, kubeStatus(403, "Forbidden", "forbidden")) },
		func(w http.ResponseWriter) {
			writeJSON(w, 200, map[string]any{"metadata": map[string]any{"resourceVersion": "20"},
				"items": []any{sandboxPod("sbx-z", podsTestNS, "127.0.0.1")}})
		},
	}
	server := newTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.RequestURI)
		var step func(http.ResponseWriter)
		if len(script) > 0 {
			step, script = script[0], script[1:]
		}
		mu.Unlock()
		if step == nil { // the end of the script ends the loop
			cancel()
			<-r.Context().Done()
			return
		}
		step(w)
	}))
	defer server.Close()
	dir := t.TempDir()
	writeCA(t, dir, server)
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	address, _ := url.Parse(server.URL)
	port, _ := strconv.Atoi(address.Port())
	index := NewPodIndex([]string{podsTestNS}, false)
	errs := &errorLog{}
	watcher, err := NewPodWatcher(KubeConfig{Host: "127.0.0.1", Port: port, ServiceAccountDir: dir}, index,
		[]string{podsTestNS}, errs.add, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	watcher.backoffMin = time.Millisecond
	watcher.Start(ctx)
	watcher.wait()

	var routable []string
	for _, name := range []string{"sbx-a", "sbx-b", "sbx-c", "sbx-z"} {
		if index.Get(podsTestNS, name) != nil {
			routable = append(routable, name)
		}
	}
	if !slices.Equal(routable, []string{"sbx-z"}) {
		t.Errorf("routable = %v", routable)
	}
	if got := errs.get(); !slices.Equal(got, []string{"expired", "forbidden"}) {
		t.Errorf("errors = %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) < 6 {
		t.Fatalf("paths = %v", paths)
	}
	if want := podsPath(podsTestNS, [2]string{"limit", "500"}); paths[0] != want {
		t.Errorf("first list %s, want %s", paths[0], want)
	}
	if want := podsPath(podsTestNS, [2]string{"limit", "500"}, [2]string{"continue", "c1"}); paths[1] != want {
		t.Errorf("second page %s, want %s", paths[1], want)
	}
	if !strings.Contains(paths[2], "watch=1") || !strings.Contains(paths[2], "resourceVersion=10") {
		t.Errorf("watch %s", paths[2])
	}
	if !strings.Contains(paths[5], "watch=1") || !strings.Contains(paths[5], "resourceVersion=20") {
		t.Errorf("the watch after the relist: %s", paths[5])
	}
	for _, p := range paths {
		if !strings.HasPrefix(p, "/api/v1/namespaces/"+podsTestNS+"/pods?labelSelector=agents.x-k8s.io%2Fsandbox-name-hash") {
			t.Errorf("path %s", p)
		}
	}
}

func TestEndedWatchIsResumedAndTheNamespaceRelistedPeriodically(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	kube.putPod(sandboxPod("sbx-a", podsTestNS, "127.0.0.1"))
	run := newWatcher(t, kube.config(), []string{podsTestNS}, func(w *PodWatcher) {
		w.watchTimeout = time.Second // the fake ends each watch after timeoutSeconds=1
		w.relistEvery = 2500 * time.Millisecond
	})
	eventually(t, "the index is ready", run.index.Ready)
	kube.putPod(sandboxPod("sbx-b", podsTestNS, "127.0.0.1"))
	eventually(t, "the watch was resumed", func() bool { return len(kube.watchPaths()) >= 2 })
	// The resumed watch continues from the last event's resourceVersion, not the list's.
	kube.mu.Lock()
	last := strconv.Itoa(kube.version)
	kube.mu.Unlock()
	if path := kube.watchPaths()[1]; !strings.Contains(path, "&resourceVersion="+last+"&") {
		t.Fatalf("the resumed watch %s does not start at %s", path, last)
	}
	eventually(t, "a periodic relist happened", func() bool { return kube.listCalls(podsTestNS) >= 2 })
	if errs := run.errors.get(); len(errs) != 0 {
		t.Fatalf("errors = %v", errs)
	}
}

func TestSilentWatchIsAbandonedAfterTheIdleTimeout(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	kube.mu.Lock()
	kube.silentWatches = true
	kube.mu.Unlock()
	run := newWatcher(t, kube.config(), []string{podsTestNS}, func(w *PodWatcher) {
		w.watchIdle = 200 * time.Millisecond
	})
	eventually(t, "the silent watch was given up and the namespace listed again", func() bool {
		return kube.listCalls(podsTestNS) >= 2
	})
	if errs := run.errors.get(); len(errs) == 0 || errs[0] != "error" {
		t.Fatalf("errors = %v", errs)
	}
	if !strings.Contains(run.logs.String(), "sent nothing for 200ms") {
		t.Fatalf("the log does not say why:\n%s", run.logs)
	}
	if !run.index.Ready() {
		t.Fatal("the lists did not make the index ready")
	}
}

func TestOversizedAnswersAreErrors(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	for i := range 20 {
		kube.putPod(sandboxPod(fmt.Sprintf("sbx-%d", i), podsTestNS, "127.0.0.1"))
	}
	run := newWatcher(t, kube.config(), []string{podsTestNS}, func(w *PodWatcher) { w.maxListBytes = 4096 })
	// The error is counted before it is logged: wait for both.
	eventually(t, "the oversized list failed", func() bool {
		return len(run.errors.get()) >= 1 && strings.Contains(run.logs.String(), "exceeds 4096 bytes")
	})
	if run.index.Ready() {
		t.Fatalf("ready %v; log:\n%s", run.index.Ready(), run.logs)
	}

	kube2 := newFakeKube(t, podsTestNS)
	run2 := newWatcher(t, kube2.config(), []string{podsTestNS}, func(w *PodWatcher) { w.maxEventBytes = 1024 })
	eventually(t, "the index is ready", run2.index.Ready)
	oversized := sandboxPod("sbx-big", podsTestNS, "127.0.0.1")
	oversized["metadata"].(map[string]any)["labels"].(map[string]any)["padding"] = strings.Repeat("x", 2000)
	kube2.putPod(oversized)
	eventually(t, "the oversized event failed the watch", func() bool {
		return len(run2.errors.get()) >= 1 && strings.Contains(run2.logs.String(), "exceeds 1024 bytes")
	})
}

func TestAnUntrustedAPIServerIsRefused(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	// Every httptest server has the same certificate: trust a CA of our own instead.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(kube.saDir, "ca.crt"), block, 0o600); err != nil {
		t.Fatal(err)
	}
	run := newWatcher(t, kube.config(), []string{podsTestNS}, nil)
	eventually(t, "the TLS failure was reported", func() bool { return len(run.errors.get()) >= 1 })
	if run.index.Ready() || len(kube.recorded()) != 0 {
		t.Fatal("a server the CA did not sign was talked to")
	}
	if !strings.Contains(run.logs.String(), "certificate") {
		t.Fatalf("log:\n%s", run.logs)
	}
}

func TestNewPodWatcherNamesTheUnusableFile(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	index := NewPodIndex([]string{podsTestNS}, false)
	cfg := kube.config()
	if _, err := NewPodWatcher(cfg, index, []string{podsTestNS}, nil, nil); err != nil {
		t.Fatalf("a complete service-account dir was refused: %v", err)
	}

	empty := t.TempDir()
	cfg.ServiceAccountDir = empty
	_, err := NewPodWatcher(cfg, index, []string{podsTestNS}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(empty, "token")) ||
		!strings.Contains(err.Error(), "ROUTER_SERVICEACCOUNT_DIR") {
		t.Fatalf("missing token: %v", err)
	}
	if err := os.WriteFile(filepath.Join(empty, "token"), []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = NewPodWatcher(cfg, index, []string{podsTestNS}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(empty, "ca.crt")) ||
		!strings.Contains(err.Error(), "automountServiceAccountToken") {
		t.Fatalf("missing CA: %v", err)
	}
	if err := os.WriteFile(filepath.Join(empty, "ca.crt"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = NewPodWatcher(cfg, index, []string{podsTestNS}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("bad CA: %v", err)
	}
	cfg = kube.config()
	cfg.Host = ""
	if _, err := NewPodWatcher(cfg, index, []string{podsTestNS}, nil, nil); err == nil {
		t.Fatal("no API host was accepted")
	}
}

func TestWatcherStopsPromptlyWhenCancelled(t *testing.T) {
	kube := newFakeKube(t, podsTestNS)
	kube.setFailStatus(500)
	run := newWatcher(t, kube.config(), []string{podsTestNS}, func(w *PodWatcher) {
		w.backoffMin, w.backoffMax = time.Hour, time.Hour // stop must not wait out a back-off
	})
	eventually(t, "the first list failed", func() bool { return len(run.errors.get()) == 1 })
	kube2 := newFakeKube(t, podsTestNS)
	run2 := newWatcher(t, kube2.config(), []string{podsTestNS}, nil)
	eventually(t, "the watch is open", func() bool { return len(kube2.watchPaths()) == 1 })
	for _, r := range []*watcherRun{run, run2} {
		started := time.Now()
		r.cancel()
		r.watcher.wait()
		if elapsed := time.Since(started); elapsed > 2*time.Second {
			t.Fatalf("stopping took %s", elapsed)
		}
	}
}

// -- pure helpers -------------------------------------------------------------------------------

func TestPodsPathEscapesLikePythonQuote(t *testing.T) {
	got := podsPath("agent-sandbox-demo", [2]string{"limit", "500"}, [2]string{"continue", "a b/c+d=e&f~g"})
	want := "/api/v1/namespaces/agent-sandbox-demo/pods?labelSelector=agents.x-k8s.io%2Fsandbox-name-hash" +
		"&limit=500&continue=a%20b%2Fc%2Bd%3De%26f~g"
	if got != want {
		t.Fatalf("podsPath = %s\nwant        %s", got, want)
	}
}

func TestStatusMessageAndErrorKinds(t *testing.T) {
	for body, want := range map[string]string{
		`{"kind":"Status","message":"pods is forbidden","reason":"Forbidden"}`: "pods is forbidden",
		`{"message":"","reason":"Expired"}`:                                    "Expired",
		`{"code":500}`:                                                         `{"code":500}`,
		`<html>bad gateway</html>`:                                             "<html>bad gateway</html>",
		strings.Repeat("x", 300):                                               strings.Repeat("x", 200),
	} {
		if got := statusMessage([]byte(body)); got != want {
			t.Errorf("statusMessage(%.40s) = %q, want %q", body, got, want)
		}
	}
	for err, want := range map[error]string{
		&kubeAPIError{Status: 410}:                          "expired",
		fmt.Errorf("watch: %w", &kubeAPIError{Status: 401}): "forbidden",
		&kubeAPIError{Status: 403}:                          "forbidden",
		&kubeAPIError{Status: 500}:                          "error",
		io.ErrUnexpectedEOF:                                 "error",
	} {
		if got := errorKind(err); got != want {
			t.Errorf("errorKind(%v) = %s, want %s", err, got, want)
		}
	}
	if got := (&kubeAPIError{Status: 0, Message: "m"}).Error(); got != "m" {
		t.Errorf("codeless error = %q", got)
	}
}
