package main

// proxy_test.go covers the data path of one client connection (proxy.go) end to end, in
// process and over loopback only: a real *Server from newServer on 127.0.0.1:0 in dns mode, a
// hand-written fake sandbox whose bytes each test controls, and raw client sockets. It checks
// what the sandbox receives (Host rewritten, routing and auth headers dropped, bodies framed
// and intact), what the client receives (interim responses swallowed, re-framing for HTTP/1.1
// and HTTP/1.0, HEAD, pipelining in order), upstream keep-alive (reuse, desync after extra
// bytes, stale and replayed pooled connections, the client connection kept after a streamed
// upload), streaming (a held head or chunk goes out before a read that would wait), the
// router's own answers (400, 502, 504, 413) and WebSocket tunnels. The harness here
// (ptStartRouter, ptStartUpstream, ptClient) is shared with server_test.go and metrics_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	ptToken     = "proxy-test-token"
	ptSandboxID = "sb-1"
)

// --- the router -------------------------------------------------------------------------------

type ptRouter struct {
	srv  *Server
	addr string
	port int
	done chan struct{} // closed when serve returned
	stop context.CancelFunc
}

// ptStartRouter starts a router in dns mode with loopback targets allowed; extra is
// alternating environment names and values overriding the defaults. It is stopped (and
// waited for) at cleanup.
func ptStartRouter(t *testing.T, extra ...string) *ptRouter {
	t.Helper()
	env := map[string]string{
		"ROUTER_RESOLVER":              "dns",
		"ROUTER_ALLOW_LOOPBACK_POD_IP": "true",
		"ROUTER_AUTH_TOKEN":            ptToken,
		"ROUTER_HOST":                  "127.0.0.1",
		"ROUTER_PORT":                  "0",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	s, err := LoadSettings(env)
	if err != nil {
		t.Fatalf("LoadSettings: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := newServer(ctx, s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatalf("listen: %v", err)
	}
	srv.setOwnEndpoints(ln)
	r := &ptRouter{srv: srv, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port,
		done: make(chan struct{}), stop: cancel}
	go func() {
		srv.serve(ln.(*net.TCPListener))
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Error("the router did not stop within 15 s")
		}
	})
	return r
}

// --- the fake sandbox -------------------------------------------------------------------------

type ptUpstream struct {
	ln      net.Listener
	port    int
	accepts atomic.Int32
	done    chan struct{} // closed at cleanup: handlers waiting for something give up

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

// ptUpConn is one connection the fake sandbox accepted.
type ptUpConn struct {
	net.Conn
	br    *bufio.Reader
	index int // 1-based, in accept order
	up    *ptUpstream
}

// ptStartUpstream starts a fake sandbox that runs handle for each accepted connection (and
// closes the connection when handle returns). Start it after the router, so that its cleanup
// (which closes every connection it holds) runs before the router's.
func ptStartUpstream(t *testing.T, handle func(c *ptUpConn)) *ptUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	u := &ptUpstream{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(u.accepts.Add(1))
			u.mu.Lock()
			if u.closed {
				u.mu.Unlock()
				conn.Close()
				return
			}
			u.conns = append(u.conns, conn)
			u.wg.Add(1)
			u.mu.Unlock()
			go func() {
				defer u.wg.Done()
				defer conn.Close()
				handle(&ptUpConn{Conn: conn, br: bufio.NewReader(conn), index: n, up: u})
			}()
		}
	}()
	t.Cleanup(u.close)
	return u
}

func (u *ptUpstream) close() {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return
	}
	u.closed = true
	close(u.done)
	u.ln.Close()
	for _, c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// readRequest reads one request and its whole body.
func (c *ptUpConn) readRequest() (*http.Request, []byte, error) {
	req, err := http.ReadRequest(c.br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// serve answers requests until the connection ends; answer returns the raw response bytes.
func (c *ptUpConn) serve(answer func(req *http.Request, body []byte) string) {
	for {
		req, body, err := c.readRequest()
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, answer(req, body)); err != nil {
			return
		}
	}
}

// wait blocks until ch is closed or the fake sandbox is shut down.
func (c *ptUpConn) wait(ch <-chan struct{}) {
	select {
	case <-ch:
	case <-c.up.done:
	}
}

// drain reads (and drops) everything until the connection ends.
func (c *ptUpConn) drain() { io.Copy(io.Discard, c.br) }

// ptOK is a complete response with a Content-Length body.
func ptOK(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// ptEcho answers with the request's method, path and body (to HEAD: only the length).
func ptEcho(req *http.Request, body []byte) string {
	text := req.Method + " " + req.URL.RequestURI() + " " + string(body)
	if req.Method == "HEAD" {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(text)) + "\r\n\r\n"
	}
	return ptOK(text)
}

// --- the client -------------------------------------------------------------------------------

type ptClient struct {
	net.Conn
	br *bufio.Reader
	t  *testing.T
}

// dial opens a client connection to the router (closed at cleanup, before the router stops).
func (r *ptRouter) dial(t *testing.T) *ptClient {
	t.Helper()
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatalf("dial router: %v", err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &ptClient{Conn: conn, br: bufio.NewReader(conn), t: t}
}

func (c *ptClient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		c.t.Fatalf("write to router: %v", err)
	}
}

// response reads one response (to a request with method) and its whole body.
func (c *ptClient) response(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read response body: %v", err)
	}
	return resp, string(body)
}

// roundTrip sends req and reads its response.
func (c *ptClient) roundTrip(req, method string) (*http.Response, string) {
	c.t.Helper()
	c.send(req)
	return c.response(method)
}

// ended: the router closed the connection (EOF or reset) within a few seconds, without
// sending anything more.
func (c *ptClient) ended() bool {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.br.Read(make([]byte, 1))
	if n > 0 {
		c.t.Errorf("unexpected byte after the response")
		return false
	}
	if err == nil || isTimeout(err) {
		return false
	}
	return true
}

