package main

// timing_test.go covers the Server-Timing header (timing.go): its entries and their order, that
// the sandbox's own entries are relayed beside it, that a slow sandbox shows in `sandbox` (and so
// in `router`), that the second request of a keep-alive connection reports a pooled connection,
// and that ROUTER_SERVER_TIMING=false leaves responses as the sandbox sent them.

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

var tmEntries = regexp.MustCompile(`^router;dur=(\d+\.\d{3}), connect;dur=(\d+\.\d{3});desc=(pooled|new), sandbox;dur=(\d+\.\d{3})$`)

// tmParse returns router, connect and sandbox milliseconds and the connection kind.
func tmParse(t *testing.T, resp *http.Response) (router, connect, sandbox float64, kind string) {
	t.Helper()
	var ours []string
	for _, v := range resp.Header.Values("Server-Timing") {
		if tmEntries.MatchString(v) {
			ours = append(ours, v)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("Server-Timing %q: want exactly one router entry list", resp.Header.Values("Server-Timing"))
	}
	m := tmEntries.FindStringSubmatch(ours[0])
	f := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	return f(m[1]), f(m[2]), f(m[4]), m[3]
}

func TestServerTimingSplitsTheExchangeAndRelaysTheSandboxsOwn(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t)
	up := ptStartUpstream(t, func(c *ptUpConn) {
		c.serve(func(req *http.Request, body []byte) string {
			if req.URL.Path == "/slow" {
				time.Sleep(60 * time.Millisecond)
			}
			return "HTTP/1.1 200 OK\r\nServer-Timing: runtime;dur=1.500\r\nContent-Length: 2\r\n\r\nok"
		})
	})
	c := r.dial(t)
	resp, body := c.roundTrip(ptReq("GET", "/slow", up.port), "GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	router, connect, sandbox, kind := tmParse(t, resp)
	if kind != "new" {
		t.Errorf("first request: desc=%s, want new", kind)
	}
	if sandbox < 60 || router < sandbox+connect {
		t.Errorf("router %.3f, connect %.3f, sandbox %.3f: want sandbox >= 60 (the sandbox slept) and router >= connect + sandbox",
			router, connect, sandbox)
	}
	if got := resp.Header.Values("Server-Timing"); len(got) != 2 || got[0] != "runtime;dur=1.500" {
		t.Errorf("Server-Timing fields %q: want the sandbox's entry relayed first, then the router's", got)
	}
	resp, _ = c.roundTrip(ptReq("GET", "/fast", up.port), "GET")
	router, _, sandbox, kind = tmParse(t, resp)
	if kind != "pooled" {
		t.Errorf("second request on a keep-alive connection: desc=%s, want pooled", kind)
	}
	if sandbox >= 60 || router < sandbox {
		t.Errorf("fast request: router %.3f, sandbox %.3f", router, sandbox)
	}
}

func TestServerTimingOffLeavesTheResponseAlone(t *testing.T) {
	t.Parallel()
	r := ptStartRouter(t, "ROUTER_SERVER_TIMING", "false")
	up := ptStartUpstream(t, func(c *ptUpConn) { c.serve(ptEcho) })
	resp, _ := r.dial(t).roundTrip(ptReq("GET", "/x", up.port), "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Values("Server-Timing"); len(got) != 0 {
		t.Errorf("ROUTER_SERVER_TIMING=false: Server-Timing %q, want none", got)
	}
}
