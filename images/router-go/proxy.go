package main

// The client side: one goroutine per accepted socket, and the cycle of each request on it, from
// its first byte to the end of its response — header limits and timeouts, authentication and
// routing, dispatch to a pooled or new sandbox connection, the body relay both ways, and the one
// way the router ends an exchange itself (end, with an Answer).
//
// Blocking reads and writes give flow control for free: a slow reader on either side stops the
// relay, and nothing is buffered beyond one socket read. Requests on a connection are served in
// order; pipelined requests wait in the read buffer.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

const clientReadBuffer = 16 << 10

var continueHead = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// Connection states, for eviction at the global limit.
const (
	stateIdle   = iota // between requests
	stateHead          // a request head is arriving
	stateBusy          // a request is in flight
	stateTunnel        // a WebSocket tunnel
)

type clientConn struct {
	srv          *Server
	conn         *net.TCPConn
	br           *bufio.Reader
	ip           string
	trusted      bool // a request passed authentication: idle keep-alive gets the longer timeout
	state        atomic.Int32
	lastActivity atomic.Int64 // unix nanoseconds
	evicted      atomic.Bool

	head    requestHead
	cls     classified
	resp    responseHead
	scratch []byte
	out     []byte
	timing  exchangeTiming
}

func (c *clientConn) touch(now time.Time) { c.lastActivity.Store(now.UnixNano()) }

// evictable: may be closed to admit another connection (nothing in flight).
func (c *clientConn) evictable() bool {
	s := c.state.Load()
	return s == stateIdle || s == stateHead
}

func (c *clientConn) evict() {
	c.evicted.Store(true)
	c.conn.Close()
}

// serve runs the connection until it ends.
func (c *clientConn) serve() {
	defer c.conn.Close()
	s := c.srv.settings
	for {
		idle := s.HeaderTimeout
		if c.trusted {
			idle = s.KeepaliveTimeout
		}
		c.state.Store(stateIdle)
		c.conn.SetReadDeadline(time.Now().Add(idle))
		if _, err := c.br.Peek(1); err != nil {
			return // idle timeout, or the client went away
		}
		now := time.Now()
		c.touch(now)
		c.state.Store(stateHead)
		c.conn.SetReadDeadline(now.Add(s.HeaderTimeout))
		if err := readRequestHead(c.br, &c.head, s.MaxHeaderBytes, s.MaxHeaderCount); err != nil {
			var he *headError
			switch {
			case errors.As(err, &he):
				c.refuseConnection(he.answer)
			case isTimeout(err) && !c.evicted.Load():
				c.refuseConnection(headerTimeoutAnswer)
			}
			return
		}
		c.state.Store(stateBusy)
		if !c.handle(time.Now()) {
			return
		}
	}
}

// refuseConnection answers a request that could not be read at all and ends the connection.
func (c *clientConn) refuseConnection(a *Answer) {
	m := c.srv.metrics
	m.reject(a.Reason)
	m.record(a.Status, 0)
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.conn.Write(a.encode(false, false))
}

// answer ends one request with the router's own answer; the connection goes on only for an
// endpoint's answer that keeps it open.
func (c *clientConn) answer(a *Answer, started time.Time, keepAlive bool) bool {
	m := c.srv.metrics
	if a.Reason != "" {
		m.reject(a.Reason)
	}
	if a.Kind != "" {
		m.upstreamError(a.Kind)
	}
	m.record(a.Status, time.Since(started))
	c.conn.SetWriteDeadline(time.Now().Add(c.srv.settings.HeaderTimeout))
	if _, err := c.conn.Write(a.encode(keepAlive, string(c.head.method) == "HEAD")); err != nil {
		return false
	}
	return a.KeepOpen && keepAlive
}

// drop ends the exchange without an answer (part of a response already went out).
func (c *clientConn) drop(a *Answer) bool {
	if a.Kind != "" {
		c.srv.metrics.upstreamError(a.Kind)
	}
	if a.Reason != "" {
		c.srv.metrics.reject(a.Reason)
	}
	return false
}