// ptReq is a routed request head for the fake sandbox on port; extra are header lines.
func ptReq(method, target string, port int, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: router.test\r\nX-Sandbox-ID: %s\r\nX-Sandbox-Pod-IP: 127.0.0.1\r\n"+
		"X-Sandbox-Port: %d\r\nAuthorization: Bearer %s\r\n", method, target, ptSandboxID, port, ptToken)
	for _, h := range extra {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// ptReq10 is ptReq in HTTP/1.0.
func ptReq10(method, target string, port int, extra ...string) string {
	return strings.Replace(ptReq(method, target, port, extra...), " HTTP/1.1\r\n", " HTTP/1.0\r\n", 1)
}

// --- metrics and waiting ----------------------------------------------------------------------

func ptUpstreamErrors(srv *Server, kind string) int64 {
	srv.metrics.mu.Lock()
	defer srv.metrics.mu.Unlock()
	return srv.metrics.upstreamErrors[kind]
}

func ptRejected(srv *Server, reason string) int64 {
	srv.metrics.mu.Lock()
	defer srv.metrics.mu.Unlock()
	return srv.metrics.rejected[reason]
}

// ptWaitFor polls cond for up to 3 s.
func ptWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ptDetail(t *testing.T, body string) string {
	t.Helper()
	const prefix = `{"detail":"`
	if !strings.HasPrefix(body, prefix) || !strings.HasSuffix(body, `"}`) {
		t.Fatalf("not a JSON error body: %q", body)
	}
	return body[len(prefix) : len(body)-2]
}

func ptSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ptPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i*7%26)
	}
	return b
}

// --- requests and their bodies ----------------------------------------------------------------

func TestProxyGetReachesTheSandboxWithHostRewrittenAndRoutingHeadersDropped(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	seen := make(chan *http.Request, 1)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(req *http.Request, body []byte) string {
			seen <- req
			return "HTTP/1.1 201 Created\r\nX-Reply: yes\r\nContent-Length: 5\r\n\r\nhello"
		})
	})
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("GET", "/path/x?q=1&r=2", up.port, "X-Custom: kept", "X-Sandbox-Other: dropped",
		"X-Sandbox-Namespace: default", "X_Sandbox_ID: smuggled"), "GET")
	if resp.StatusCode != 201 || body != "hello" || resp.Header.Get("X-Reply") != "yes" {
		t.Fatalf("client got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	req := <-seen
	if want := "127.0.0.1:" + strconv.Itoa(up.port); req.Host != want {
		t.Errorf("upstream Host = %q, want %q", req.Host, want)
	}
	if req.Method != "GET" || req.RequestURI != "/path/x?q=1&r=2" || req.Proto != "HTTP/1.1" {
		t.Errorf("upstream request line = %s %s %s", req.Method, req.RequestURI, req.Proto)
	}
	if req.Header.Get("X-Custom") != "kept" {
		t.Errorf("X-Custom not forwarded: %v", req.Header)
	}
	for name := range req.Header {
		lower := strings.ToLower(name)
		if lower == "authorization" || strings.HasPrefix(lower, "x-sandbox") || strings.HasPrefix(lower, "x_sandbox") {
			t.Errorf("header %q reached the sandbox", name)
		}
	}
	// Counted once the response is written, which may be just after the client read it.
	ptWaitFor(t, "requests_total{code=201} = 1", func() bool { return r.srv.metrics.byCode[201].Load() == 1 })
}

func TestProxyReusesTheUpstreamConnectionForKeepAliveRequests(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) { c.serve(ptEcho) })
	c := r.dial(t)
	for i := range 3 {
		resp, body := c.roundTrip(ptReq("GET", "/r"+strconv.Itoa(i), up.port), "GET")
		if want := "GET /r" + strconv.Itoa(i) + " "; resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
	}
	// A second client connection to the same target shares the pool too (once the first
	// exchange has put the connection back, just after its response went out).
	ptWaitFor(t, "the upstream connection back in the pool", func() bool {
		r.srv.pool.mu.Lock()
		defer r.srv.pool.mu.Unlock()
		return len(r.srv.pool.idle["127.0.0.1:"+strconv.Itoa(up.port)+" "]) == 1
	})
	resp, _ := r.dial(t).roundTrip(ptReq("GET", "/other", up.port), "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("second client: %d", resp.StatusCode)
	}
	if n := up.accepts.Load(); n != 1 {
		t.Errorf("the sandbox accepted %d connections for 4 sequential requests, want 1", n)
	}
	if n := r.srv.metrics.upstreamConnects.Load(); n != 1 {
		t.Errorf("upstream_connections_opened_total = %d, want 1", n)
	}
}

func TestProxyAnswersPipelinedRequestsInOrder(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) { c.serve(ptEcho) })
	c := r.dial(t)
	// The chunked request goes last: what follows a streamed upload is
	// TestProxyKeepAliveSurvivesACompleteStreamedUpload's subject.
	c.send(ptReq("GET", "/1", up.port) +
		ptReq("POST", "/2", up.port, "Content-Length: 3") + "two" +
		ptReq("GET", "/3", up.port) +
		ptReq("HEAD", "/4", up.port) +
		ptReq("DELETE", "/5", up.port, "Content-Length: 0") +
		ptReq("PUT", "/6", up.port, "Transfer-Encoding: chunked") + "3\r\nsix\r\n0\r\n\r\n")
	want := []struct{ method, body string }{
		{"GET", "GET /1 "}, {"POST", "POST /2 two"}, {"GET", "GET /3 "}, {"HEAD", ""},
		{"DELETE", "DELETE /5 "}, {"PUT", "PUT /6 six"},
	}
	for i, w := range want {
		resp, body := c.response(w.method)
		if resp.StatusCode != 200 || body != w.body {
			t.Fatalf("response %d: %d %q, want 200 %q", i+1, resp.StatusCode, body, w.body)
		}
	}
}

