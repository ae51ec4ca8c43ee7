package main

// Tests of response.go: every case of tests/unit/test_router_response_head.py ported to
// appendClientHead (the Python response_head; each *responseHead is read from a raw sandbox head
// with readResponseHead, or built by hand where readResponseHead refuses what the Python test
// feeds in), plus the strict reader itself: 1xx heads, CL with TE, repeated lengths, bad status
// lines, oversized heads, the end of the connection before and inside a head, keep-alive rules for
// HTTP/1.0 and Connection: close, HEAD responses framed as bodiless, heads split across buffer
// refills and the reuse of one responseHead for successive responses.

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

type rtPair = [2]string

var (
	rtCL2     = []rtPair{{"Content-Length", "2"}}
	rtChunked = []rtPair{{"Transfer-Encoding", "chunked"}}
)

// rtRaw is a sandbox response head: "HTTP/1.1 status[ reason]", the headers, the empty line.
func rtRaw(status int, reason string, headers []rtPair) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d", status)
	if reason != "" {
		b.WriteString(" " + reason)
	}
	b.WriteString("\r\n")
	for _, hv := range headers {
		b.WriteString(hv[0] + ": " + hv[1] + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func rtRead(raw string, headRequest bool) (*responseHead, error) {
	h := &responseHead{}
	err := readResponseHead(bufio.NewReader(strings.NewReader(raw)), h, headRequest)
	return h, err
}

func rtMustRead(t *testing.T, raw string, headRequest bool) *responseHead {
	t.Helper()
	h, err := rtRead(raw, headRequest)
	if err != nil {
		t.Fatalf("readResponseHead(%q): %v", raw, err)
	}
	return h
}

// rtHand builds a responseHead directly, for inputs readResponseHead (rightly) refuses.
func rtHand(status int, reason string, framing int, headers []rtPair) *responseHead {
	h := &responseHead{status: status, framing: framing, keepAlive: true}
	h.buf = append(h.buf, reason...)
	for _, hv := range headers {
		n0 := len(h.buf)
		h.buf = append(h.buf, hv[0]...)
		n1 := len(h.buf)
		h.buf = append(h.buf, hv[1]...)
		h.fields = append(h.fields, field{n0, n1, n1, len(h.buf)})
	}
	h.reason = h.buf[:len(reason)]
	return h
}

func rtClient(h *responseHead, headRequest, http10, keepAlive bool) (string, int, bool) {
	out, mode, keep := appendClientHead(nil, h, headRequest, http10, keepAlive, nil)
	return string(out), mode, keep
}

// rtNames is the header names of a client head, in order.
func rtNames(head string) []string {
	names := []string{}
	for _, line := range strings.Split(head, "\r\n")[1:] {
		if name, _, ok := strings.Cut(line, ": "); ok {
			names = append(names, name)
		}
	}
	return names
}

// -- framing: (status, headers, HEAD request, client version, keep-alive) -> head, mode, close-delimited, keep-alive

func TestResponseFraming(t *testing.T) {
	for _, tc := range []struct {
		status         int
		headers        []rtPair
		head           bool
		http10         bool // the client's version
		keepAlive      bool
		framing        string
		mode           int
		closeDelimited bool
		keeps          bool
		refused        bool // readResponseHead refuses it (the Python router's llhttp did too)
	}{
		// Content-Length: relayed verbatim, the connection stays open.
		{200, rtCL2, false, false, true, "Content-Length: 2\r\n", outRaw, false, true, false},
		{200, []rtPair{{"content-length", "2"}}, false, false, true, "Content-Length: 2\r\n", outRaw, false, true, false},
		{200, rtCL2, false, true, true, "Content-Length: 2\r\nConnection: keep-alive\r\n", outRaw, false, true, false},
		{200, rtCL2, false, false, false, "Content-Length: 2\r\nConnection: close\r\n", outRaw, false, false, false},
		{200, rtCL2, false, true, false, "Content-Length: 2\r\nConnection: close\r\n", outRaw, false, false, false},
		// Chunked from the sandbox: re-chunked for HTTP/1.1, relayed raw and closed for HTTP/1.0.
		{200, rtChunked, false, false, true, "Transfer-Encoding: chunked\r\n", outChunked, false, true, false},
		{200, rtChunked, false, true, true, "Connection: close\r\n", outRaw, false, false, false},
		{200, []rtPair{{"transfer-encoding", "gzip, chunked"}}, false, false, true, "Transfer-Encoding: chunked\r\n",
			outChunked, false, true, false},
		// Both (refused by readResponseHead; built by hand): chunked wins, the length is dropped.
		{200, append(slices.Clone(rtCL2), rtChunked...), false, false, true, "Transfer-Encoding: chunked\r\n",
			outChunked, false, true, true},
		// Neither: the body ends when the sandbox closes.
		{200, nil, false, false, true, "Transfer-Encoding: chunked\r\n", outChunked, true, true, false},
		{200, nil, false, false, false, "Transfer-Encoding: chunked\r\nConnection: close\r\n", outChunked, true, false, false},
		{200, nil, false, true, true, "Connection: close\r\n", outRaw, true, false, false},
		// No body at all: HEAD, 204, 304 (a Content-Length is passed on, nothing else is added).
		{200, []rtPair{{"Content-Length", "10"}}, true, false, true, "Content-Length: 10\r\n", outNone, false, true, false},
		{200, nil, true, false, true, "", outNone, false, true, false},
		{200, rtChunked, true, false, true, "", outNone, false, true, false},
		{200, nil, true, true, true, "Connection: keep-alive\r\n", outNone, false, true, false},
		{204, nil, false, false, true, "", outNone, false, true, false},
		{204, rtChunked, false, false, false, "Connection: close\r\n", outNone, false, false, false},
		{304, []rtPair{{"Content-Length", "10"}}, false, false, true, "Content-Length: 10\r\n", outNone, false, true, false},
		{304, nil, false, true, true, "Connection: keep-alive\r\n", outNone, false, true, false},
		{205, nil, false, false, true, "Transfer-Encoding: chunked\r\n", outChunked, true, true, false},
	} {
		label := fmt.Sprintf("%d %v head=%v http10=%v keep=%v", tc.status, tc.headers, tc.head, tc.http10, tc.keepAlive)
		h, err := rtRead(rtRaw(tc.status, "R", tc.headers), tc.head)
		if tc.refused {
			if err != errInvalidResponse {
				t.Errorf("%s: readResponseHead = %v, want errInvalidResponse", label, err)
			}
			h, err = rtHand(tc.status, "R", inChunked, tc.headers), nil
		}
		if err != nil {
			t.Errorf("%s: readResponseHead: %v", label, err)
			continue
		}
		raw, mode, keeps := rtClient(h, tc.head, tc.http10, tc.keepAlive)
		want := fmt.Sprintf("HTTP/1.1 %d R\r\n", tc.status) + tc.framing + "\r\n"
		if raw != want || mode != tc.mode || keeps != tc.keeps {
			t.Errorf("%s:\n got %q mode %d keeps %v\nwant %q mode %d keeps %v", label, raw, mode, keeps, want, tc.mode, tc.keeps)
		}
		if delimited := h.framing == inUntilClose; delimited != tc.closeDelimited {
			t.Errorf("%s: close-delimited (framing %d) = %v, want %v", label, h.framing, delimited, tc.closeDelimited)
		}
	}
}

func TestResponseStatusLineIsAlwaysHTTP11WithTheSandboxReasonOrTheStandardOne(t *testing.T) {
	for _, tc := range []struct {
		status int
		reason string
		line   string
	}{
		{200, "OK", "HTTP/1.1 200 OK\r\n"},
		{200, "", "HTTP/1.1 200 OK\r\n"},
		{404, "", "HTTP/1.1 404 Not Found\r\n"},
		{201, "Made It", "HTTP/1.1 201 Made It\r\n"},
		{599, "", "HTTP/1.1 599 Unknown\r\n"},
		{299, "Odd", "HTTP/1.1 299 Odd\r\n"},
	} {
		raw, _, _ := rtClient(rtMustRead(t, rtRaw(tc.status, tc.reason, rtCL2), false), false, false, true)
		if !strings.HasPrefix(raw, tc.line) {
			t.Errorf("%d %q: %q, want it to start with %q", tc.status, tc.reason, raw, tc.line)
		}
	}
	// "HTTP/1.1 200 " (a space and no reason) is the empty reason too, and so is an HTTP/1.0 sandbox's.
	for _, raw := range []string{"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n", "HTTP/1.0 200\r\nContent-Length: 2\r\n\r\n"} {
		if got, _, _ := rtClient(rtMustRead(t, raw, false), false, false, true); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") {
			t.Errorf("%q: %q", raw, got)
		}
	}
}

func TestResponseHeadersKeepTheirOrderCaseAndRepeatsAndTheLengthGoesLast(t *testing.T) {
	h := rtMustRead(t, rtRaw(200, "OK", []rtPair{{"content-length", "1"}, {"Set-Cookie", "a=1"}, {"x-lower", "v"},
		{"Set-Cookie", "b=2"}}), false)
	want := "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nx-lower: v\r\nSet-Cookie: b=2\r\nContent-Length: 1\r\n\r\n"
	if got, _, _ := rtClient(h, false, false, true); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestResponseHopByHopHeadersNeverReachTheClient(t *testing.T) {
	names := []string{"content-length"}
	for name := range hopByHop {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, cased := range []string{strings.ToLower(name), strings.ToUpper(name), htTitle(name)} {
			headers := append([]rtPair{{cased, "from-the-sandbox"}, {"X-Keep", "1"}}, rtCL2...)
			h, err := rtRead(rtRaw(200, "OK", headers), false)
			if name == "content-length" || name == "transfer-encoding" {
				// A second length, or a length with a coding: the reader refuses it; the head is
				// built by hand to check that appendClientHead drops it all the same.
				if err != errInvalidResponse {
					t.Errorf("%s: readResponseHead = %v, want errInvalidResponse", cased, err)
				}
				h, err = rtHand(200, "OK", inLength, headers), nil
			}
			if err != nil {
				t.Errorf("%s: %v", cased, err)
				continue
			}
			raw, _, _ := rtClient(h, false, false, true)
			if strings.Contains(raw, "from-the-sandbox") || !strings.Contains(raw, "X-Keep: 1\r\n") {
				t.Errorf("%s: %q", cased, raw)
			}
		}
	}
}

func TestResponseTheDroppedSetIsHopByHopPlusContentLength(t *testing.T) {
	for _, name := range []string{"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
		"proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length"} {
		if !responseDrop(name) {
			t.Errorf("%s is relayed", name)
		}
	}
	for _, name := range []string{"host", "expect", "authorization", "x-sandbox-id", "content-type", "set-cookie",
		"www-authenticate", "content-encoding", "Connection"} {
		if responseDrop(name) {
			t.Errorf("%s is dropped", name)
		}
	}
	for name := range hopByHop {
		if !responseDrop(name) {
			t.Errorf("hop-by-hop %s is relayed", name)
		}
	}
}

func TestResponseHeadersNominatedByConnectionAreDropped(t *testing.T) {
	for _, tc := range []struct {
		connection []string
		kept       []string
	}{
		{[]string{"x-hop, close"}, []string{"X-Keep", "X-Other"}},
		{[]string{"close"}, []string{"X-Keep", "X-Hop", "X-Other", "x-hop"}},
		{[]string{"Keep-Alive, Upgrade, , close"}, []string{"X-Keep", "X-Hop", "X-Other", "x-hop"}},
		{[]string{" X-HOP ", "x-other"}, []string{"X-Keep"}}, // tokens of several Connection headers add up
		{[]string{"X-Keep,X-Hop,X-Other"}, []string{}},
		{[]string{"content-length"}, []string{"X-Keep", "X-Hop", "X-Other", "x-hop"}}, // the length is re-added anyway
	} {
		var headers []rtPair
		for _, v := range tc.connection {
			headers = append(headers, rtPair{"Connection", v})
		}
		headers = append(headers, rtPair{"X-Keep", "1"}, rtPair{"X-Hop", "2"}, rtPair{"X-Other", "3"}, rtPair{"x-hop", "4"})
		headers = append(headers, rtCL2...)
		raw, _, _ := rtClient(rtMustRead(t, rtRaw(200, "OK", headers), false), false, false, true)
		if got, want := rtNames(raw), append(slices.Clone(tc.kept), "Content-Length"); !slices.Equal(got, want) {
			t.Errorf("Connection %q: %v, want %v", tc.connection, got, want)
		}
	}
}

func TestResponse101SwitchesToAWebSocketTunnel(t *testing.T) {
	h := rtMustRead(t, rtRaw(101, "Switching Protocols", []rtPair{{"Upgrade", "websocket"},
		{"Connection", "Upgrade, X-Hop"}, {"X-Hop", "1"}, {"Sec-WebSocket-Accept", "zz"}, {"Content-Length", "5"}}), false)
	if h.framing != inNone {
		t.Errorf("101 framing %d, want inNone", h.framing)
	}
	raw, mode, _ := rtClient(h, false, false, true)
	want := "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: zz\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	if raw != want || mode != outNone {
		t.Errorf("got %q mode %d\nwant %q", raw, mode, want)
	}
	raw, mode, keeps := rtClient(rtMustRead(t, rtRaw(101, "", nil), false), false, true, false)
	if raw != "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" || mode != outNone ||
		keeps {
		t.Errorf("bare 101 for an HTTP/1.0 client: %q mode %d keeps %v", raw, mode, keeps)
	}
}

// -- readResponseHead ------------------------------------------------------------------------------

func TestResponseReaderParsesAHead(t *testing.T) {
	raw := "HTTP/1.1 200 Fine Indeed\r\nContent-Type: text/plain\r\nContent-Length:  5 \r\nX-Obs: caf\xe9\r\n\r\nhello"
	br := bufio.NewReader(strings.NewReader(raw))
	h := &responseHead{}
	if err := readResponseHead(br, h, false); err != nil {
		t.Fatal(err)
	}
	if h.status != 200 || string(h.reason) != "Fine Indeed" || h.http10 || !h.keepAlive || h.framing != inLength ||
		h.length != 5 {
		t.Errorf("%d %q http10 %v keep %v framing %d length %d", h.status, h.reason, h.http10, h.keepAlive, h.framing,
			h.length)
	}
	var got []rtPair
	for _, f := range h.fields {
		got = append(got, rtPair{string(h.name(f)), string(h.value(f))})
	}
	if want := []rtPair{{"Content-Type", "text/plain"}, {"Content-Length", "5"}, {"X-Obs", "caf\xe9"}}; !slices.Equal(got, want) {
		t.Errorf("fields %q, want %q", got, want)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "hello" {
		t.Errorf("left %q", rest)
	}
}

func TestResponseReaderParsesInterimHeads(t *testing.T) {
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"HTTP/1.1 100 Continue\r\n\r\n", 100},
		{"HTTP/1.1 102 Processing\r\n\r\n", 102},
		{"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", 103},
		{"HTTP/1.1 100\r\n\r\n", 100},
		{"HTTP/1.1 199 Whatever\r\nContent-Length: 3\r\n\r\n", 199},
	} {
		h := rtMustRead(t, tc.raw, false)
		if h.status != tc.status || h.framing != inNone {
			t.Errorf("%q: status %d framing %d", tc.raw, h.status, h.framing)
		}
	}
	// Interim heads, then the final one, off one connection.
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\n" +
		"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"))
	h := &responseHead{}
	for _, want := range []int{100, 103, 201} {
		if err := readResponseHead(br, h, false); err != nil || h.status != want {
			t.Fatalf("want %d: status %d err %v", want, h.status, err)
		}
	}
	if h.framing != inLength || h.length != 2 || len(h.fields) != 1 || string(h.reason) != "Created" {
		t.Errorf("final head: framing %d length %d fields %d reason %q", h.framing, h.length, len(h.fields), h.reason)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "ok" {
		t.Errorf("left %q", rest)
	}
}