// handle processes one request whose head was read; true when the connection serves another.
func (c *clientConn) handle(started time.Time) bool {
	srv := c.srv
	s := srv.settings
	h := &c.head
	cls := &c.cls
	c.scratch = classify(h, cls, c.scratch)
	if err := framingError(cls); err != nil {
		return c.answer(err.answer, started, false)
	}
	target := h.target
	path := target
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		path = target[:q]
	}
	method := string(h.method)
	if (method == "GET" || method == "HEAD") && (string(path) == "/healthz" || string(path) == "/readyz") {
		body := declaresBody(cls)
		a := &Answer{Status: 200, Body: healthBody, ContentType: "application/json", KeepOpen: !body}
		if string(path) == "/readyz" && !srv.ready() {
			a = &Answer{Status: 503, Body: notReadyBody, ContentType: "application/json", KeepOpen: !body}
		}
		return c.answer(a, started, cls.keepAlive)
	}
	if len(target) == 0 || target[0] != '/' {
		return c.answer(answerNotOriginForm, started, false)
	}
	metricsRequest := string(path) == "/metrics" && !cls.routing.Present[HeaderID] && method == "GET"
	if srv.token != nil && (s.MetricsRequireAuth || !metricsRequest) {
		if refused := authorize(cls.authorization, srv.token); refused != nil {
			return c.answer(refused, started, false)
		}
	}
	if metricsRequest {
		body := declaresBody(cls)
		return c.answer(&Answer{Status: 200, Body: srv.metrics.render(), ContentType: metricsContentType, KeepOpen: !body},
			started, cls.keepAlive)
	}
	c.trusted = true // only requests that passed authentication (or with auth off) get here
	if cls.duplicate >= 0 {
		return c.answer(answerDuplicate[cls.duplicate], started, false)
	}
	t, pending, rerr := srv.resolver.Resolve(&cls.routing)
	if rerr != nil && !rerr.Unavailable {
		return c.answer(&Answer{Status: rerr.Status, Detail: rerr.Detail, Reason: "routing"}, started, false)
	}
	if refused := refusal(h.method, cls, s.MaxRequestBodyBytes); refused != nil {
		return c.answer(refused, started, false)
	}
	if t == nil {
		wait := min(s.SandboxWait, pending.Timeout)
		if wait <= 0 {
			return c.answer(&Answer{Status: rerr.Status, Detail: rerr.Detail, Reason: "unknown_sandbox"}, started, false)
		}
		waitStarted := time.Now()
		var werr *RoutingError
		t, werr = srv.resolver.WaitFor(srv.ctx, pending, wait)
		if werr != nil {
			srv.metrics.routeWait("not_found", time.Since(waitStarted))
			return c.answer(&Answer{Status: werr.Status, Detail: werr.Detail, Reason: "unknown_sandbox"}, started, false)
		}
		srv.metrics.routeWait("found", time.Since(waitStarted))
	}
	return c.exchange(t, started)
}

// The body of the request being relayed.
func (c *clientConn) requestBody() (bodyReader, bool) {
	cls := &c.cls
	switch {
	case cls.chunked:
		return &chunkedBody{r: c.br}, true
	case cls.clCount == 1 && string(cls.contentLength) != "0":
		return &lengthBody{r: c.br, left: parseLength(cls.contentLength)}, true
	}
	return nil, false
}

// parseLength reads a Content-Length framingError has already checked (digits, at most 18).
func parseLength(b []byte) int64 {
	var n int64
	for _, d := range b {
		n = n*10 + int64(d-'0')
	}
	return n
}

// exchange relays the request to t and the sandbox's response back.
func (c *clientConn) exchange(t *Target, started time.Time) bool {
	cls := &c.cls
	body, hasBody := c.requestBody()
	c.out = appendUpstreamHead(c.out[:0], &c.head, cls, t.Authority)
	if cls.expect100 && hasBody {
		c.conn.SetWriteDeadline(time.Now().Add(t.Timeout))
		if _, err := c.conn.Write(continueHead); err != nil {
			return false
		}
	}
	// A body that is already in the read buffer whole goes out with the head in one write, and
	// stays there until the response begins, so a stale pooled connection can be replayed.
	var inline []byte
	if lb, ok := body.(*lengthBody); ok && int64(c.br.Buffered()) >= lb.left {
		inline, _ = c.br.Peek(int(lb.left))
		body, hasBody = nil, false
	}
	connectStarted := time.Now()
	up, err := c.upstreamFor(t)
	if err != nil {
		return c.answer(err.(*answerError).answer, started, false)
	}
	c.timing = exchangeTiming{connect: time.Since(connectStarted), pooled: up.reused}
	for attempt := 0; ; attempt++ {
		replay, keep := c.relay(t, up, body, hasBody, &inline, started, attempt == 0)
		if !replay {
			if inline != nil { // the exchange ended before a response began
				c.br.Discard(len(inline))
			}
			return keep
		}
		// The pooled connection was closed by the sandbox just as it was reused, before any
		// response byte and with no body byte consumed: safe to send again, once.
		redialStarted := time.Now()
		up, err = c.dial(t)
		if err != nil {
			return c.answer(err.(*answerError).answer, started, false)
		}
		c.timing.connect += time.Since(redialStarted)
		c.timing.pooled = false
	}
}

