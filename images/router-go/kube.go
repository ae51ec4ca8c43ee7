package main

// Kubernetes API access of the watch resolver: the in-cluster client and the pod list+watch loop
// that keeps a PodIndex in step with the cluster (the port of sandbox_router/kube.py).
//
// Only what the router needs, with the RBAC it needs: `list` and `watch` of pods in each sandbox
// namespace (no `get`, no other resource, nothing cluster-wide). Requests go over HTTPS to
// KUBERNETES_SERVICE_HOST:PORT, verified against the service account's CA, and carry the
// service-account token, which is re-read for every request because the kubelet rotates
// projected tokens on disk. One request per connection: lists are rare and a watch holds its
// connection for minutes, so there is nothing worth pooling, and no pooled connection can go
// stale across an API server restart.
//
// PodWatcher runs, per namespace: list (paginated), then watch from the list's resourceVersion;
// a watch that ends is resumed from the last resourceVersion seen; 410 Gone (history compacted)
// leads to a fresh list at once, any other error to a fresh list after a capped exponential
// back-off; every 10 minutes a full list heals anything a watch missed. The index keeps
// serving its last known state meanwhile.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// The list+watch loop's timing and size limits (kube.py's constants).
const (
	kubeRequestTimeout = 15 * time.Second
	// watchServerTimeout is the timeoutSeconds of each watch: the API server ends it then ...
	watchServerTimeout = 240 * time.Second
	// ... so silence well beyond it means a dead link.
	watchIdleTimeout = watchServerTimeout + 30*time.Second
	// relistInterval: a full re-list now and then heals anything a watch missed.
	relistInterval = 10 * time.Minute
	listPageSize   = 500
	maxListBytes   = 256 << 20 // a pod list page of hundreds of pods fits easily
	maxEventBytes  = 16 << 20  // one watch event line, or one error answer
	backoffMin     = 500 * time.Millisecond
	backoffMax     = 30 * time.Second
)

// KubeConfig is where the API server is and how to authenticate (in-cluster service account):
// KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and the mounted service-account directory
// (ROUTER_SERVICEACCOUNT_DIR, by default /var/run/secrets/kubernetes.io/serviceaccount).
type KubeConfig struct {
	Host              string
	Port              int
	ServiceAccountDir string
}

// kubeAPIError is a non-2xx answer of the API server, or an ERROR event of a watch.
type kubeAPIError struct {
	Status  int
	Message string
}

func (e *kubeAPIError) Error() string {
	if e.Status == 0 { // an ERROR event without a code
		return e.Message
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
}

// errorKind is the sandbox_router_watch_errors_total label of a list/watch failure: "expired"
// (410 Gone: the resourceVersion is older than the server's history), "forbidden" (401/403:
// the token or the RBAC grant), or "error" (anything else).
func errorKind(err error) string {
	var apiErr *kubeAPIError
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case http.StatusGone:
			return "expired"
		case http.StatusUnauthorized, http.StatusForbidden:
			return "forbidden"
		}
	}
	return "error"
}

// statusMessage is the gist of an error answer's body: a Status object's message (or reason),
// else the start of the body.
func statusMessage(body []byte) string {
	var payload any
	if err := json.Unmarshal(body, &payload); err != nil {
		return strings.ToValidUTF8(string(body[:min(len(body), 200)]), "\uFFFD")
	}
	if object, ok := payload.(map[string]any); ok {
		for _, field := range []string{"message", "reason"} {
			if value, present := object[field]; present && truthy(value) {
				return truncateRunes(fmt.Sprint(value), 500)
			}
		}
	}
	return truncateRunes(string(bytes.TrimSpace(body)), 500)
}

