package main

// upstream_test.go covers upstream.go directly, over real loopback sockets: the keep-alive
// pool (take is LIFO per key, at most maxIdle idle connections per key, the idle lifetime at
// take and in sweep, closeAll, a release with bytes already buffered counted as desync and
// closed), the staleness probe (a quiet connection is live; one the peer wrote to or closed is
// stale, and the probe consumes nothing), and connect (refusals retried with back-off until
// the deadline and counted as connect_retried, a connection made once the refusal ends, and a
// DNS name whose every answer the address policy refuses: errForbiddenResolution).

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// utServer is a loopback listener whose accepted connections the test reads from.
type utServer struct {
	ln       net.Listener
	port     int
	accepted chan net.Conn
}

func utListen(t *testing.T) *utServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &utServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, accepted: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-s.accepted:
				c.Close()
			default:
				return
			}
		}
	})
	return s
}

func utTarget(port int, key string) *Target {
	return &Target{SandboxID: "sb", Host: "127.0.0.1", Port: port, IsIP: true, Timeout: 5 * time.Second,
		Authority: "127.0.0.1", PoolKey: key}
}

func utPool(maxIdle int, idle time.Duration, policy *AddressPolicy) *upstreamPool {
	if policy == nil {
		policy = NewAddressPolicy(nil, true, nil)
	}
	return newUpstreamPool(&Settings{UpstreamMaxIdlePerTarget: maxIdle, UpstreamIdle: idle}, policy, newMetrics())
}

// utConnect opens one pooled-style connection to s and returns it with the server's side.
func utConnect(t *testing.T, p *upstreamPool, s *utServer, key string) (*upstreamConn, net.Conn) {
	t.Helper()
	u, err := p.connect(context.Background(), utTarget(s.port, key), time.Now().Add(2*time.Second))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { u.conn.Close() })
	select {
	case peer := <-s.accepted:
		t.Cleanup(func() { peer.Close() })
		return u, peer
	case <-time.After(2 * time.Second):
		t.Fatal("the listener accepted nothing")
	}
	return nil, nil
}