type answerError struct{ answer *Answer }

func (e *answerError) Error() string { return e.answer.Detail }

// upstreamFor returns a pooled connection for t, or a new one.
func (c *clientConn) upstreamFor(t *Target) (*upstreamConn, error) {
	if up := c.srv.pool.take(t.PoolKey, time.Now()); up != nil {
		return up, nil
	}
	return c.dial(t)
}

func (c *clientConn) dial(t *Target) (*upstreamConn, error) {
	timeout := min(c.srv.settings.ConnectTimeout, t.Timeout)
	up, err := c.srv.pool.connect(c.srv.ctx, t, time.Now().Add(timeout))
	switch {
	case err == nil:
		return up, nil
	case errors.Is(err, errForbiddenResolution):
		return nil, &answerError{unreachable(t.SandboxID, "forbidden_resolution")}
	case isTimeout(err):
		return nil, &answerError{timedOut(t.SandboxID, "connect_timeout")}
	}
	srv := c.srv
	srv.debug("connect failed", "authority", t.Authority, "error", err)
	return nil, &answerError{unreachable(t.SandboxID, "connect_failed")}
}

// uploader relays the rest of a request body to the sandbox while the response is read, so a
// sandbox that answers before reading the whole body cannot deadlock the exchange.
type uploader struct {
	done chan struct{}
	// whole: the client's body was read to its end, set before its last bytes are written to the
	// sandbox (which may answer at once): the response side then waits for the write instead of
	// taking a finished upload for an unfinished one.
	whole    atomic.Bool
	err      error // why the body did not arrive whole (nil: complete)
	tooLarge bool
}

func (c *clientConn) upload(t *Target, up *upstreamConn, body bodyReader, u *uploader) {
	defer close(u.done)
	limit := c.srv.settings.MaxRequestBodyBytes
	chunked := c.cls.chunked
	var sent int64
	buf := make([]byte, 0, 64)
	for {
		c.conn.SetReadDeadline(time.Now().Add(t.Timeout))
		p, err := body.next()
		if err == io.EOF {
			u.whole.Store(true)
			if chunked {
				if _, err := up.conn.Write(lastChunk); err != nil {
					u.err = err
				}
			}
			return
		}
		if err != nil {
			u.err = err
			up.conn.Close() // wakes the response reader
			return
		}
		now := time.Now()
		c.touch(now)
		// Client activity counts as activity: both directions of the sandbox connection get the
		// full inactivity timeout again.
		up.conn.SetReadDeadline(now.Add(t.Timeout))
		up.conn.SetWriteDeadline(now.Add(t.Timeout))
		if lb, ok := body.(*lengthBody); ok && lb.left == 0 {
			u.whole.Store(true) // this is the last piece
		}
		sent += int64(len(p))
		if sent > limit {
			u.tooLarge = true
			u.err = errors.New("body too large")
			up.conn.Close()
			return
		}
		if chunked {
			buf = append(buf[:0], hexLen(len(p))...)
			bufs := net.Buffers{buf, p, crlf}
			if _, err := bufs.WriteTo(up.conn); err != nil {
				u.err = err
				up.conn.Close()
				return
			}
		} else if _, err := up.conn.Write(p); err != nil {
			u.err = err
			up.conn.Close()
			return
		}
	}
}

var crlf = []byte("\r\n")

func hexLen(n int) string {
	const digits = "0123456789abcdef"
	var b [20]byte
	i := len(b)
	b[i-1], b[i-2] = '\n', '\r'
	i -= 2
	if n == 0 {
		i--
		b[i] = '0'
	}
	for n > 0 {
		i--
		b[i] = digits[n&15]
		n >>= 4
	}
	return string(b[i:])
}