// truthy is Python's truth value of a decoded JSON value (what `a or b` falls through on).
func truthy(value any) bool {
	switch v := value.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case float64:
		return v != 0
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

func truncateRunes(text string, limit int) string {
	if utf8.RuneCountInString(text) <= limit {
		return text
	}
	return string([]rune(text)[:limit])
}

// escapeComponent percent-encodes everything but the unreserved characters, as Python's
// quote(value, safe="") does (url.QueryEscape would turn a space into "+").
func escapeComponent(value string) string {
	return strings.ReplaceAll(url.QueryEscape(value), "+", "%20")
}

// podsPath is the path of a namespace's pod collection, selecting sandbox pods by their label,
// with query parameters in the given order (name, value pairs).
func podsPath(namespace string, query ...[2]string) string {
	var b strings.Builder
	b.WriteString("/api/v1/namespaces/")
	b.WriteString(escapeComponent(namespace))
	b.WriteString("/pods?labelSelector=")
	b.WriteString(escapeComponent(SandboxNameHashLabel))
	for _, kv := range query {
		b.WriteByte('&')
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(escapeComponent(kv[1]))
	}
	return b.String()
}

// podList is a PodList answer: one page of pods.
type podList struct {
	Metadata struct {
		Continue        string `json:"continue"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []*Pod `json:"items"`
}

// watchEvent is one line of a watch stream; Object is a Pod, or a Status for type ERROR.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watchStatus is the Status object of an ERROR event.
type watchStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// PodWatcher keeps a PodIndex in step with the sandbox pods of its namespaces.
type PodWatcher struct {
	index      *PodIndex
	namespaces []string
	onError    func(kind string)
	log        *slog.Logger
	client     *http.Client
	baseURL    string // https://host:port
	tokenPath  string

	// Timing and limits: the constants above; tests shrink them.
	requestTimeout time.Duration
	watchTimeout   time.Duration // the timeoutSeconds of a watch request
	watchIdle      time.Duration
	relistEvery    time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	maxListBytes   int64
	maxEventBytes  int

	running sync.WaitGroup
}

// serviceAccountFileError explains an unusable service-account file, and the fix.
func serviceAccountFileError(path, problem string) error {
	return fmt.Errorf("%s %s: ROUTER_RESOLVER=watch authenticates to the Kubernetes API with the pod's "+
		"service-account token and verifies it against the service-account CA; mount them "+
		"(automountServiceAccountToken: true) or set ROUTER_SERVICEACCOUNT_DIR", path, problem)
}

// NewPodWatcher is the list+watch loop of namespaces feeding index, not yet started. onError
// (may be nil) receives the kind of every list/watch failure (see errorKind). It fails when the
// service-account token or CA cannot be read, or the CA holds no certificate.
func NewPodWatcher(cfg KubeConfig, index *PodIndex, namespaces []string, onError func(kind string),
	logger *slog.Logger) (*PodWatcher, error) {
	if cfg.Host == "" || cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("the Kubernetes API address %q port %d is not usable: ROUTER_RESOLVER=watch "+
			"needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (it must run in a pod)", cfg.Host, cfg.Port)
	}
	tokenPath := filepath.Join(cfg.ServiceAccountDir, "token")
	if _, err := os.ReadFile(tokenPath); err != nil {
		return nil, serviceAccountFileError(tokenPath, fmt.Sprintf("cannot be read (%v)", unwrapPathError(err)))
	}
	caPath := filepath.Join(cfg.ServiceAccountDir, "ca.crt")
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return nil, serviceAccountFileError(caPath, fmt.Sprintf("cannot be read (%v)", unwrapPathError(err)))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, serviceAccountFileError(caPath, "holds no PEM certificate")
	}
	if onError == nil {
		onError = func(string) {}
	}
	if logger == nil {
		logger = slog.Default()
	}
	transport := &http.Transport{
		Proxy: nil, // in-cluster: straight to the API server, whatever HTTPS_PROXY says
		DialContext: (&net.Dialer{
			Timeout:   kubeRequestTimeout,
			KeepAlive: 30 * time.Second, // TCP keep-alives also help notice a dead watch link
		}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: kubeRequestTimeout,
		// One request per connection (see the file comment); HTTP/1.1, since the watch stream
		// is read line by line either way and a custom TLS config keeps HTTP/2 off.
		DisableKeepAlives: true,
		// The body limits then count what the API server sends, as kube.py's do.
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
	}
	return &PodWatcher{
		index:      index,
		namespaces: sortedUnique(namespaces),
		onError:    onError,
		log:        logger,
		client: &http.Client{
			Transport: transport,
			// The API server does not redirect pod lists; a 3xx is an error answer, and the
			// token is never sent anywhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		baseURL:        "https://" + net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		tokenPath:      tokenPath,
		requestTimeout: kubeRequestTimeout,
		watchTimeout:   watchServerTimeout,
		watchIdle:      watchIdleTimeout,
		relistEvery:    relistInterval,
		backoffMin:     backoffMin,
		backoffMax:     backoffMax,
		maxListBytes:   maxListBytes,
		maxEventBytes:  maxEventBytes,
	}, nil
}

// unwrapPathError drops the path from an *os.PathError: the message names the file already.
func unwrapPathError(err error) error {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}

func sortedUnique(values []string) []string {
	out := slices.Clone(values)
	slices.Sort(out)
	return slices.Compact(out)
}

// Start runs one list+watch goroutine per namespace until ctx is cancelled.
func (w *PodWatcher) Start(ctx context.Context) {
	for _, namespace := range w.namespaces {
		w.running.Add(1)
		go func() {
			defer w.running.Done()
			w.run(ctx, namespace)
		}()
	}
}

// wait blocks until the goroutines of Start have returned (after ctx was cancelled).
func (w *PodWatcher) wait() { w.running.Wait() }

// run is the loop of one namespace: list, watch until the next relist is due, and start over;
// on failure, list again (after a back-off unless the watch merely expired).
func (w *PodWatcher) run(ctx context.Context, namespace string) {
	backoff := w.backoffMin
	for {
		err := func() error {
			version, err := w.list(ctx, namespace)
			if err != nil {
				return err
			}
			listed := time.Now()
			backoff = w.backoffMin // the API answers again
			for time.Since(listed) < w.relistEvery {
				if version, err = w.watch(ctx, namespace, version); err != nil {
					return err
				}
			}
			return nil // time for a full list
		}()
		if ctx.Err() != nil {
			return // stopping: whatever failed failed because of that
		}
		if err == nil {
			continue
		}
		kind := errorKind(err)
		// Logged before it is counted: whoever sees the count (a scrape, a test) finds the reason.
		if kind == "expired" {
			w.log.Info("watch of sandbox pods expired (410); listing again", "namespace", namespace)
			w.onError(kind)
			continue
		}
		hint := ""
		if kind == "forbidden" {
			hint = " (the router's service account needs pods list/watch in this namespace)"
		}
		w.log.Warn("watching sandbox pods failed; listing again after a back-off", "namespace", namespace,
			"kind", kind, "error", err.Error()+hint, "retry_in", backoff)
		w.onError(kind)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, w.backoffMax)
	}
}

// list reads all pages of the namespace's sandbox pods into the index and returns the list's
// resourceVersion, where the watch starts.
func (w *PodWatcher) list(ctx context.Context, namespace string) (string, error) {
	var items []*Pod
	token, version := "", ""
	for {
		query := [][2]string{{"limit", strconv.Itoa(listPageSize)}}
		if token != "" {
			query = append(query, [2]string{"continue", token})
		}
		var page podList
		if err := w.getJSON(ctx, podsPath(namespace, query...), &page); err != nil {
			return "", err
		}
		for _, pod := range page.Items {
			if pod != nil { // a null item is not a pod
				items = append(items, pod)
			}
		}
		token, version = page.Metadata.Continue, page.Metadata.ResourceVersion
		if token == "" {
			break
		}
	}
	w.index.Replace(namespace, items)
	w.log.Info("sandbox pods listed", "namespace", namespace, "routable", w.index.Count(namespace))
	return version, nil
}

// watch applies the events of one watch request from version until the API server ends it,
// and returns the last resourceVersion seen (where the next watch resumes).
func (w *PodWatcher) watch(ctx context.Context, namespace, version string) (string, error) {
	path := podsPath(namespace, [2]string{"watch", "1"}, [2]string{"resourceVersion", version},
		[2]string{"allowWatchBookmarks", "true"},
		[2]string{"timeoutSeconds", strconv.Itoa(int(w.watchTimeout / time.Second))})
	body, err := w.open(ctx, path, w.watchIdle)
	if err != nil {
		return version, err
	}
	defer body.Close()
	lines := bufio.NewScanner(body)
	lines.Buffer(make([]byte, 0, min(64<<10, w.maxEventBytes)), w.maxEventBytes)
	for lines.Scan() {
		line := bytes.TrimSpace(lines.Bytes())
		if len(line) == 0 {
			continue
		}
		if line[0] != '{' { // well-formed JSON that is no event object is skipped, as in kube.py
			if !json.Valid(line) {
				return version, fmt.Errorf("a watch event of %s is not JSON: %.200q", path, line)
			}
			continue
		}
		var event watchEvent
		if err := json.Unmarshal(line, &event); err != nil {
			return version, fmt.Errorf("a watch event of %s cannot be decoded: %w", path, err)
		}
		object := event.Object
		if len(object) == 0 {
			object = json.RawMessage("{}")
		}
		if event.Type == "ERROR" {
			var status watchStatus
			if err := json.Unmarshal(object, &status); err != nil {
				return version, fmt.Errorf("an ERROR event of %s cannot be decoded: %w", path, err)
			}
			message := status.Message
			if message == "" {
				message = string(object)
			}
			return version, &kubeAPIError{Status: status.Code, Message: message}
		}
		pod := new(Pod)
		if err := json.Unmarshal(object, pod); err != nil {
			return version, fmt.Errorf("a %s event of %s cannot be decoded: %w", event.Type, path, err)
		}
		if v := pod.Metadata.ResourceVersion; v != "" {
			version = v // also of BOOKMARK events, which exist to advance it
		}
		switch event.Type {
		case "ADDED", "MODIFIED":
			w.index.Put(pod)
		case "DELETED":
			w.index.Remove(pod)
		}
	}
	if err := lines.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return version, fmt.Errorf("a watch event of %s exceeds %d bytes", path, w.maxEventBytes)
		}
		return version, err
	}
	return version, nil
}

// getJSON decodes the 200 answer of a GET into v.
func (w *PodWatcher) getJSON(ctx context.Context, path string, v any) error {
	body, err := w.open(ctx, path, w.requestTimeout)
	if err != nil {
		return err
	}
	defer body.Close()
	limited := &cappedReader{r: body, left: w.maxListBytes}
	if err := json.NewDecoder(limited).Decode(v); err != nil {
		if limited.exceeded {
			return fmt.Errorf("response of %s exceeds %d bytes", path, w.maxListBytes)
		}
		return fmt.Errorf("response of %s: %w", path, err)
	}
	return nil
}

// cappedReader fails once more than left bytes were read.
type cappedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
}

var errTooLarge = errors.New("response too large")

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		c.exceeded = true
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1] // one byte past the cap tells "too large" from "exactly the cap"
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		c.exceeded = true
		return n, errTooLarge
	}
	return n, err
}

// open sends GET path with the current service-account token and returns the body of a 200
// answer; any other status becomes a *kubeAPIError. idle bounds every wait for the server:
// for the answer's head (including connecting) and then between two pieces of its body, so a
// dead link is noticed without limiting how long a healthy watch may stream.
func (w *PodWatcher) open(ctx context.Context, path string, idle time.Duration) (io.ReadCloser, error) {
	raw, err := os.ReadFile(w.tokenPath) // every time: the kubelet rotates the token on disk
	if err != nil {
		return nil, fmt.Errorf("the service-account token cannot be read: %w", err)
	}
	token := strings.TrimSpace(string(raw))

	ctx, cancel := context.WithCancel(ctx)
	silent := new(atomic.Bool)
	timer := time.AfterFunc(idle, func() { silent.Store(true); cancel() })
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, w.baseURL+path, nil)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, err
	}
	request.Header.Set("Authorization", "Bearer "+token)
	request.Header.Set("Accept", "application/json")
	request.Header.Set("User-Agent", "sandbox-router")
	response, err := w.client.Do(request)
	if err != nil {
		timer.Stop()
		cancel()
		if silent.Load() {
			return nil, fmt.Errorf("GET %s: no answer from the API server within %s", path, idle)
		}
		return nil, err
	}
	body := &idleBody{body: response.Body, timer: timer, idle: idle, silent: silent, cancel: cancel, path: path}
	if response.StatusCode != http.StatusOK {
		defer body.Close()
		limited := &cappedReader{r: body, left: int64(w.maxEventBytes)}
		data, err := io.ReadAll(limited)
		if limited.exceeded {
			return nil, &kubeAPIError{Status: response.StatusCode, Message: "oversized error response"}
		}
		if err != nil {
			return nil, fmt.Errorf("HTTP %d, then reading its body: %w", response.StatusCode, err)
		}
		return nil, &kubeAPIError{Status: response.StatusCode, Message: statusMessage(data)}
	}
	return body, nil
}

// idleBody is a response body whose reads re-arm the idle timer of its request; when the timer
// fires the request's context is cancelled and reads fail with a message saying why.
type idleBody struct {
	body   io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	silent *atomic.Bool
	cancel context.CancelFunc
	path   string
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	if err != nil && err != io.EOF && b.silent.Load() {
		err = fmt.Errorf("GET %s: the API server sent nothing for %s", b.path, b.idle)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	b.cancel()
	return b.body.Close()
}