func TestProxyRelaysContentLengthBodiesIntact(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 1000, 1 << 20} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t)
			up := ptStartUpstream(t, func(c *ptUpConn) {
				c.serve(func(req *http.Request, body []byte) string {
					// The body comes back as the response, with the sandbox's own checksum.
					return "HTTP/1.1 200 OK\r\nX-Sum: " + ptSum(body) + "\r\nX-Length: " + req.Header.Get("Content-Length") +
						"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
				})
			})
			payload := ptPayload(size)
			c := r.dial(t)
			go io.WriteString(c, ptReq("POST", "/upload", up.port, "Content-Length: "+strconv.Itoa(size))+string(payload))
			resp, body := c.response("POST")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("X-Sum"); got != ptSum(payload) {
				t.Errorf("the sandbox received a different body (sum %s)", got)
			}
			if got := resp.Header.Get("X-Length"); got != strconv.Itoa(size) {
				t.Errorf("upstream Content-Length = %q, want %d", got, size)
			}
			if body != string(payload) {
				t.Errorf("the client received %d bytes, not the %d sent", len(body), size)
			}
			// The connection still serves requests afterwards.
			if resp, body := c.roundTrip(ptReq("GET", "/after", up.port), "GET"); resp.StatusCode != 200 || body != "" {
				t.Errorf("next request: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// ptReadChunked reads a chunked body's raw bytes strictly (sizes, CRLFs, terminator).
func ptReadChunked(br *bufio.Reader) ([]byte, error) {
	var raw bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return raw.Bytes(), err
		}
		raw.WriteString(line)
		if !strings.HasSuffix(line, "\r\n") {
			return raw.Bytes(), errors.New("chunk line without CRLF")
		}
		size, err := strconv.ParseInt(strings.TrimSuffix(line, "\r\n"), 16, 64)
		if err != nil {
			return raw.Bytes(), fmt.Errorf("chunk size line %q", line)
		}
		if size == 0 {
			end, err := br.ReadString('\n')
			raw.WriteString(end)
			if err != nil || end != "\r\n" {
				return raw.Bytes(), fmt.Errorf("after the last chunk: %q %v", end, err)
			}
			return raw.Bytes(), nil
		}
		data := make([]byte, size+2)
		if _, err := io.ReadFull(br, data); err != nil {
			return raw.Bytes(), err
		}
		raw.Write(data)
		if !bytes.HasSuffix(data, []byte("\r\n")) {
			return raw.Bytes(), errors.New("chunk data without CRLF")
		}
	}
}

func TestProxyReChunksAChunkedRequestBody(t *testing.T) {
	t.Parallel()
	large := ptPayload(300 << 10)
	var largeChunked strings.Builder
	for rest := large; len(rest) > 0; {
		n := min(len(rest), 3001)
		largeChunked.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n" + string(rest[:n]) + "\r\n")
		rest = rest[n:]
	}
	largeChunked.WriteString("0\r\n\r\n")
	cases := []struct {
		name, sent, want string
	}{
		{"extensions and trailers", "4;ext=1\r\nWiki\r\n5;a=\"b\"\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n", "Wikipedia"},
		{"upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"empty", "0\r\n\r\n", ""},
		{"large", largeChunked.String(), string(large)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t)
			type upload struct {
				req  *http.Request
				raw  []byte
				err  error
				body string
			}
			seen := make(chan upload, 1)
			up := ptStartUpstream(t, func(c *ptUpConn) {
				req, err := http.ReadRequest(c.br)
				if err != nil {
					seen <- upload{err: err}
					return
				}
				raw, err := ptReadChunked(c.br) // the bytes on the wire, before decoding
				u := upload{req: req, raw: raw, err: err}
				if err == nil {
					decoded, derr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(raw)))
					u.body, u.err = string(decoded), derr
				}
				seen <- u
				io.WriteString(c, ptOK("done"))
			})
			c := r.dial(t)
			go io.WriteString(c, ptReq("POST", "/chunked", up.port, "Transfer-Encoding: chunked")+tc.sent)
			resp, body := c.response("POST")
			if resp.StatusCode != 200 || body != "done" {
				t.Fatalf("client got %d %q", resp.StatusCode, body)
			}
			u := <-seen
			if u.err != nil {
				t.Fatalf("the sandbox could not read the chunked body: %v (raw %q)", u.err, u.raw[:min(len(u.raw), 200)])
			}
			if te := u.req.TransferEncoding; len(te) != 1 || te[0] != "chunked" || u.req.Header.Get("Content-Length") != "" {
				t.Errorf("upstream framing: Transfer-Encoding %v, Content-Length %q", te, u.req.Header.Get("Content-Length"))
			}
			if u.body != tc.want {
				t.Errorf("the sandbox decoded %d bytes, want %d", len(u.body), len(tc.want))
			}
			if bytes.Contains(u.raw, []byte("ext")) || bytes.Contains(u.raw, []byte("X-Trailer")) {
				t.Errorf("chunk extensions or trailers were forwarded: %q", u.raw)
			}
		})
	}
}

func TestProxyAnswersExpectContinueItselfAndDropsExpect(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	seen := make(chan *http.Request, 1)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(req *http.Request, body []byte) string {
			seen <- req
			return ptEcho(req, body)
		})
	})
	c := r.dial(t)
	c.send(ptReq("POST", "/e", up.port, "Content-Length: 5", "Expect: 100-continue"))
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q %v, want the router's 100 Continue", line, err)
	}
	if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue head not terminated: %q", blank)
	}
	c.send("hello")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "POST /e hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if req := <-seen; req.Header.Get("Expect") != "" {
		t.Errorf("Expect was forwarded: %q", req.Header.Get("Expect"))
	}
}

// --- responses --------------------------------------------------------------------------------

func TestProxyDoesNotRelayInterimResponses(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(*http.Request, []byte) string {
			return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" +
				"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + ptOK("ok")
		})
	})
	c := r.dial(t)
	c.send(ptReq("GET", "/", up.port))
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("first line to the client %q (%v), want the final 200", line, err)
	}
	head, _ := httpHeadRest(c.br)
	if strings.Contains(head, "Link:") {
		t.Errorf("a header of the interim 103 reached the client: %q", head)
	}
	// The same connection goes on: nothing of the interim heads is left over.
	if resp, body := c.roundTrip(ptReq("GET", "/again", up.port), "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("next request: %d %q", resp.StatusCode, body)
	}
}

// httpHeadRest reads the rest of a head (after its status line) and its Content-Length body.
func httpHeadRest(br *bufio.Reader) (string, string) {
	var head strings.Builder
	length := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
		head.WriteString(line)
		if v, ok := strings.CutPrefix(strings.ToLower(line), "content-length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, length)
	io.ReadFull(br, body)
	return head.String(), string(body)
}

func TestProxyInterimResponsesDoNotExtendTheTimeout(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		for range 50 {
			if _, err := io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\n"); err != nil {
				return
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-c.up.done:
				return
			}
		}
	})
	c := r.dial(t)
	started := time.Now()
	resp, _ := c.roundTrip(ptReq("GET", "/", up.port, "X-Sandbox-Timeout: 1"), "GET")
	elapsed := time.Since(started)
	if resp.StatusCode != 504 || elapsed > 3*time.Second {
		t.Errorf("got %d after %v, want 504 after ~1 s", resp.StatusCode, elapsed)
	}
}