// relay sends the request on up and relays the response. replay: up was a stale pooled
// connection and nothing was consumed; keep: the client connection serves another request.
//
// inline is a body that went out with the head from the read buffer; it is discarded from the
// buffer (and set to nil) once a response begins, so it can be sent again until then.
func (c *clientConn) relay(t *Target, up *upstreamConn, body bodyReader, hasBody bool, inlineBody *[]byte,
	started time.Time, firstAttempt bool) (replay bool, keep bool) {
	inline := *inlineBody
	srv := c.srv
	s := srv.settings
	cls := &c.cls
	headRequest := string(c.head.method) == "HEAD"
	reused := up.reused
	now := time.Now()
	c.timing.sent = now
	up.conn.SetWriteDeadline(now.Add(t.Timeout))
	up.conn.SetReadDeadline(now.Add(t.Timeout))
	var werr error
	if inline != nil {
		bufs := net.Buffers{c.out, inline}
		_, werr = bufs.WriteTo(up.conn)
	} else {
		_, werr = up.conn.Write(c.out)
	}
	var u *uploader
	if werr == nil && hasBody {
		u = &uploader{done: make(chan struct{})}
		go c.upload(t, up, body, u)
	}
	// finishUpload stops a body upload that is still running (its client side is shut for
	// reading; every caller ends the connection) and waits for it.
	finishUpload := func() {
		if u == nil {
			return
		}
		select {
		case <-u.done:
		default:
			c.conn.CloseRead()
			<-u.done
		}
	}
	// The response head (interim 1xx ones skipped; they never extend the timeout).
	for {
		err := werr
		if err == nil {
			err = readResponseHead(up.br, &c.resp, headRequest)
		}
		if err != nil {
			up.close()
			if u != nil {
				finishUpload()
				if u.tooLarge {
					return false, c.answer(answerBodyTooLarge, started, false)
				}
				if errors.Is(u.err, errBadChunk) { // the client's body, not the sandbox, is broken
					return false, c.answer(malformed("invalid chunked body").answer, started, false)
				}
			}
			switch {
			case isTimeout(err):
				return false, c.answer(timedOut(t.SandboxID, "timeout"), started, false)
			case reused && firstAttempt && u == nil && (err == io.EOF || isReset(err) || werr != nil):
				return true, false
			case err == errOversizedHeaders:
				return false, c.answer(answerOversizedHeaders, started, false)
			case err == errInvalidResponse:
				return false, c.answer(answerInvalidResponse, started, false)
			}
			return false, c.answer(unreachable(t.SandboxID, "reset"), started, false)
		}
		if c.resp.status >= 200 || c.resp.status == 101 {
			break
		}
	}
	headAt := time.Now()
	resp := &c.resp
	if inline != nil {
		c.br.Discard(len(inline))
		*inlineBody = nil
	}
	if resp.status == 101 {
		if !cls.websocket {
			up.close()
			finishUpload()
			return false, c.answer(answerUnexpectedSwitch, started, false)
		}
		return false, c.tunnel(t, up, started)
	}
	keepAlive := cls.keepAlive && !cls.websocket
	head, mode, keepAlive := appendClientHead(c.out[:0], resp, headRequest, c.head.http10, keepAlive, c.scratch)
	if s.ServerTiming {
		head = appendServerTiming(head, started, headAt, &c.timing)
	}
	c.out = head
	var rbody bodyReader
	switch resp.framing {
	case inLength:
		rbody = &lengthBody{r: up.br, left: resp.length}
	case inChunked:
		rbody = &chunkedBody{r: up.br}
	case inUntilClose:
		rbody = &untilCloseBody{r: up.br}
	}
	if mode == outNone {
		rbody = nil
	}
	// abandon drops both sides: part of the response may have gone out, so no answer is possible.
	abandon := func(a *Answer) (bool, bool) {
		up.close()
		finishUpload()
		return false, c.drop(a)
	}
	toClient := func(b []byte) error {
		c.conn.SetWriteDeadline(time.Now().Add(t.Timeout))
		_, err := c.conn.Write(b)
		return err
	}
	var sent int64
	pending := c.out // the head goes out with the first body piece that arrived with it
	for rbody != nil {
		// What is held goes out before a read that would wait: a head whose body is not there
		// yet, or a chunk whose successor is not, must not wait for it (streaming).
		if len(pending) > 0 && !rbody.ready() {
			if err := toClient(pending); err != nil {
				return abandon(answerClientGoneMidBody)
			}
			pending = pending[:0]
		}
		p, err := rbody.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if isTimeout(err) {
				return abandon(dropTimeout)
			}
			return abandon(dropReset)
		}
		up.conn.SetReadDeadline(time.Now().Add(t.Timeout))
		sent += int64(len(p))
		if sent > s.MaxResponseBodyBytes {
			return abandon(dropTooLarge)
		}
		switch {
		case mode == outChunked:
			pending = append(pending, hexLen(len(p))...)
			pending = append(pending, p...)
			pending = append(pending, crlf...)
		case len(pending) == 0 && up.br.Buffered() <= len(p):
			// nothing to coalesce with: write the piece straight from the read buffer
			if err := toClient(p); err != nil {
				return abandon(answerClientGoneMidBody)
			}
			continue
		default:
			pending = append(pending, p...)
		}
		// A large batch goes out at once; a small one before the next read that would wait.
		if len(pending) >= 64<<10 {
			if err := toClient(pending); err != nil {
				return abandon(answerClientGoneMidBody)
			}
			pending = pending[:0]
		}
	}
	if mode == outChunked {
		pending = append(pending, lastChunk...)
	}
	if len(pending) > 0 {
		if err := toClient(pending); err != nil {
			return abandon(answerClientGoneMidBody)
		}
	}
	c.out = pending[:0]
	srv.metrics.record(resp.status, time.Since(started))
	// The rest of a request body the sandbox did not wait for cannot be skipped safely: the
	// client connection ends here.
	bodyDone := true
	if u != nil {
		if u.whole.Load() {
			<-u.done // its last write is under way
			bodyDone = u.err == nil
		} else {
			bodyDone = false
		}
	}
	reusable := resp.keepAlive && resp.framing != inUntilClose && bodyDone
	if reusable {
		srv.pool.release(up, time.Now())
	} else {
		up.close()
	}
	if !bodyDone {
		finishUpload()
		return false, false
	}
	return false, keepAlive
}

