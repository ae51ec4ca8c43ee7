package main

// Entry point: settings from the environment (exit 2 with the fix on a bad value), logging, the
// pod watcher in watch mode, and serving until SIGTERM/SIGINT.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func logLevel(name string) slog.Level {
	switch name {
	case "DEBUG":
		return slog.LevelDebug
	case "WARNING":
		return slog.LevelWarn
	case "ERROR", "CRITICAL":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func main() { os.Exit(run()) }

func run() int {
	s, err := LoadSettings(environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-router: configuration error: %s\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(s.LogLevel)}))
	if s.AllowUnauthenticated {
		logger.Warn("ALLOW_UNAUTHENTICATED_ROUTER=true: anyone who can reach this port can use every sandbox. Development only.")
	}
	if s.Resolver == "dns" {
		logger.Warn("ROUTER_RESOLVER=dns: targets come from the caller's X-Sandbox-Pod-IP or Service names, " +
			"limited only by the address policy. Local tests only; use watch in a cluster.")
	}
	if s.AllowLoopbackPodIP {
		logger.Warn("ROUTER_ALLOW_LOOPBACK_POD_IP=true: loopback pod IPs are accepted. Local tests only.")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := newServer(ctx, s, logger)
	var watcher *PodWatcher
	if srv.index != nil {
		cfg := KubeConfig{Host: s.KubeHost, Port: s.KubePort, ServiceAccountDir: s.ServiceAccountDir}
		index, metrics := srv.index, srv.metrics
		watcher, err = NewPodWatcher(cfg, index, s.SandboxNamespaces, metrics.watchError, logger)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox-router: configuration error: %s\n", err)
			return 2
		}
	}
	lc := net.ListenConfig{}
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-router: cannot listen on %s:%d: %s\n", s.Host, s.Port, err)
		return 1
	}
	srv.setOwnEndpoints(ln)
	auth := "on"
	if srv.token == nil {
		auth = "OFF"
	}
	logger.Info("sandbox-router listening", "address", ln.Addr().String(), "auth", auth, "resolver", s.Resolver,
		"namespaces", strings.Join(s.SandboxNamespaces, ","), "loopback_pod_ips", s.AllowLoopbackPodIP)
	if watcher != nil {
		watcher.Start(ctx)
	}
	srv.serve(ln.(*net.TCPListener))
	return 0
}
