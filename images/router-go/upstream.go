package main

// Sandbox connections: opening one (Service names resolved and every answer put through the
// address policy; a refusal retried with back-off within the connect timeout), and the keep-alive
// pool of idle ones per target.
//
// A connection goes back to the pool only when its response ended exactly at a message boundary
// with nothing after it in the buffer, and it is checked again when it is taken: a sandbox that
// appended bytes (or closed) while the connection was idle loses it. Otherwise the next request
// on it could be answered with bytes that were never its response (desync).

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const upstreamReadBuffer = 32 << 10

// A pod Ready a moment ago can still refuse the router until the NetworkPolicy agent admits the
// router's traffic to its new address; such refusals end on their own. Nothing was sent yet, so
// connecting again is always safe. The first delay is short: a refusal costs the sandbox one
// SYN/RST, and a cold claim's first command waits for the next attempt (25 ms here made the
// router's connect 27.6 ms of a cold first command, p50, against 1.2 ms warm).
const (
	connectRetryFirstDelay = 5 * time.Millisecond
	connectRetryMaxDelay   = 400 * time.Millisecond
)

// errForbiddenResolution: a Service name resolved only to addresses the policy refuses.
var errForbiddenResolution = errors.New("the name resolves only to forbidden addresses")

// upstreamConn is one keep-alive HTTP/1.1 connection to a sandbox, used by one request at a time.
type upstreamConn struct {
	conn      *net.TCPConn
	br        *bufio.Reader
	key       string
	idleSince time.Time
	reused    bool // served a request before (may have gone stale in the pool)
	pool      *upstreamPool
}

// close closes the connection for good.
func (u *upstreamConn) close() {
	u.conn.Close()
	u.pool.metrics.upstreamConnections.Add(-1)
}

// stale: the sandbox sent bytes or closed while the connection sat idle. One non-blocking peek.
func (u *upstreamConn) stale() bool {
	if u.br.Buffered() > 0 {
		return true
	}
	raw, err := u.conn.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	stale := true
	raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		stale = !(n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK))
		return true // never wait for readiness: this is a probe
	})
	return stale
}

type upstreamPool struct {
	mu           sync.Mutex
	idle         map[string][]*upstreamConn
	maxIdle      int
	idleLifetime time.Duration
	policy       *AddressPolicy
	metrics      *Metrics
	dialer       net.Dialer
	resolver     *net.Resolver
}

func newUpstreamPool(s *Settings, policy *AddressPolicy, metrics *Metrics) *upstreamPool {
	return &upstreamPool{idle: map[string][]*upstreamConn{}, maxIdle: s.UpstreamMaxIdlePerTarget,
		idleLifetime: s.UpstreamIdle, policy: policy, metrics: metrics, resolver: net.DefaultResolver}
}

// take returns a live idle connection for key, or nil when a new one is needed.
func (p *upstreamPool) take(key string, now time.Time) *upstreamConn {
	for {
		p.mu.Lock()
		stack := p.idle[key]
		if len(stack) == 0 {
			p.mu.Unlock()
			return nil
		}
		u := stack[len(stack)-1]
		p.idle[key] = stack[:len(stack)-1]
		p.mu.Unlock()
		if now.Sub(u.idleSince) > p.idleLifetime || u.stale() {
			u.close()
			continue
		}
		return u
	}
}

// release puts a connection whose response ended cleanly back into the pool.
func (p *upstreamPool) release(u *upstreamConn, now time.Time) {
	if u.br.Buffered() > 0 {
		p.metrics.upstreamError("desync")
		u.close()
		return
	}
	u.idleSince = now
	u.reused = true
	p.mu.Lock()
	stack := p.idle[u.key]
	if len(stack) >= p.maxIdle {
		p.mu.Unlock()
		u.close()
		return
	}
	p.idle[u.key] = append(stack, u)
	p.mu.Unlock()
}

// sweep closes idle connections before the sandbox's own keep-alive timeout can race a reuse.
func (p *upstreamPool) sweep(now time.Time) {
	var expired []*upstreamConn
	p.mu.Lock()
	for key, stack := range p.idle {
		kept := stack[:0]
		for _, u := range stack {
			if now.Sub(u.idleSince) > p.idleLifetime {
				expired = append(expired, u)
			} else {
				kept = append(kept, u)
			}
		}
		if len(kept) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = kept
		}
	}
	p.mu.Unlock()
	for _, u := range expired {
		u.close()
	}
}

func (p *upstreamPool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string][]*upstreamConn{}
	p.mu.Unlock()
	for _, stack := range idle {
		for _, u := range stack {
			u.close()
		}
	}
}

// connect opens a new connection to t before deadline, retrying refusals with back-off.
func (p *upstreamPool) connect(ctx context.Context, t *Target, deadline time.Time) (*upstreamConn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	host := t.Host
	if !t.IsIP {
		addrs, err := p.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		host = ""
		for _, a := range addrs {
			if p.policy.Refusal(a.Unmap(), t.Port) == "" {
				host = a.Unmap().String()
				break
			}
		}
		if host == "" {
			return nil, errForbiddenResolution
		}
	}
	address := net.JoinHostPort(host, strconv.Itoa(t.Port))
	delay := connectRetryFirstDelay
	for {
		conn, err := p.dialer.DialContext(ctx, "tcp", address)
		if err == nil {
			tcp := conn.(*net.TCPConn)
			tcp.SetNoDelay(true)
			p.metrics.upstreamConnections.Add(1)
			p.metrics.upstreamConnects.Add(1)
			return &upstreamConn{conn: tcp, br: bufio.NewReaderSize(tcp, upstreamReadBuffer), key: t.PoolKey, pool: p}, nil
		}
		if !retryable(err) || time.Now().Add(delay).After(deadline) {
			return nil, err
		}
		p.metrics.upstreamError("connect_retried")
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay = min(delay*2, connectRetryMaxDelay)
	}
}

func retryable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// isTimeout: a deadline or a context deadline ended the operation.
func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}