func TestProxyBodyWithoutLengthIsReChunkedForHTTP11(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		req, _, err := c.readRequest()
		if err != nil {
			return
		}
		if req.URL.Path == "/stream" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\npart1")
			time.Sleep(20 * time.Millisecond)
			io.WriteString(c, "part2")
			return // the close ends the body
		}
		io.WriteString(c, ptOK("next"))
		c.serve(ptEcho)
	})
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("GET", "/stream", up.port), "GET")
	if resp.StatusCode != 200 || body != "part1part2" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Close {
		t.Errorf("framing to an HTTP/1.1 client: Transfer-Encoding %v, close %v; want chunked, kept open",
			resp.TransferEncoding, resp.Close)
	}
	// The client connection survives (the upstream one does not: it was close-delimited).
	if resp, body := c.roundTrip(ptReq("GET", "/other", up.port), "GET"); resp.StatusCode != 200 || body != "next" {
		t.Errorf("next request: %d %q", resp.StatusCode, body)
	}
	if n := up.accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (a close-delimited one is never reused)", n)
	}
}

func TestProxyBodyWithoutLengthIsCloseDelimitedForHTTP10(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: keep-alive\r\n\r\nold ")
		time.Sleep(20 * time.Millisecond)
		io.WriteString(c, "client")
	})
	c := r.dial(t)
	c.send(ptReq10("GET", "/", up.port, "Connection: keep-alive"))
	all, err := io.ReadAll(c.br)
	if err != nil {
		t.Fatalf("the router did not close the connection after a close-delimited body: %v", err)
	}
	head, body, ok := strings.Cut(string(all), "\r\n\r\n")
	if !ok {
		t.Fatalf("no head in %q", all)
	}
	lower := strings.ToLower(head)
	if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.Contains(lower, "\r\nconnection: close") ||
		strings.Contains(lower, "transfer-encoding") || strings.Contains(lower, "content-length") {
		t.Errorf("head to an HTTP/1.0 client: %q", head)
	}
	if body != "old client" {
		t.Errorf("body %q, want %q", body, "old client")
	}
}

func TestProxyRelaysAChunkedResponseDecodedAndReChunked(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(*http.Request, []byte) string {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
				"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
		})
	})
	c := r.dial(t)
	c.send(ptReq("GET", "/", up.port))
	line, _ := c.br.ReadString('\n')
	head, _ := httpHeadRestNoBody(c.br)
	if line != "HTTP/1.1 200 OK\r\n" || !strings.Contains(strings.ToLower(head), "transfer-encoding: chunked") {
		t.Fatalf("head %q %q", line, head)
	}
	raw, err := ptReadChunked(c.br)
	if err != nil {
		t.Fatalf("chunked body to the client: %v (%q)", err, raw)
	}
	decoded, _ := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(raw)))
	if string(decoded) != "abcde" || bytes.Contains(raw, []byte("x=y")) {
		t.Errorf("body %q (raw %q)", decoded, raw)
	}
	// HTTP/1.0: decoded and close-delimited.
	c10 := r.dial(t)
	c10.send(ptReq10("GET", "/", up.port))
	all, _ := io.ReadAll(c10.br)
	if _, body, _ := strings.Cut(string(all), "\r\n\r\n"); body != "abcde" {
		t.Errorf("HTTP/1.0 body %q, want abcde", body)
	}
}

func httpHeadRestNoBody(br *bufio.Reader) (string, error) {
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return head.String(), err
		}
		if line == "\r\n" {
			return head.String(), nil
		}
		head.WriteString(line)
	}
}

func TestProxyHeadResponseHasNoBody(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(req *http.Request, _ []byte) string {
			if req.Method == "HEAD" {
				return "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-H: 1\r\n\r\n"
			}
			return ptOK("get")
		})
	})
	c := r.dial(t)
	c.send(ptReq("HEAD", "/h", up.port) + ptReq("GET", "/g", up.port))
	line, _ := c.br.ReadString('\n')
	head, err := httpHeadRestNoBody(c.br)
	if err != nil || line != "HTTP/1.1 200 OK\r\n" || !strings.Contains(head, "Content-Length: 10\r\n") {
		t.Fatalf("HEAD response head %q %q (%v)", line, head, err)
	}
	// The very next bytes are the GET's response: the HEAD answer had no body.
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "get" {
		t.Errorf("GET after HEAD: %d %q", resp.StatusCode, body)
	}
	if n := up.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}

// --- the sandbox ending exchanges its own way -------------------------------------------------

func TestProxySandboxAnsweringBeforeTheBodyEndsTheClientConnection(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	upstreamDone := make(chan struct{})
	up := ptStartUpstream(t, func(c *ptUpConn) {
		defer close(upstreamDone)
		if _, err := http.ReadRequest(c.br); err != nil { // the head only
			return
		}
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
		c.drain()
	})
	c := r.dial(t)
	c.send(ptReq("POST", "/big", up.port, "Content-Length: "+strconv.Itoa(8<<20)) + string(ptPayload(64<<10)))
	resp, body := c.response("POST")
	if resp.StatusCode != 403 || body != "nope" {
		t.Fatalf("got %d %q, want the sandbox's early 403", resp.StatusCode, body)
	}
	if !c.ended() {
		t.Error("the client connection stayed open with the rest of its body unread")
	}
	select {
	case <-upstreamDone:
	case <-time.After(3 * time.Second):
		t.Error("the upstream connection was not closed")
	}
	ptWaitFor(t, "the upstream gauge back at 0", func() bool { return r.srv.metrics.upstreamConnections.Load() == 0 })
}