func TestResponseReaderRefusesInvalidHeads(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		head bool
	}{
		// framing the sandbox and a client could read differently
		{"cl-and-te", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"te-and-cl", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", false},
		{"cl-and-te-204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"cl-and-te-head", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"two-cls", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", false},
		{"two-equal-cls", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n", false},
		{"two-tes", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"cl-list", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", false},
		{"cl-alpha", "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", false},
		{"cl-negative", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false},
		{"cl-plus", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n", false},
		{"cl-empty", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", false},
		{"cl-overflow", "HTTP/1.1 200 OK\r\nContent-Length: " + strings.Repeat("9", 30) + "\r\n\r\n", false},
		{"cl-hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", false},
		// status lines
		{"http2", "HTTP/2.0 200 OK\r\n\r\n", false},
		{"http12", "HTTP/1.2 200 OK\r\n\r\n", false},
		{"http09", "HTTP/0.9 200 OK\r\n\r\n", false},
		{"lower-case", "http/1.1 200 OK\r\n\r\n", false},
		{"icy", "ICY 200 OK\r\n\r\n", false},
		{"two-digit-status", "HTTP/1.1 20 OK\r\n\r\n", false},
		{"four-digit-status", "HTTP/1.1 2000 OK\r\n\r\n", false},
		{"status-below-100", "HTTP/1.1 099 Odd\r\n\r\n", false},
		{"alpha-status", "HTTP/1.1 abc OK\r\n\r\n", false},
		{"no-space-before-reason", "HTTP/1.1 200OK\r\n\r\n", false},
		{"two-spaces", "HTTP/1.1  200 OK\r\n\r\n", false},
		{"no-status", "HTTP/1.1\r\n\r\n", false},
		{"control-in-reason", "HTTP/1.1 200 O\x01K\r\n\r\n", false},
		{"del-in-reason", "HTTP/1.1 200 OK\x7f\r\n\r\n", false},
		{"garbage", "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a", false},
		{"empty-status-line", "\r\nHTTP/1.1 200 OK\r\n\r\n", false},
		// header lines
		{"bare-lf-status-line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", false},
		{"bare-lf-header", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", false},
		{"bare-lf-end", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", false},
		{"bare-cr-in-value", "HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 0\r\n\r\n", false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", false},
		{"space-in-name", "HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n", false},
		{"space-before-colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", false},
		{"no-colon", "HTTP/1.1 200 OK\r\nContent-Length\r\n\r\n", false},
		{"nul-in-value", "HTTP/1.1 200 OK\r\nX-A: \x00\r\nContent-Length: 0\r\n\r\n", false},
	} {
		if _, err := rtRead(tc.raw, tc.head); err != errInvalidResponse {
			t.Errorf("%s: %v, want errInvalidResponse", tc.name, err)
		}
	}
}

func TestResponseReaderRefusesOversizedHeads(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
	}{
		{"one huge header", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", maxResponseHeaderBytes) + "\r\n\r\n"},
		{"huge reason", "HTTP/1.1 200 " + strings.Repeat("r", maxResponseHeaderBytes) + "\r\n\r\n"},
		{"many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-M: "+strings.Repeat("m", 1000)+"\r\n", 300) + "\r\n"},
		{"endless line", "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 2*maxResponseHeaderBytes)},
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.raw), 32<<10) // the upstream buffer size
		if err := readResponseHead(br, &responseHead{}, false); err != errOversizedHeaders {
			t.Errorf("%s: %v, want errOversizedHeaders", tc.name, err)
		}
	}
	// Large but within the limit: read across many buffer refills.
	raw := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 200<<10) + "\r\nContent-Length: 0\r\n\r\n"
	h := &responseHead{}
	if err := readResponseHead(bufio.NewReaderSize(strings.NewReader(raw), 32<<10), h, false); err != nil ||
		len(h.fields) != 2 || len(h.value(h.fields[0])) != 200<<10 {
		t.Errorf("200 KiB head: %v", err)
	}
}

func TestResponseReaderReportsHowTheConnectionEnded(t *testing.T) {
	if _, err := rtRead("", false); err != io.EOF {
		t.Errorf("nothing: %v, want io.EOF", err)
	}
	for _, raw := range []string{"H", "HTTP/1.1 20", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK\r", "HTTP/1.1 200 OK\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r"} {
		if _, err := rtRead(raw, false); err != io.ErrUnexpectedEOF {
			t.Errorf("%q: %v, want io.ErrUnexpectedEOF", raw, err)
		}
	}
	// A timeout inside the head passes through (the router answers 504).
	r := io.MultiReader(strings.NewReader("HTTP/1.1 200 OK\r\nX-A"), iotest.ErrReader(htTimeout{}))
	if err := readResponseHead(bufio.NewReader(r), &responseHead{}, false); !htIsTimeout(err) {
		t.Errorf("timeout inside the head: %v, want the timeout", err)
	}
}

// A read error before the first byte of the response is that error, not io.EOF: a sandbox that
// accepts the request and never answers hits the read deadline, and proxy.go must see the
// timeout (504, kind "timeout"), not a connection the sandbox closed (502 "reset", or a replay of
// the request on a fresh connection when the pooled one was reused). (Found as a bug against an
// earlier head.go, whose readLine turned any error with nothing read into errClosed.)
func TestResponseReaderKeepsATimeoutBeforeTheFirstByte(t *testing.T) {
	err := readResponseHead(bufio.NewReader(iotest.ErrReader(htTimeout{})), &responseHead{}, false)
	if !htIsTimeout(err) {
		t.Errorf("timeout before the first byte: %v (%T), want the timeout", err, err)
	}
}

func TestResponseKeepAliveAndFraming(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		head      bool
		keepAlive bool
		framing   int
		http10    bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false, true, inLength, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", false, false, inLength, false},
		{"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\n", false, false, inLength, false},
		{"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n", false, false, inLength, false},
		{"HTTP/1.1 200 OK\r\nConnection: x-a\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", false, false, inLength, false},
		{"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", false, true, inLength, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, inChunked, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", false, true, inChunked, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, false, inUntilClose, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, false, inUntilClose, false},
		{"HTTP/1.1 200 OK\r\n\r\n", false, false, inUntilClose, false},
		{"HTTP/1.1 204 No Content\r\n\r\n", false, true, inNone, false},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, true, inNone, false},
		{"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", false, false, inNone, false},
		// HTTP/1.0: closes unless it says keep-alive (and has a length)
		{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, false, inLength, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", false, true, inLength, true},
		{"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n", false, true, inLength, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n", false, false, inLength, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false, false, inUntilClose, true},
		{"HTTP/1.0 204 No Content\r\n\r\n", false, false, inNone, true},
		{"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n", false, true, inNone, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, inChunked, true},
		// a HEAD request's response has no body, whatever it announces
		{"HTTP/1.1 200 OK\r\n\r\n", true, true, inNone, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, true, inNone, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, true, inNone, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", true, true, inNone, false},
		{"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\n", true, false, inNone, false},
		{"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n", true, false, inNone, true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", true, true, inNone, true},
	} {
		h, err := rtRead(tc.raw, tc.head)
		if err != nil {
			t.Errorf("%q head=%v: %v", tc.raw, tc.head, err)
			continue
		}
		if h.keepAlive != tc.keepAlive || h.framing != tc.framing || h.http10 != tc.http10 {
			t.Errorf("%q head=%v: keepAlive %v framing %d http10 %v, want %v %d %v", tc.raw, tc.head, h.keepAlive,
				h.framing, h.http10, tc.keepAlive, tc.framing, tc.http10)
		}
	}
	// A HEAD response relays its Content-Length and frames no body towards the client.
	h := rtMustRead(t, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
	if raw, mode, keeps := rtClient(h, true, false, true); raw != "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" ||
		mode != outNone || !keeps {
		t.Errorf("HEAD: %q mode %d keeps %v", raw, mode, keeps)
	}
}

// A bodiless response (HEAD, 1xx, 204, 304) must still carry one valid Content-Length if any:
// it is relayed to the client (llhttp refuses an invalid or repeated one in any response too).
func TestResponseBodilessHeadsStillNeedAValidContentLength(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		head bool
	}{
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: abc\r\n\r\n", false},
		{"HTTP/1.1 204 No Content\r\nContent-Length: -1\r\n\r\n", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", true},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", true},
		{"HTTP/1.1 100 Continue\r\nContent-Length: x\r\n\r\n", false},
	} {
		h, err := rtRead(tc.raw, tc.head)
		if err != errInvalidResponse {
			relayed := ""
			if err == nil {
				relayed, _, _ = rtClient(h, tc.head, false, true)
			}
			t.Errorf("%q head=%v: %v, want errInvalidResponse (client head %q)", tc.raw, tc.head, err, relayed)
		}
	}
}

func TestResponseReaderJoinsLinesSplitAcrossBufferRefills(t *testing.T) {
	raw := "HTTP/1.1 200 A Reason Longer Than The Buffer\r\nX-Long: " + strings.Repeat("0123456789", 30) +
		"\r\nSet-Cookie: a=1\r\nContent-Length: 4\r\n\r\nBODY"
	want := rtMustRead(t, raw, false)
	wantHead, _, _ := rtClient(want, false, false, true)
	for size := 16; size <= 40; size++ {
		br := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(raw)), size)
		h := &responseHead{}
		if err := readResponseHead(br, h, false); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got, _, _ := rtClient(h, false, false, true); got != wantHead || h.length != 4 {
			t.Fatalf("size %d: %q", size, got)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "BODY" {
			t.Fatalf("size %d: left %q", size, rest)
		}
	}
	for size := 16; size <= 24; size++ {
		bad := "HTTP/1.1 200 OK\r\nX-Abcdefghijk: a\rb\r\n\r\n"
		br := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(bad)), size)
		if err := readResponseHead(br, &responseHead{}, false); err != errInvalidResponse {
			t.Errorf("size %d: bare CR: %v", size, err)
		}
	}
}

func TestResponseReaderReusesOneHeadForSuccessiveResponses(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 First\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n" +
		"HTTP/1.0 404\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc"))
	h := &responseHead{}
	if err := readResponseHead(br, h, false); err != nil || len(h.fields) != 3 || string(h.reason) != "First" {
		t.Fatalf("first: %v %d %q", err, len(h.fields), h.reason)
	}
	if err := readResponseHead(br, h, false); err != nil {
		t.Fatal(err)
	}
	if h.status != 404 || len(h.reason) != 0 || !h.http10 || !h.keepAlive || h.framing != inLength || h.length != 3 ||
		len(h.fields) != 2 {
		t.Errorf("second: %d %q http10 %v keep %v framing %d length %d fields %d", h.status, h.reason, h.http10,
			h.keepAlive, h.framing, h.length, len(h.fields))
	}
	raw, mode, keeps := rtClient(h, false, false, true)
	if raw != "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n" || mode != outRaw || !keeps {
		t.Errorf("client head %q mode %d keeps %v", raw, mode, keeps)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "abc" {
		t.Errorf("left %q", rest)
	}
}

func TestResponseAppendClientHeadAppendsToDst(t *testing.T) {
	h := rtMustRead(t, rtRaw(200, "OK", rtCL2), false)
	out, _, _ := appendClientHead([]byte("pending"), h, false, false, true, make([]byte, 0, 4))
	if string(out) != "pendingHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" {
		t.Errorf("%q", out)
	}
}