// utClosed: the router's side of the connection was closed (the peer reads EOF).
func utClosed(t *testing.T, peer net.Conn) bool {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := peer.Read(make([]byte, 1))
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// utOpen: the router's side is still open (the peer reads nothing for a moment).
func utOpen(t *testing.T, peer net.Conn) bool {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := peer.Read(make([]byte, 1))
	peer.SetReadDeadline(time.Time{})
	return isTimeout(err)
}

func utErrors(p *upstreamPool, kind string) int64 {
	p.metrics.mu.Lock()
	defer p.metrics.mu.Unlock()
	return p.metrics.upstreamErrors[kind]
}

func TestUpstreamPoolTakeIsLastInFirstOutPerKey(t *testing.T) {
	s := utListen(t)
	p := utPool(8, time.Minute, nil)
	a, _ := utConnect(t, p, s, "k1")
	b, _ := utConnect(t, p, s, "k1")
	c, _ := utConnect(t, p, s, "k2")
	if a.reused || b.reused {
		t.Fatal("a new connection is marked reused")
	}
	now := time.Now()
	p.release(a, now)
	p.release(b, now)
	p.release(c, now)
	if !a.reused || a.idleSince != now {
		t.Errorf("release did not mark the connection reused and idle since now")
	}
	for i, want := range []*upstreamConn{b, a, nil} {
		if got := p.take("k1", now); got != want {
			t.Fatalf("take %d on k1 = %p, want %p", i, got, want)
		}
	}
	if got := p.take("k2", now); got != c {
		t.Errorf("take on k2 = %p, want %p", got, c)
	}
	if got := p.take("k3", now); got != nil {
		t.Errorf("take on an unknown key = %p", got)
	}
	if n := p.metrics.upstreamConnections.Load(); n != 3 {
		t.Errorf("upstream_connections = %d, want 3 (taken connections stay open)", n)
	}
	if n := p.metrics.upstreamConnects.Load(); n != 3 {
		t.Errorf("upstream_connections_opened_total = %d, want 3", n)
	}
}

func TestUpstreamPoolKeepsAtMostMaxIdlePerKey(t *testing.T) {
	s := utListen(t)
	p := utPool(2, time.Minute, nil)
	a, peerA := utConnect(t, p, s, "k")
	b, peerB := utConnect(t, p, s, "k")
	c, peerC := utConnect(t, p, s, "k")
	other, peerOther := utConnect(t, p, s, "other")
	now := time.Now()
	p.release(a, now)
	p.release(b, now)
	p.release(c, now) // over the limit: closed
	p.release(other, now)
	if !utClosed(t, peerC) {
		t.Error("the connection over maxIdle was not closed")
	}
	if !utOpen(t, peerA) || !utOpen(t, peerB) || !utOpen(t, peerOther) {
		t.Error("a connection within maxIdle was closed")
	}
	if n := p.metrics.upstreamConnections.Load(); n != 3 {
		t.Errorf("upstream_connections = %d, want 3", n)
	}
	if got := p.take("k", now); got != b {
		t.Errorf("take = %p, want the last kept (%p)", got, b)
	}

	none := utPool(0, time.Minute, nil)
	d, peerD := utConnect(t, none, s, "k")
	none.release(d, now)
	if !utClosed(t, peerD) || none.take("k", now) != nil {
		t.Error("MAX_KEEPALIVE_CONNECTIONS=0 still pooled a connection")
	}
	if n := none.metrics.upstreamConnections.Load(); n != 0 {
		t.Errorf("upstream_connections = %d after the only connection closed", n)
	}
}

func TestUpstreamPoolTakeDropsConnectionsIdleTooLong(t *testing.T) {
	s := utListen(t)
	p := utPool(8, time.Second, nil)
	a, peerA := utConnect(t, p, s, "k")
	b, peerB := utConnect(t, p, s, "k")
	t0 := time.Now()
	p.release(a, t0)
	p.release(b, t0.Add(500*time.Millisecond))
	// b is within its lifetime, exactly at the limit: kept.
	if got := p.take("k", t0.Add(1500*time.Millisecond)); got != b {
		t.Fatalf("take at b's limit = %p, want b", got)
	}
	// a is past it: closed, and nothing is left.
	if got := p.take("k", t0.Add(time.Second+time.Nanosecond)); got != nil {
		t.Fatalf("take returned a connection idle past its lifetime")
	}
	if !utClosed(t, peerA) {
		t.Error("the expired connection was not closed")
	}
	if !utOpen(t, peerB) {
		t.Error("the taken connection was closed")
	}
}

func TestUpstreamPoolSweepClosesExpiredConnections(t *testing.T) {
	s := utListen(t)
	p := utPool(8, 4*time.Second, nil)
	a, peerA := utConnect(t, p, s, "k")
	b, peerB := utConnect(t, p, s, "k")
	c, peerC := utConnect(t, p, s, "k2")
	t0 := time.Now()
	p.release(a, t0)
	p.release(b, t0.Add(2*time.Second))
	p.release(c, t0)
	p.sweep(t0.Add(5 * time.Second))
	if !utClosed(t, peerA) || !utClosed(t, peerC) {
		t.Error("sweep left an expired connection open")
	}
	if !utOpen(t, peerB) {
		t.Error("sweep closed a connection within its lifetime")
	}
	p.mu.Lock()
	_, k2Left := p.idle["k2"]
	kLeft := len(p.idle["k"])
	p.mu.Unlock()
	if k2Left || kLeft != 1 {
		t.Errorf("after sweep: k2 present %v, %d idle on k; want k2 gone and 1", k2Left, kLeft)
	}
	if got := p.take("k", t0.Add(5*time.Second)); got != b {
		t.Errorf("take after sweep = %p, want b", got)
	}
	p.release(b, t0.Add(5*time.Second))
	p.sweep(t0.Add(10 * time.Second))
	p.mu.Lock()
	left := len(p.idle)
	p.mu.Unlock()
	if left != 0 || !utClosed(t, peerB) {
		t.Errorf("sweep left %d keys (or b open) after everything expired", left)
	}
	if n := p.metrics.upstreamConnections.Load(); n != 0 {
		t.Errorf("upstream_connections = %d, want 0", n)
	}
}

func TestUpstreamPoolCloseAllClosesEveryIdleConnection(t *testing.T) {
	s := utListen(t)
	p := utPool(8, time.Minute, nil)
	a, peerA := utConnect(t, p, s, "k")
	b, peerB := utConnect(t, p, s, "k2")
	p.release(a, time.Now())
	p.release(b, time.Now())
	p.closeAll()
	if !utClosed(t, peerA) || !utClosed(t, peerB) {
		t.Error("closeAll left a connection open")
	}
	if p.take("k", time.Now()) != nil || p.metrics.upstreamConnections.Load() != 0 {
		t.Error("the pool still holds connections after closeAll")
	}
}

func TestUpstreamPoolReleaseWithBufferedBytesIsDesync(t *testing.T) {
	s := utListen(t)
	p := utPool(8, time.Minute, nil)
	u, peer := utConnect(t, p, s, "k")
	peer.Write([]byte("HTTP/1.1 200 OK\r\n")) // a response nobody asked for
	u.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := u.br.Peek(1); err != nil {
		t.Fatal(err)
	}
	p.release(u, time.Now())
	if n := utErrors(p, "desync"); n != 1 {
		t.Errorf("upstream_errors{desync} = %d, want 1", n)
	}
	if !utClosed(t, peer) {
		t.Error("a desynchronised connection was not closed")
	}
	if p.take("k", time.Now()) != nil {
		t.Error("a desynchronised connection went back into the pool")
	}
	if n := p.metrics.upstreamConnections.Load(); n != 0 {
		t.Errorf("upstream_connections = %d, want 0", n)
	}
}

func TestUpstreamConnStaleness(t *testing.T) {
	s := utListen(t)
	p := utPool(8, time.Minute, nil)

	quiet, _ := utConnect(t, p, s, "k")
	for range 3 {
		if quiet.stale() {
			t.Fatal("a quiet connection is stale")
		}
	}

	wrote, peer := utConnect(t, p, s, "k")
	peer.Write([]byte("x"))
	ptWaitFor(t, "the byte to make the connection stale", wrote.stale)
	if !wrote.stale() {
		t.Error("stale() consumed the byte it saw")
	}
	wrote.conn.SetReadDeadline(time.Now().Add(time.Second))
	if b, err := wrote.br.ReadByte(); err != nil || b != 'x' {
		t.Errorf("after the probe the byte reads as %q, %v", b, err)
	}
	if wrote.stale() {
		t.Error("a connection whose stray byte was read is still stale")
	}

	buffered, peer2 := utConnect(t, p, s, "k")
	peer2.Write([]byte("yz"))
	buffered.conn.SetReadDeadline(time.Now().Add(time.Second))
	buffered.br.Peek(1)
	if !buffered.stale() {
		t.Error("a connection with bytes in its read buffer is not stale")
	}

	closed, peer3 := utConnect(t, p, s, "k")
	peer3.Close()
	ptWaitFor(t, "the close to make the connection stale", closed.stale)

	reset, peer4 := utConnect(t, p, s, "k")
	peer4.(*net.TCPConn).SetLinger(0)
	peer4.Close()
	ptWaitFor(t, "the reset to make the connection stale", reset.stale)
}

func TestUpstreamPoolTakeSkipsAStaleConnection(t *testing.T) {
	s := utListen(t)
	p := utPool(8, time.Minute, nil)
	a, _ := utConnect(t, p, s, "k")
	b, peerB := utConnect(t, p, s, "k")
	now := time.Now()
	p.release(a, now)
	p.release(b, now)
	peerB.Close() // the sandbox closed b while it idled
	ptWaitFor(t, "b to be stale", b.stale)
	if got := p.take("k", now); got != a {
		t.Fatalf("take = %p, want a (b is stale)", got)
	}
	if n := p.metrics.upstreamConnections.Load(); n != 1 {
		t.Errorf("upstream_connections = %d, want 1 (b closed by take)", n)
	}
}

// utRefusedPort is a loopback port nothing listens on.
func utRefusedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestUpstreamConnectRetriesRefusalsUntilTheDeadline(t *testing.T) {
	p := utPool(8, time.Minute, nil)
	port := utRefusedPort(t)
	started := time.Now()
	u, err := p.connect(context.Background(), utTarget(port, "k"), started.Add(300*time.Millisecond))
	elapsed := time.Since(started)
	if u != nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect = %v, %v; want ECONNREFUSED", u, err)
	}
	// Back-off 5, 10, 20, 40, 80 ms; the next (160 ms) would pass the deadline, so it gives up early.
	if elapsed < 130*time.Millisecond || elapsed > 600*time.Millisecond {
		t.Errorf("gave up after %v, want after ~155 ms of retries within the 300 ms deadline", elapsed)
	}
	if n := utErrors(p, "connect_retried"); n < 3 || n > 5 {
		t.Errorf("upstream_errors{connect_retried} = %d, want 5 (3 or 4 under heavy load)", n)
	}
	if n := p.metrics.upstreamConnections.Load(); n != 0 || p.metrics.upstreamConnects.Load() != 0 {
		t.Error("a failed connect changed the connection gauges")
	}
}

