package main

// The router process: state shared by every connection (settings, token, metrics, resolver,
// upstream pool, readiness), admission of new connections (per-client and global limits, with
// eviction of an idle connection at the global one), the accept loop and graceful shutdown.

import (
	"bufio"
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	sweepInterval  = 250 * time.Millisecond
	shutdownGrace  = 10 * time.Second
	evictionSample = 64
)

// Server is one router process.
type Server struct {
	settings *Settings
	token    []byte
	metrics  *Metrics
	policy   *AddressPolicy
	index    *PodIndex // nil in dns mode
	resolver *Resolver
	pool     *upstreamPool
	log      *slog.Logger
	ctx      context.Context

	mu        sync.Mutex
	conns     map[*clientConn]struct{}
	list      []*clientConn // the same connections, for sampling
	perClient map[string]int
}

func newServer(ctx context.Context, s *Settings, logger *slog.Logger) *Server {
	srv := &Server{settings: s, metrics: newMetrics(), log: logger, ctx: ctx,
		conns: map[*clientConn]struct{}{}, perClient: map[string]int{}}
	if s.AuthEnabled {
		srv.token = []byte(s.AuthToken)
	}
	own := append([]string{}, s.OwnAddresses...)
	for _, a := range LocalAddresses() {
		own = append(own, a.String())
	}
	srv.policy = NewAddressPolicy(s.AllowedPodCIDRs, s.AllowLoopbackPodIP, own)
	var routes SandboxRoutes
	if s.Resolver == "watch" {
		srv.index = NewPodIndex(s.SandboxNamespaces, s.RouteUnclaimedPoolPods)
		routes = srv.index
		srv.metrics.targets = srv.index.Len
	}
	srv.resolver = NewResolver(s, srv.policy, routes)
	srv.pool = newUpstreamPool(s, srv.policy, srv.metrics)
	return srv
}

func (srv *Server) ready() bool { return srv.index == nil || srv.index.Ready() }

func (srv *Server) debug(msg string, args ...any) { srv.log.Debug(msg, args...) }

// admit registers a new connection, or returns the answer refusing it.
func (srv *Server) admit(c *clientConn) *Answer {
	s := srv.settings
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.perClient[c.ip] >= s.MaxConnectionsPerClient {
		return answerConnectionLimit
	}
	if len(srv.conns) >= s.MaxConnections {
		// At the global limit a connection with nothing in flight, the longest idle of a random
		// sample, makes room: otherwise half-sent requests (no token needed) could fill the
		// limit and starve /healthz and every real client. The sample keeps admission O(1).
		var victim *clientConn
		consider := func(candidate *clientConn) {
			if candidate.evictable() && (victim == nil || candidate.lastActivity.Load() < victim.lastActivity.Load()) {
				victim = candidate
			}
		}
		if len(srv.list) <= evictionSample {
			for _, candidate := range srv.list { // all of them: the sample would be everyone
				consider(candidate)
			}
		} else {
			for range evictionSample { // O(1) per accept even at thousands of connections
				consider(srv.list[rand.IntN(len(srv.list))])
			}
		}
		if victim == nil {
			return answerRouterFull
		}
		srv.metrics.evictions.Add(1)
		srv.forgetLocked(victim)
		victim.evict()
	}
	srv.perClient[c.ip]++
	srv.conns[c] = struct{}{}
	srv.list = append(srv.list, c)
	srv.metrics.clientConnections.Add(1)
	return nil
}

func (srv *Server) forget(c *clientConn) {
	srv.mu.Lock()
	srv.forgetLocked(c)
	srv.mu.Unlock()
}

func (srv *Server) forgetLocked(c *clientConn) {
	if _, ok := srv.conns[c]; !ok {
		return
	}
	delete(srv.conns, c)
	for i, other := range srv.list {
		if other == c {
			last := len(srv.list) - 1
			srv.list[i] = srv.list[last]
			srv.list[last] = nil
			srv.list = srv.list[:last]
			break
		}
	}
	srv.metrics.clientConnections.Add(-1)
	if n := srv.perClient[c.ip] - 1; n > 0 {
		srv.perClient[c.ip] = n
	} else {
		delete(srv.perClient, c.ip)
	}
}

// setOwnEndpoints refuses the router's own listening endpoint as a target.
func (srv *Server) setOwnEndpoints(ln net.Listener) {
	addr := ln.Addr().(*net.TCPAddr)
	ip, _ := netip.AddrFromSlice(addr.IP)
	ip = ip.Unmap()
	if ip.IsUnspecified() {
		for _, own := range append([]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, LocalAddresses()...) {
			srv.policy.AddOwnEndpoint(own, addr.Port)
		}
		for _, own := range srv.settings.OwnAddresses {
			if a, err := netip.ParseAddr(own); err == nil {
				srv.policy.AddOwnEndpoint(a, addr.Port)
			}
		}
		return
	}
	srv.policy.AddOwnEndpoint(ip, addr.Port)
}

// accepted admits a new connection in accept order (so limits are judged in the order clients
// arrived) and returns the function that serves it, or refuses it.
func (srv *Server) accepted(conn *net.TCPConn) func() {
	c := &clientConn{srv: srv, conn: conn}
	if addr, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		c.ip = addr.IP.String()
	}
	c.touch(time.Now())
	if refused := srv.admit(c); refused != nil {
		return func() {
			srv.metrics.reject(refused.Reason)
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write(refused.encode(false, false))
			conn.Close()
		}
	}
	return func() {
		defer srv.forget(c)
		conn.SetNoDelay(true)
		c.br = bufio.NewReaderSize(conn, clientReadBuffer)
		c.serve()
	}
}

// serve accepts connections until ctx ends, then drains for a grace period.
func (srv *Server) serve(ln *net.TCPListener) {
	go func() {
		ticker := time.NewTicker(sweepInterval)
		defer ticker.Stop()
		for {
			select {
			case now := <-ticker.C:
				srv.pool.sweep(now)
			case <-srv.ctx.Done():
				return
			}
		}
	}()
	go func() {
		<-srv.ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	for {
		conn, err := ln.AcceptTCP()
		if err != nil {
			if srv.ctx.Err() != nil {
				break
			}
			srv.log.Warn("accept failed", "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		run := srv.accepted(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			run()
		}()
	}
	// Shutdown: idle keep-alive connections close now, in-flight requests get the grace period.
	deadline := time.Now().Add(shutdownGrace)
	for time.Now().Before(deadline) {
		srv.mu.Lock()
		remaining := len(srv.conns)
		for c := range srv.conns {
			if c.state.Load() == stateIdle {
				c.conn.Close()
			}
		}
		srv.mu.Unlock()
		if remaining == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.mu.Lock()
	for c := range srv.conns {
		c.conn.Close()
	}
	srv.mu.Unlock()
	wg.Wait()
	srv.pool.closeAll()
}