func TestProxyBytesAfterACompleteResponseRetireTheUpstreamConnection(t *testing.T) {
	t.Parallel()
	for _, later := range []bool{false, true} {
		name := "in the same write"
		if later {
			name = "while idle in the pool"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t)
			up := ptStartUpstream(t, func(c *ptUpConn) {
				if c.index == 1 {
					if _, _, err := c.readRequest(); err != nil {
						return
					}
					extra := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nattacker"
					if later {
						io.WriteString(c, ptOK("ok"))
						time.Sleep(50 * time.Millisecond)
						io.WriteString(c, extra)
					} else {
						io.WriteString(c, ptOK("ok")+extra)
					}
				}
				c.serve(func(*http.Request, []byte) string {
					return "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: X-Private\r\nX-Private: secret\r\n\r\nhonest"
				})
			})
			c := r.dial(t)
			if resp, body := c.roundTrip(ptReq("GET", "/first", up.port), "GET"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("first: %d %q", resp.StatusCode, body)
			}
			if later {
				time.Sleep(150 * time.Millisecond)
			}
			resp, body := c.roundTrip(ptReq("GET", "/second", up.port), "GET")
			if resp.StatusCode != 200 || body != "honest" {
				t.Fatalf("second: %d %q, want 200 honest from a fresh connection", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Private") != "" {
				t.Error("a header nominated by Connection reached the client")
			}
			if n := up.accepts.Load(); n != 2 {
				t.Errorf("%d upstream connections, want 2 (the poisoned one must not be reused)", n)
			}
			if !later {
				if n := ptUpstreamErrors(r.srv, "desync"); n != 1 {
					t.Logf("desync counted %d times (the extra bytes arrived after the release)", n)
				}
			}
		})
	}
}

func TestProxyPooledConnectionClosedWhileIdleIsNotUsed(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	firstClosed := make(chan struct{})
	up := ptStartUpstream(t, func(c *ptUpConn) {
		if c.index == 1 {
			defer close(firstClosed)
			if req, body, err := c.readRequest(); err == nil {
				io.WriteString(c, ptEcho(req, body))
			}
			return // closes the connection while it idles in the router's pool
		}
		c.serve(ptEcho)
	})
	c := r.dial(t)
	if resp, _ := c.roundTrip(ptReq("GET", "/1", up.port), "GET"); resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	<-firstClosed
	time.Sleep(50 * time.Millisecond) // the FIN reaches the router's socket
	resp, body := c.roundTrip(ptReq("POST", "/2", up.port, "Content-Length: 4")+"data", "POST")
	if resp.StatusCode != 200 || body != "POST /2 data" {
		t.Fatalf("second: %d %q, want 200 from a fresh connection", resp.StatusCode, body)
	}
	if n := up.accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
	if n := ptUpstreamErrors(r.srv, "reset"); n != 0 {
		t.Errorf("reset counted %d times for a stale connection the router should have skipped", n)
	}
}

func TestProxyReplaysARequestThePooledConnectionDroppedOnReuse(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t)
			var droppedOnFirst atomic.Bool
			up := ptStartUpstream(t, func(c *ptUpConn) {
				if c.index == 1 {
					if req, body, err := c.readRequest(); err == nil {
						io.WriteString(c, ptEcho(req, body))
					}
					// The next request arrives whole and is dropped unanswered, as by a server
					// whose keep-alive timeout fired just as the router reused the connection.
					if _, _, err := c.readRequest(); err == nil {
						droppedOnFirst.Store(true)
					}
					return
				}
				c.serve(ptEcho)
			})
			c := r.dial(t)
			if resp, _ := c.roundTrip(ptReq("GET", "/1", up.port), "GET"); resp.StatusCode != 200 {
				t.Fatalf("first: %d", resp.StatusCode)
			}
			req, want := ptReq("GET", "/2", up.port), "GET /2 "
			if method == "POST" {
				req, want = ptReq("POST", "/2", up.port, "Content-Length: 9")+"replay-me", "POST /2 replay-me"
			}
			resp, body := c.roundTrip(req, method)
			if resp.StatusCode != 200 || body != want {
				t.Fatalf("second: %d %q, want 200 %q (replayed on a new connection)", resp.StatusCode, body, want)
			}
			if !droppedOnFirst.Load() {
				t.Error("the request was not sent on the pooled connection first (nothing was replayed)")
			}
			if n := up.accepts.Load(); n != 2 {
				t.Errorf("%d upstream connections, want 2", n)
			}
			// And the connection goes on normally.
			if resp, body := c.roundTrip(ptReq("GET", "/3", up.port), "GET"); resp.StatusCode != 200 || body != "GET /3 " {
				t.Errorf("third: %d %q", resp.StatusCode, body)
			}
		})
	}
}

func TestProxyFreshConnectionDroppedWithoutAnswerIs502(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) { c.readRequest() })
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("GET", "/", up.port), "GET")
	if resp.StatusCode != 502 || ptDetail(t, body) != "Could not connect to the backend sandbox: "+ptSandboxID {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if n := up.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections: a request on a fresh connection must not be replayed", n)
	}
	if n := ptUpstreamErrors(r.srv, "reset"); n != 1 {
		t.Errorf("upstream_errors{reset} = %d, want 1", n)
	}
	if !c.ended() {
		t.Error("the client connection stayed open after a 502")
	}
}

// --- the router's own answers -----------------------------------------------------------------

func TestProxySilentSandboxTimesOutWith504(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.readRequest()
		c.drain() // never answers
	})
	c := r.dial(t)
	started := time.Now()
	resp, body := c.roundTrip(ptReq("GET", "/", up.port, "X-Sandbox-Timeout: 1"), "GET")
	elapsed := time.Since(started)
	if resp.StatusCode != 504 || ptDetail(t, body) != "Timed out waiting for the backend sandbox: "+ptSandboxID {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if elapsed < 900*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("504 after %v, want about 1 s", elapsed)
	}
	if n := ptUpstreamErrors(r.srv, "timeout"); n != 1 {
		t.Errorf("upstream_errors{timeout} = %d, want 1", n)
	}
}

func TestProxyRefusedSandboxPortIs502(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t, "ROUTER_CONNECT_TIMEOUT_SECONDS", "0.5")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c := r.dial(t)
	started := time.Now()
	resp, body := c.roundTrip(ptReq("GET", "/", port), "GET")
	if resp.StatusCode != 502 || ptDetail(t, body) != "Could not connect to the backend sandbox: "+ptSandboxID {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Errorf("502 after %v with a 0.5 s connect timeout", elapsed)
	}
	if n := ptUpstreamErrors(r.srv, "connect_failed"); n != 1 {
		t.Errorf("upstream_errors{connect_failed} = %d, want 1", n)
	}
	if n := ptUpstreamErrors(r.srv, "connect_retried"); n < 1 {
		t.Errorf("upstream_errors{connect_retried} = %d, want the refusals retried", n)
	}
}