func TestUpstreamConnectSucceedsOnceTheRefusalEnds(t *testing.T) {
	p := utPool(8, time.Minute, nil)
	port := utRefusedPort(t)
	listening := make(chan net.Listener, 1)
	go func() {
		time.Sleep(120 * time.Millisecond)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			listening <- nil
			return
		}
		listening <- ln
	}()
	u, err := p.connect(context.Background(), utTarget(port, "k"), time.Now().Add(3*time.Second))
	ln := <-listening
	if ln == nil {
		t.Skip("the refused port was taken by someone else")
	}
	defer ln.Close()
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer u.close()
	if n := utErrors(p, "connect_retried"); n < 1 {
		t.Errorf("upstream_errors{connect_retried} = %d, want at least 1", n)
	}
	if p.metrics.upstreamConnects.Load() != 1 || p.metrics.upstreamConnections.Load() != 1 {
		t.Error("the connection was not counted")
	}
	if u.key != "k" || u.reused || u.br == nil {
		t.Errorf("new connection: key %q reused %v", u.key, u.reused)
	}
}

func TestUpstreamConnectStopsWhenTheContextEnds(t *testing.T) {
	p := utPool(8, time.Minute, nil)
	port := utRefusedPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(60*time.Millisecond, cancel)
	started := time.Now()
	_, err := p.connect(ctx, utTarget(port, "k"), started.Add(5*time.Second))
	if err == nil || time.Since(started) > time.Second {
		t.Errorf("connect = %v after %v; want an error soon after the cancel", err, time.Since(started))
	}
}