// isReset: the sandbox closed or reset the connection (before any byte of the response, when
// readResponseHead returned it).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// tunnel relays a WebSocket connection both ways after the sandbox's 101, until either side
// closes, both are silent for the idle limit, or the tunnel reaches its maximum lifetime.
func (c *clientConn) tunnel(t *Target, up *upstreamConn, started time.Time) bool {
	srv := c.srv
	s := srv.settings
	head, _, _ := appendClientHead(c.out[:0], &c.resp, false, c.head.http10, true, c.scratch)
	c.out = head
	c.conn.SetWriteDeadline(time.Now().Add(s.HeaderTimeout))
	if _, err := c.conn.Write(head); err != nil {
		up.close()
		return false
	}
	srv.metrics.record(101, time.Since(started))
	srv.metrics.websockets.Add(1)
	defer srv.metrics.websockets.Add(-1)
	c.state.Store(stateTunnel)
	idleLimit := s.WebsocketIdleTimeout
	if t.RequestedTimeout > 0 {
		idleLimit = min(idleLimit, t.RequestedTimeout)
	}
	end := time.Now().Add(s.WebsocketMaxLifetime)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var closed atomic.Bool
	shut := func() {
		if closed.CompareAndSwap(false, true) {
			c.conn.Close()
			up.close()
		}
	}
	pipe := func(dst net.Conn, srcConn net.Conn, src *bufio.Reader) {
		defer shut()
		buf := make([]byte, 32<<10)
		for {
			deadline := time.Unix(0, last.Load()).Add(idleLimit)
			if deadline.After(end) {
				deadline = end
			}
			srcConn.SetReadDeadline(deadline)
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				dst.SetWriteDeadline(time.Now().Add(idleLimit))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if isTimeout(err) && !closed.Load() {
					now := time.Now()
					if now.Before(end) && now.Sub(time.Unix(0, last.Load())) < idleLimit {
						continue // the other direction was active
					}
				}
				return
			}
		}
	}
	c.conn.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		pipe(up.conn, c.conn, c.br)
		close(done)
	}()
	pipe(c.conn, up.conn, up.br)
	<-done
	return false
}