func TestProxyTheRouterItselfIsNotATarget(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("GET", "/", r.port), "GET")
	if resp.StatusCode != 400 || ptDetail(t, body) != "Invalid target IP address: it is the router itself." {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestProxyOversizedBodiesAre413(t *testing.T) {
	t.Parallel()
	t.Run("streamed chunked", func(t *testing.T) {
		t.Parallel()
		r := ptStartRouter(t, "ROUTER_MAX_REQUEST_BODY_BYTES", "1024")
		up := ptStartUpstream(t, func(c *ptUpConn) {
			c.readRequest() // reads until the router cuts the body off; never answers
			c.drain()
		})
		var body strings.Builder
		for range 8 {
			body.WriteString("200\r\n" + strings.Repeat("x", 512) + "\r\n")
		}
		body.WriteString("0\r\n\r\n")
		c := r.dial(t)
		resp, answer := c.roundTrip(ptReq("POST", "/", up.port, "Transfer-Encoding: chunked")+body.String(), "POST")
		if resp.StatusCode != 413 || ptDetail(t, answer) != "Request body too large." {
			t.Fatalf("got %d %q", resp.StatusCode, answer)
		}
		if n := ptRejected(r.srv, "request_too_large"); n != 1 {
			t.Errorf("rejected{request_too_large} = %d, want 1", n)
		}
	})
	t.Run("declared", func(t *testing.T) {
		t.Parallel()
		r := ptStartRouter(t, "ROUTER_MAX_REQUEST_BODY_BYTES", "1024")
		up := ptStartUpstream(t, func(c *ptUpConn) { c.serve(ptEcho) })
		c := r.dial(t)
		resp, answer := c.roundTrip(ptReq("POST", "/", up.port, "Content-Length: 1025"), "POST")
		if resp.StatusCode != 413 || ptDetail(t, answer) != "Request body too large." {
			t.Fatalf("got %d %q", resp.StatusCode, answer)
		}
		if n := up.accepts.Load(); n != 0 {
			t.Errorf("the sandbox was contacted %d times for a refused request", n)
		}
	})
}

// --- streaming latency ------------------------------------------------------------------------

// ptHeld: the sandbox sends first, then waits for release before sending rest.
func ptHeld(t *testing.T, first, rest string) (*ptRouter, *ptUpstream, chan struct{}) {
	r := ptStartRouter(t)
	release := make(chan struct{})
	up := ptStartUpstream(t, func(c *ptUpConn) {
		if _, _, err := c.readRequest(); err != nil {
			return
		}
		io.WriteString(c, first)
		c.wait(release)
		io.WriteString(c, rest)
		c.drain()
	})
	return r, up, release
}

func TestProxyStreamsAChunkedResponseChunkByChunk(t *testing.T) {
	t.Parallel()
	// An event stream: each chunk must reach the client when it arrives, not when the next one
	// does (the Python router writes every body piece at once).
	r, up, release := ptHeld(t, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"d\r\ndata: first\n\n\r\n", "e\r\ndata: second\n\n\r\n0\r\n\r\n")
	defer close(release)
	c := r.dial(t)
	c.send(ptReq("GET", "/events", up.port))
	c.SetReadDeadline(time.Now().Add(time.Second))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		// Fixed in this change (was a bug): expected the head and the first chunk within 1 s of the sandbox sending them;
		// actual: the router holds a chunk whose data and CRLF arrived together until the next
		// chunk-size line arrives (relay flushes only when up.br.Buffered() <= len(p), and the
		// chunk's CRLF is still buffered), so the head and "data: first" wait for "second".
		t.Fatalf("no response head within 1 s of the sandbox sending head and first chunk: %v", err)
	}
	piece := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(resp.Body, piece); err != nil {
		t.Fatalf("the first chunk did not reach the client within 1 s: %v", err)
	}
}

func TestProxySendsAResponseHeadBeforeItsBodyArrives(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, head, rest string }{
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", "2\r\nok\r\n0\r\n\r\n"},
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, up, release := ptHeld(t, tc.head, tc.rest)
			defer close(release)
			c := r.dial(t)
			c.send(ptReq("GET", "/slow-body", up.port))
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := http.ReadResponse(c.br, &http.Request{Method: "GET"}); err != nil {
				// Fixed in this change (was a bug): expected the response head within 1 s (the Python router flushes a held
				// head at the end of the read that carried it: "a head whose body has not arrived
				// yet must not wait for it"); actual: relay keeps the head in pending until the
				// first body piece, so a client waiting for headers (EventSource, long poll)
				// waits for the sandbox's first body byte.
				t.Fatalf("no response head within 1 s of the sandbox sending it (body not sent yet): %v", err)
			}
		})
	}
}

// --- WebSocket tunnels ------------------------------------------------------------------------