func TestUpstreamConnectRefusesANameResolvingOnlyToForbiddenAddresses(t *testing.T) {
	s := utListen(t)
	target := &Target{SandboxID: "sb", Host: "localhost", Port: s.port, IsIP: false, Timeout: 5 * time.Second,
		Authority: "localhost", PoolKey: "localhost"}
	for _, policy := range []*AddressPolicy{
		NewAddressPolicy(nil, false, nil),                                                // loopback refused
		NewAddressPolicy([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, true, nil), // outside the pod CIDRs
	} {
		p := utPool(8, time.Minute, policy)
		u, err := p.connect(context.Background(), target, time.Now().Add(2*time.Second))
		if u != nil || !errors.Is(err, errForbiddenResolution) {
			t.Errorf("connect to localhost = %v, %v; want errForbiddenResolution", u, err)
		}
		if p.metrics.upstreamConnects.Load() != 0 {
			t.Error("a forbidden name was connected to")
		}
	}
	// The same name with loopback allowed connects (the lookup itself works offline).
	p := utPool(8, time.Minute, NewAddressPolicy(nil, true, nil))
	u, err := p.connect(context.Background(), target, time.Now().Add(2*time.Second))
	if err != nil {
		t.Fatalf("connect to localhost with loopback allowed: %v", err)
	}
	u.close()
}

func TestUpstreamRetryableAndTimeoutErrors(t *testing.T) {
	for _, err := range []error{syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}} {
		if !retryable(err) {
			t.Errorf("retryable(%v) = false", err)
		}
	}
	for _, err := range []error{syscall.ECONNRESET, errForbiddenResolution, context.DeadlineExceeded} {
		if retryable(err) {
			t.Errorf("retryable(%v) = true", err)
		}
	}
	if !isTimeout(context.DeadlineExceeded) || !isTimeout(&net.OpError{Op: "read", Err: context.DeadlineExceeded}) ||
		isTimeout(io.EOF) || isTimeout(context.Canceled) {
		t.Error("isTimeout misclassifies")
	}
}

func TestUpstreamConnectRetriesARefusalWithinMilliseconds(t *testing.T) {
	// A pod just Ready refuses until the NetworkPolicy agent admits the router: the first retry
	// comes 5 ms later, so a 60 ms budget holds three (a 25 ms first delay left room for one).
	p := utPool(8, time.Minute, nil)
	port := utRefusedPort(t)
	if _, err := p.connect(context.Background(), utTarget(port, "k"), time.Now().Add(60*time.Millisecond)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect: %v, want ECONNREFUSED", err)
	}
	if n := utErrors(p, "connect_retried"); n < 2 {
		t.Errorf("upstream_errors{connect_retried} = %d within 60 ms, want at least 2", n)
	}
}