func TestProxyWebSocketUpgradeTunnelsBytesBothWays(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	seen := make(chan *http.Request, 1)
	tunnelEnded := make(chan struct{})
	up := ptStartUpstream(t, func(c *ptUpConn) {
		defer close(tunnelEnded)
		req, err := http.ReadRequest(c.br)
		if err != nil {
			return
		}
		seen <- req
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nwelcome")
		io.Copy(c, c.br) // echo until the tunnel ends
	})
	c := r.dial(t)
	// Bytes the client sends right behind its request head belong to the tunnel.
	c.send(ptReq("GET", "/ws", up.port, "Connection: Upgrade", "Upgrade: websocket",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13") + "early")
	line, _ := c.br.ReadString('\n')
	head, err := httpHeadRestNoBody(c.br)
	if err != nil || line != "HTTP/1.1 101 Switching Protocols\r\n" {
		t.Fatalf("client got %q %q (%v)", line, head, err)
	}
	lower := strings.ToLower(head)
	if !strings.Contains(lower, "upgrade: websocket\r\n") || !strings.Contains(lower, "connection: upgrade\r\n") ||
		!strings.Contains(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") {
		t.Errorf("101 head to the client: %q", head)
	}
	req := <-seen
	if req.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(req.Header.Get("Connection"), "Upgrade") ||
		req.Header.Get("Sec-WebSocket-Key") != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Errorf("upgrade request at the sandbox: %v", req.Header)
	}
	got := make([]byte, len("welcomeearly"))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != "welcomeearly" {
		t.Fatalf("tunnel to the client: %q %v", got, err)
	}
	for _, msg := range []string{"ping", strings.Repeat("z", 100<<10)} {
		c.send(msg)
		echo := make([]byte, len(msg))
		if _, err := io.ReadFull(c.br, echo); err != nil || string(echo) != msg {
			t.Fatalf("echo of %d bytes: %d bytes back, %v", len(msg), len(echo), err)
		}
	}
	if n := r.srv.metrics.websockets.Load(); n != 1 {
		t.Errorf("websocket_tunnels = %d during the tunnel, want 1", n)
	}
	c.Close()
	select {
	case <-tunnelEnded:
	case <-time.After(3 * time.Second):
		t.Fatal("closing the client did not end the tunnel at the sandbox")
	}
	ptWaitFor(t, "websocket_tunnels back at 0", func() bool { return r.srv.metrics.websockets.Load() == 0 })
	if n := r.srv.metrics.byCode[101].Load(); n != 1 {
		t.Errorf("requests_total{code=101} = %d, want 1", n)
	}
}

func TestProxyIdleWebSocketTunnelObeysXSandboxTimeout(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		if _, err := http.ReadRequest(c.br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(c, c.br)
	})
	c := r.dial(t)
	c.send(ptReq("GET", "/ws", up.port, "Connection: Upgrade", "Upgrade: websocket", "X-Sandbox-Timeout: 1"))
	if line, _ := c.br.ReadString('\n'); line != "HTTP/1.1 101 Switching Protocols\r\n" {
		t.Fatalf("got %q", line)
	}
	httpHeadRestNoBody(c.br)
	started := time.Now()
	if !c.ended() {
		t.Fatal("an idle tunnel stayed open past X-Sandbox-Timeout")
	}
	if elapsed := time.Since(started); elapsed < 800*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("the idle tunnel ended after %v, want about 1 s", elapsed)
	}
}

func TestProxySwitchingProtocolsForAPlainRequestIs502(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(*http.Request, []byte) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes"
		})
	})
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("GET", "/", up.port), "GET")
	if resp.StatusCode != 502 || ptDetail(t, body) != "The backend sandbox switched protocols unexpectedly." {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if n := ptUpstreamErrors(r.srv, "bad_response"); n != 1 {
		t.Errorf("upstream_errors{bad_response} = %d, want 1", n)
	}
	if !c.ended() {
		t.Error("the client connection stayed open after the 502")
	}
}

// --- more framing and keep-alive cases --------------------------------------------------------

func TestProxyKeepAliveFollowsBothSidesConnectionHeaders(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(req *http.Request, body []byte) string {
			switch req.URL.Path {
			case "/close":
				return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose"
			case "/http10":
				return "HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhttp10"
			}
			return ptEcho(req, body)
		})
	})
	c := r.dial(t)
	// The sandbox ends its connection: the client's goes on, without Connection: close.
	resp, body := c.roundTrip(ptReq("GET", "/close", up.port), "GET")
	if resp.StatusCode != 200 || body != "close" || resp.Close {
		t.Fatalf("sandbox Connection: close: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	// An HTTP/1.0 sandbox without keep-alive: same.
	resp, body = c.roundTrip(ptReq("GET", "/http10", up.port), "GET")
	if resp.StatusCode != 200 || body != "http10" || resp.Close || resp.Proto != "HTTP/1.1" {
		t.Fatalf("HTTP/1.0 sandbox: %d %q close=%v proto %s", resp.StatusCode, body, resp.Close, resp.Proto)
	}
	if resp, _ := c.roundTrip(ptReq("GET", "/3", up.port), "GET"); resp.StatusCode != 200 {
		t.Fatalf("third: %d", resp.StatusCode)
	}
	if n := up.accepts.Load(); n != 3 {
		t.Errorf("%d upstream connections, want 3 (neither ended connection is reused)", n)
	}
	// An HTTP/1.0 client asking for keep-alive gets it, said explicitly.
	c10 := r.dial(t)
	resp, body = c10.roundTrip(ptReq10("GET", "/a", up.port, "Connection: keep-alive"), "GET")
	if resp.StatusCode != 200 || body != "GET /a " || resp.Header.Get("Connection") != "keep-alive" {
		t.Fatalf("HTTP/1.0 keep-alive: %d %q Connection %q", resp.StatusCode, body, resp.Header.Get("Connection"))
	}
	if resp, _ := c10.roundTrip(ptReq10("GET", "/b", up.port, "Connection: keep-alive"), "GET"); resp.StatusCode != 200 {
		t.Fatalf("second HTTP/1.0 request: %d", resp.StatusCode)
	}
	// A client's Connection: close is honoured.
	cc := r.dial(t)
	resp, _ = cc.roundTrip(ptReq("GET", "/c", up.port, "Connection: close"), "GET")
	if resp.StatusCode != 200 || !resp.Close || !cc.ended() {
		t.Errorf("client Connection: close: %d close=%v", resp.StatusCode, resp.Close)
	}
}

func TestProxyBodilessStatusesKeepTheConnection(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(req *http.Request, _ []byte) string {
			switch req.URL.Path {
			case "/204":
				return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
			case "/304":
				return "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n"
			}
			return ptOK("after")
		})
	})
	c := r.dial(t)
	c.send(ptReq("GET", "/204", up.port) + ptReq("GET", "/304", up.port) + ptReq("GET", "/x", up.port))
	for _, want := range []int{204, 304} {
		line, _ := c.br.ReadString('\n')
		head, err := httpHeadRestNoBody(c.br)
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 "+strconv.Itoa(want)+" ") ||
			strings.Contains(strings.ToLower(head), "transfer-encoding") {
			t.Fatalf("%d response: %q %q (%v)", want, line, head, err)
		}
	}
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "after" {
		t.Fatalf("after 204 and 304: %d %q", resp.StatusCode, body)
	}
	if n := up.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}

func TestProxyInvalidResponseIs502(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, response string }{
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t)
			up := ptStartUpstream(t, func(c *ptUpConn) {
				c.serve(func(*http.Request, []byte) string { return tc.response })
			})
			c := r.dial(t)
			resp, body := c.roundTrip(ptReq("GET", "/", up.port), "GET")
			if resp.StatusCode != 502 || ptDetail(t, body) != "The backend sandbox sent an invalid HTTP response." {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if n := ptUpstreamErrors(r.srv, "bad_response"); n != 1 {
				t.Errorf("upstream_errors{bad_response} = %d, want 1", n)
			}
		})
	}
}

func TestProxyResponseFailingMidBodyDropsTheClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, kind string
		env        []string
		extra      []string
		send       string
		hold       bool
	}{
		{"too large", "response_too_large", []string{"ROUTER_MAX_RESPONSE_BODY_BYTES", "1000"}, nil,
			"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("x", 5000), true},
		{"timeout", "timeout_mid_response", nil, []string{"X-Sandbox-Timeout: 1"},
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", true},
		{"reset", "reset_mid_response", nil, nil,
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t, tc.env...)
			up := ptStartUpstream(t, func(c *ptUpConn) {
				if _, _, err := c.readRequest(); err != nil {
					return
				}
				io.WriteString(c, tc.send)
				if tc.hold {
					c.drain()
				}
			})
			c := r.dial(t)
			c.send(ptReq("GET", "/", up.port, tc.extra...))
			c.SetReadDeadline(time.Now().Add(4 * time.Second))
			all, err := io.ReadAll(c.br)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the client connection was not dropped: %v (after %q)", err, all)
			}
			// Whatever went out is a 200 head and part of the body, never all of it (the head
			// of an oversized response is dropped with its first piece).
			head, body, _ := strings.Cut(string(all), "\r\n\r\n")
			if len(all) > 0 && !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || len(body) >= 100 {
				t.Errorf("the client got %q", all[:min(len(all), 200)])
			}
			if tc.kind != "response_too_large" && body != "partial" {
				t.Errorf("the client got body %q before the drop, want %q", body, "partial")
			}
			ptWaitFor(t, "upstream_errors{"+tc.kind+"}", func() bool { return ptUpstreamErrors(r.srv, tc.kind) == 1 })
		})
	}
}

func TestProxySlowUploadCountsAsActivityForTheTimeout(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) { c.serve(ptEcho) })
	c := r.dial(t)
	c.send(ptReq("POST", "/slow", up.port, "Content-Length: 9", "X-Sandbox-Timeout: 1"))
	for _, piece := range []string{"abc", "def", "ghi"} {
		time.Sleep(600 * time.Millisecond) // 1.8 s in all, each gap within the 1 s timeout
		c.send(piece)
	}
	if resp, body := c.response("POST"); resp.StatusCode != 200 || body != "POST /slow abcdefghi" {
		// Fixed in this change (was a bug): expected 200 (X-Sandbox-Timeout is an inactivity timeout, and upload says
		// "client activity counts as activity"); actual 504 after ~2.2 s: relay sets the
		// upstream *write* deadline once (request start + timeout) and upload extends only the
		// read deadline, so the first body write after 1 s fails with i/o timeout; the
		// uploader then stops without closing the sandbox connection and the response read
		// times out. With the default PROXY_TIMEOUT_SECONDS=180 any upload lasting longer
		// than 180 s in total fails the same way.
		t.Fatalf("a slow but steady upload got %d %q, want 200: client activity must keep the exchange alive",
			resp.StatusCode, body)
	}
}

func TestProxyMalformedChunkedRequestBodyIs400(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.readRequest()
		c.drain()
	})
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("POST", "/", up.port, "Transfer-Encoding: chunked")+"3\r\nabc\r\nzz\r\n", "POST")
	if resp.StatusCode != 400 || !strings.HasPrefix(ptDetail(t, body), "Malformed HTTP request") {
		// Fixed in this change (was a bug): expected 400 "Malformed HTTP request: ..." counted as rejected{malformed} (the
		// Python router's answer to a request body llhttp cannot parse); actual: the uploader
		// closes the sandbox connection and the client gets 502 "Could not connect to the
		// backend sandbox", counted as upstream_errors{reset} - the client's fault is reported
		// as the sandbox's.
		t.Errorf("a malformed chunked request body got %d %q, want 400 Malformed HTTP request (upstream_errors reset=%d, rejected malformed=%d)",
			resp.StatusCode, body, ptUpstreamErrors(r.srv, "reset"), ptRejected(r.srv, "malformed"))
	}
}

func TestProxyKeepAliveSurvivesACompleteStreamedUpload(t *testing.T) {
	t.Parallel()
	// Bodies that go through the uploader goroutine (chunked, or longer than what the read
	// buffer holds) and arrive whole: the client connection must serve the next request.
	// The race below loses about one request in 20 with a length body and one in a few
	// thousand with a chunked one (the uploader returns right after the last chunk).
	for _, tc := range []struct {
		name, extra, body, want string
		rounds                  int
	}{
		{"chunked", "Transfer-Encoding: chunked", "4\r\nbody\r\n0\r\n\r\n", "POST /u body", 2000},
		{"length", "Content-Length: 20000", strings.Repeat("b", 20000), "POST /u " + strings.Repeat("b", 20000), 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ptStartRouter(t)
			up := ptStartUpstream(t, func(c *ptUpConn) { c.serve(ptEcho) })
			c := r.dial(t)
			rounds := tc.rounds
			for i := range rounds {
				c.send(ptReq("POST", "/u", up.port, tc.extra) + tc.body)
				resp, err := http.ReadResponse(c.br, &http.Request{Method: "POST"})
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
				}
				if err != nil || string(body) != tc.want {
					// Fixed in this change (was a bug): expected every request on the keep-alive connection answered (the body
					// arrived whole, the sandbox answered it); actual: after some request i the
					// router closes the client connection (the next read is EOF/reset). relay
					// decides "bodyDone" with a non-blocking look at u.done right after the
					// response went out; the uploader wrote the last piece (or last-chunk) and the
					// sandbox answered before the uploader goroutine returned and closed u.done,
					// so a complete body is judged incomplete and the connection is ended.
					t.Fatalf("request %d of %d on one keep-alive connection: %v (body %d bytes); the router "+
						"closed the connection after a complete streamed upload", i+1, rounds, err, len(body))
				}
			}
		})
	}
}
