package main

// Tests of head.go: every case of tests/unit/test_router_request_head.py ported to table tests
// against classify, authorize, refusal, declaresBody and appendUpstreamHead (the heads are read
// from raw bytes with readRequestHead, so values arrive with their surrounding whitespace already
// trimmed, as on the wire), the strict request-head reader itself (the rules of head.go's opening
// comment and the request-level smuggling rows of tests/component/test_router_hostile.py: bare LF
// or CR, obsolete folding, spaces in names, CL with TE, repeated lengths, TE not ending in chunked,
// unsupported versions, header limits, non-origin targets), framingError, and a head read through
// a tiny bufio buffer one byte at a time.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	htMaxBytes = 64 << 10 // the router's defaults (settings.go)
	htMaxCount = 128
)

// htHead is "METHOD /target HTTP/1.1" followed by "Name: value" lines and the empty line.
func htHead(requestLine string, lines ...string) string {
	var b strings.Builder
	b.WriteString(requestLine + "\r\n")
	for _, line := range lines {
		b.WriteString(line + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// htRead reads one request head from raw with the default limits.
func htRead(raw string) (*requestHead, error) {
	h := &requestHead{}
	err := readRequestHead(bufio.NewReader(strings.NewReader(raw)), h, htMaxBytes, htMaxCount)
	return h, err
}

func htMustRead(t *testing.T, raw string) *requestHead {
	t.Helper()
	h, err := htRead(raw)
	if err != nil {
		t.Fatalf("readRequestHead(%q): %v", raw, err)
	}
	return h
}

// htSort is the Python tests' sort(): classify a head with these header lines.
func htSort(t *testing.T, method string, lines ...string) (*requestHead, *classified) {
	t.Helper()
	h := htMustRead(t, htHead(method+" / HTTP/1.1", lines...))
	c := &classified{}
	classify(h, c, nil)
	return h, c
}

type htPair [2]string

func htForwarded(h *requestHead, c *classified) []htPair {
	out := []htPair{}
	for _, f := range c.forwarded {
		out = append(out, htPair{string(h.name(f)), string(h.value(f))})
	}
	return out
}

func htForwardedNames(h *requestHead, c *classified) []string {
	out := []string{}
	for _, f := range c.forwarded {
		out = append(out, string(h.name(f)))
	}
	return out
}

// htRouting is the routing headers present, by lower-case name (the Python dict).
func htRouting(c *classified) map[string]string {
	out := map[string]string{}
	for i, name := range RoutingHeaderNames {
		if c.routing.Present[i] {
			out[name] = c.routing.Values[i]
		}
	}
	return out
}

func htRoutingIndex(name string) int {
	for i, n := range RoutingHeaderNames {
		if n == name {
			return i
		}
	}
	return -1
}

// htPairs splits "Name: value" lines the way the Python h() helper does.
func htPairs(lines ...string) []htPair {
	out := []htPair{}
	for _, line := range lines {
		name, value, _ := strings.Cut(line, ": ")
		out = append(out, htPair{name, value})
	}
	return out
}

func htMapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// htTitle is Python's bytes.title(): upper-case after a non-letter, lower-case elsewhere.
func htTitle(s string) string {
	out := []byte(s)
	prevLetter := false
	for i, c := range out {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		switch {
		case letter && !prevLetter && c >= 'a':
			out[i] = c - 'a' + 'A'
		case letter && prevLetter && c <= 'Z':
			out[i] = c - 'A' + 'a'
		}
		prevLetter = letter
	}
	return string(out)
}

// -- classify: routing headers ---------------------------------------------------------------------

func TestHeadRoutingHeadersAreCollectedByLowerCaseNameAndNeverForwarded(t *testing.T) {
	h, c := htSort(t, "GET", "X-Sandbox-ID: a", "x-sandbox-NAMESPACE: ns", "X-SANDBOX-PORT: 9",
		"X-Sandbox-Pod-IP: 1.2.3.4", "X-Sandbox-Timeout: 5", "X-Other: 1")
	want := map[string]string{"x-sandbox-id": "a", "x-sandbox-namespace": "ns", "x-sandbox-port": "9",
		"x-sandbox-pod-ip": "1.2.3.4", "x-sandbox-timeout": "5"}
	if got := htRouting(c); !htMapsEqual(got, want) {
		t.Errorf("routing = %v, want %v", got, want)
	}
	if c.duplicate != -1 {
		t.Errorf("duplicate = %d, want -1", c.duplicate)
	}
	if got := htForwarded(h, c); !slices.Equal(got, []htPair{{"X-Other", "1"}}) {
		t.Errorf("forwarded = %v", got)
	}
}

func TestHeadTheFirstRepeatedRoutingHeaderIsTheDuplicateAndTheLastValueWins(t *testing.T) {
	for _, tc := range []struct {
		lines     []string
		duplicate string // "" for none
		routing   map[string]string
	}{
		{[]string{"X-Sandbox-ID: a", "X-Sandbox-ID: b"}, "x-sandbox-id", map[string]string{"x-sandbox-id": "b"}},
		{[]string{"X-Sandbox-ID: a", "x-sandbox-id: a"}, "x-sandbox-id", map[string]string{"x-sandbox-id": "a"}},
		{[]string{"X-Sandbox-Port: 1", "X-Sandbox-ID: a", "X-Sandbox-Port: 2", "X-Sandbox-ID: b"}, "x-sandbox-port",
			map[string]string{"x-sandbox-port": "2", "x-sandbox-id": "b"}},
		{[]string{"X-Sandbox-ID: a", "X-Sandbox-Timeout: 1", "X-Sandbox-Timeout: 1", "X-Sandbox-ID: b"}, "x-sandbox-timeout",
			map[string]string{"x-sandbox-id": "b", "x-sandbox-timeout": "1"}},
		{[]string{"X-Sandbox-Foo: 1", "X-Sandbox-Foo: 2", "X-Sandbox-ID: a"}, "", map[string]string{"x-sandbox-id": "a"}},
	} {
		_, c := htSort(t, "GET", tc.lines...)
		want := -1
		if tc.duplicate != "" {
			want = htRoutingIndex(tc.duplicate)
		}
		if c.duplicate != want {
			t.Errorf("%q: duplicate = %d, want %d (%s)", tc.lines, c.duplicate, want, tc.duplicate)
		}
		if got := htRouting(c); !htMapsEqual(got, tc.routing) {
			t.Errorf("%q: routing = %v, want %v", tc.lines, got, tc.routing)
		}
	}
}

func TestHeadEveryRoutingHeaderHasItsDuplicateAnswer(t *testing.T) {
	for _, tc := range []struct{ name, canonical string }{
		{"x-sandbox-id", "X-Sandbox-ID"}, {"x-sandbox-pod-ip", "X-Sandbox-Pod-IP"},
		{"x-sandbox-namespace", "X-Sandbox-Namespace"}, {"x-sandbox-port", "X-Sandbox-Port"},
		{"x-sandbox-timeout", "X-Sandbox-Timeout"},
	} {
		a := answerDuplicate[htRoutingIndex(tc.name)]
		if a == nil || a.Status != 400 || a.Detail != "Duplicate "+tc.canonical+" header." || a.Reason != "routing" ||
			a.KeepOpen || a.Kind != "" {
			t.Errorf("answerDuplicate[%s] = %+v", tc.name, a)
		}
	}
}

func TestHeadUnknownXSandboxHeadersAreDropped(t *testing.T) {
	for _, name := range []string{"X-Sandbox-Foo", "x-sandbox-", "X-SANDBOX-ID-EXTRA", "x-sandbox-namespaces"} {
		h, c := htSort(t, "GET", name+": v", "X-Keep: 1")
		if got := htRouting(c); len(got) != 0 {
			t.Errorf("%s: routing = %v", name, got)
		}
		if got := htForwarded(h, c); !slices.Equal(got, []htPair{{"X-Keep", "1"}}) {
			t.Errorf("%s: forwarded = %v", name, got)
		}
	}
}

// -- classify: what is dropped, what is forwarded ----------------------------------------------------

func TestHeadHopByHopAndRecomputedHeadersAreNeverForwarded(t *testing.T) {
	names := make([]string, 0, len(requestDrop))
	for name := range requestDrop {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, cased := range []string{strings.ToLower(name), strings.ToUpper(name), htTitle(name)} {
			value := "1"
			if name == "transfer-encoding" {
				value = "chunked"
			}
			h, c := htSort(t, "GET", cased+": "+value, "X-Keep: 1")
			if got := htForwarded(h, c); !slices.Equal(got, []htPair{{"X-Keep", "1"}}) {
				t.Errorf("%s: forwarded = %v", cased, got)
			}
		}
	}
}

func TestHeadTheDroppedSetIsHopByHopPlusHostLengthAndExpect(t *testing.T) {
	wantHop := []string{"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
		"te", "trailer", "trailers", "transfer-encoding", "upgrade"}
	var gotHop []string
	for name, on := range hopByHop {
		if on {
			gotHop = append(gotHop, name)
		}
	}
	slices.Sort(gotHop)
	slices.Sort(wantHop)
	if !slices.Equal(gotHop, wantHop) {
		t.Errorf("hopByHop = %v, want %v", gotHop, wantHop)
	}
	wantDrop := append(slices.Clone(wantHop), "host", "content-length", "expect")
	var gotDrop []string
	for name, on := range requestDrop {
		if on {
			gotDrop = append(gotDrop, name)
		}
	}
	slices.Sort(gotDrop)
	slices.Sort(wantDrop)
	if !slices.Equal(gotDrop, wantDrop) {
		t.Errorf("requestDrop = %v, want %v", gotDrop, wantDrop)
	}
}

func TestHeadUnderscoreNamesThatReadAsDroppedHeadersAreDropped(t *testing.T) {
	for _, tc := range []struct {
		name      string
		forwarded bool
	}{
		{"X_Sandbox_ID", false}, {"x-sandbox_id", false}, {"X_Sandbox_Anything", false},
		{"Proxy_Authorization", false}, {"Content_Length", false}, {"Transfer_Encoding", false},
		{"Keep_Alive", false}, {"Proxy_Connection", false}, {"proxy_authenticate", false},
		{"X_Custom", true}, {"Content_Type", true}, {"Authorization_x", true}, {"_", true},
	} {
		h, c := htSort(t, "GET", tc.name+": v")
		want := []htPair{}
		if tc.forwarded {
			want = []htPair{{tc.name, "v"}}
		}
		if got := htForwarded(h, c); !slices.Equal(got, want) {
			t.Errorf("%s: forwarded = %v, want %v", tc.name, got, want)
		}
		if len(htRouting(c)) != 0 || c.authorization != nil || c.authCount != 0 {
			t.Errorf("%s: routing %v, authorization %q", tc.name, htRouting(c), c.authorization)
		}
		if c.contentLength != nil || c.clCount != 0 || c.chunked || c.teCount != 0 {
			t.Errorf("%s: content length %q (%d), chunked %v", tc.name, c.contentLength, c.clCount, c.chunked)
		}
	}
}

func TestHeadForwardedHeadersKeepTheirOrderCaseAndRepeats(t *testing.T) {
	lines := []string{"User-Agent: sdk", "x-lower: a", "X-Dup: 1", "Accept: */*", "X-Dup: 2", "Cookie: a=1; b=2"}
	h, c := htSort(t, "GET", lines...)
	if got := htForwarded(h, c); !slices.Equal(got, htPairs(lines...)) {
		t.Errorf("forwarded = %v", got)
	}
}

func TestHeadHeadersNominatedByConnectionAreDropped(t *testing.T) {
	all := []string{"X-Keep", "X-Drop", "X-Other", "x-drop"}
	for _, tc := range []struct {
		connection []string
		kept       []string
	}{
		{[]string{"keep-alive, X-Drop"}, []string{"X-Keep", "X-Other"}}, // every header of the name, in any case
		{[]string{"close"}, all},
		{[]string{"Upgrade"}, all},
		{[]string{",,  , "}, all},
		{[]string{" X-DROP ,x-other"}, []string{"X-Keep"}},
		{[]string{"x-drop", "X-Other"}, []string{"X-Keep"}},  // the tokens of several Connection headers add up
		{[]string{"X-Sandbox-ID, Authorization, Host"}, all}, // never forwarded anyway
		{[]string{"X-Keep, X-Drop, X-Other"}, []string{}},
	} {
		var lines []string
		for _, v := range tc.connection {
			lines = append(lines, "Connection: "+v)
		}
		lines = append(lines, "X-Keep: 1", "X-Drop: 2", "X-Other: 3", "x-drop: 4")
		h, c := htSort(t, "GET", lines...)
		if got := htForwardedNames(h, c); !slices.Equal(got, tc.kept) {
			t.Errorf("Connection %q: forwarded %v, want %v", tc.connection, got, tc.kept)
		}
	}
}

// -- classify: authorization, framing, upgrade, expect ----------------------------------------------

func TestHeadAuthorizationIsTheSingleValueOrNil(t *testing.T) {
	for _, tc := range []struct {
		lines         []string
		authorization *string // nil: none
	}{
		{nil, nil},
		{[]string{"Authorization: Bearer t"}, new("Bearer t")},
		{[]string{"authorization: Bearer t"}, new("Bearer t")},
		{[]string{"Authorization: Bearer t", "AUTHORIZATION: Bearer t"}, nil}, // two are one too many
		{[]string{"Authorization: Bearer a", "Authorization: Bearer b", "Authorization: Bearer c"}, nil},
		{[]string{"Proxy-Authorization: Bearer t"}, nil},
		{[]string{"Proxy_Authorization: Bearer t", "Authorization: Bearer t"}, new("Bearer t")},
		{[]string{"Authorization: "}, new("")},
	} {
		h, c := htSort(t, "GET", tc.lines...)
		switch {
		case tc.authorization == nil && c.authorization != nil:
			t.Errorf("%q: authorization = %q, want none", tc.lines, c.authorization)
		case tc.authorization != nil && (c.authorization == nil || string(c.authorization) != *tc.authorization):
			t.Errorf("%q: authorization = %q (nil %v), want %q", tc.lines, c.authorization, c.authorization == nil,
				*tc.authorization)
		}
		if got := htForwarded(h, c); len(got) != 0 {
			t.Errorf("%q: forwarded = %v", tc.lines, got)
		}
	}
}

func TestHeadBodyFraming(t *testing.T) {
	for _, tc := range []struct {
		lines         []string
		contentLength *string // nil: none
		clCount       int
		chunked       bool
		transferEnc   string
	}{
		{nil, nil, 0, false, ""},
		{[]string{"Content-Length: 5"}, new("5"), 1, false, ""},
		// Python keeps " 5 " raw; the Go reader trims the optional whitespace around every value.
		{[]string{"content-length:  5 "}, new("5"), 1, false, ""},
		{[]string{"Content-Length: 5", "Content-Length: 7"}, new("7"), 2, false, ""}, // framingError refuses it; the last wins
		{[]string{"Transfer-Encoding: chunked"}, nil, 0, true, "chunked"},
		{[]string{"transfer-encoding: gzip, chunked"}, nil, 0, true, "gzip, chunked"},
		{[]string{"Transfer-Encoding: gzip"}, nil, 0, true, "gzip"},
		{[]string{"Content-Length: 3", "Transfer-Encoding: chunked"}, new("3"), 1, true, "chunked"},
		{[]string{"Content_Length: 3", "Transfer_Encoding: chunked"}, nil, 0, false, ""},
		{[]string{"Transfer-Encoding: gzip", "Transfer-Encoding: chunked"}, nil, 0, true, "gzip,chunked"},
	} {
		h, c := htSort(t, "POST", tc.lines...)
		if tc.contentLength == nil {
			if c.contentLength != nil {
				t.Errorf("%q: content length %q, want none", tc.lines, c.contentLength)
			}
		} else if string(c.contentLength) != *tc.contentLength {
			t.Errorf("%q: content length %q, want %q", tc.lines, c.contentLength, *tc.contentLength)
		}
		if c.clCount != tc.clCount || c.chunked != tc.chunked || string(c.transferEnc) != tc.transferEnc {
			t.Errorf("%q: clCount %d chunked %v transferEnc %q, want %d %v %q", tc.lines, c.clCount, c.chunked,
				c.transferEnc, tc.clCount, tc.chunked, tc.transferEnc)
		}
		if got := htForwarded(h, c); len(got) != 0 {
			t.Errorf("%q: forwarded = %v", tc.lines, got)
		}
	}
}

func TestHeadWebsocketUpgradeNeedsGetUpgradeWebsocketAndTheConnectionToken(t *testing.T) {
	for _, tc := range []struct {
		method    string
		lines     []string
		websocket bool
		upgrade   bool // llhttp's "the request switches protocols" (Connection: upgrade + Upgrade)
	}{
		{"GET", []string{"Connection: Upgrade", "Upgrade: websocket"}, true, true},
		{"GET", []string{"connection: keep-alive, UPGRADE", "upgrade: WebSocket "}, true, true},
		{"GET", []string{"Upgrade: websocket", "Connection: upgrade"}, true, true},
		{"GET", []string{"Connection: x-a", "Connection: upgrade", "Upgrade: websocket"}, true, true},
		{"POST", []string{"Connection: Upgrade", "Upgrade: websocket"}, false, true},
		{"HEAD", []string{"Connection: Upgrade", "Upgrade: websocket"}, false, true},
		{"GET", []string{"Upgrade: websocket"}, false, false},
		{"GET", []string{"Connection: upgrade"}, false, false},
		{"GET", []string{"Connection: upgrade", "Upgrade: h2c"}, false, true},
		{"GET", []string{"Connection: upgrade", "Upgrade: websocket", "Upgrade: h2c"}, false, true}, // the last one counts
		{"GET", []string{"Connection: upgraded", "Upgrade: websocket"}, false, false},
		{"GET", []string{"Connection: Upgrade", "Upgrade: websocket, h2c"}, false, true},
		{"GET", []string{"Connection: Upgrade", "Upgrade_: websocket"}, false, false},
	} {
		h, c := htSort(t, tc.method, tc.lines...)
		if c.websocket != tc.websocket || c.upgrade != tc.upgrade {
			t.Errorf("%s %q: websocket %v upgrade %v, want %v %v", tc.method, tc.lines, c.websocket, c.upgrade,
				tc.websocket, tc.upgrade)
		}
		for _, name := range htForwardedNames(h, c) {
			if l := strings.ToLower(name); l == "connection" || l == "upgrade" {
				t.Errorf("%s %q: %s forwarded", tc.method, tc.lines, name)
			}
		}
	}
}

// -- authorize -------------------------------------------------------------------------------------

func TestHeadAuthorize(t *testing.T) {
	token := []byte("tok-1234567890")
	for _, tc := range []struct {
		authorization *string
		answer        *Answer
	}{
		{new("Bearer tok-1234567890"), nil},
		{new("bearer tok-1234567890"), nil},
		{new("BEARER tok-1234567890"), nil},
		{new("BeArEr tok-1234567890"), nil},
		{new("Bearer  tok-1234567890  "), nil}, // surrounding whitespace is ignored
		{new("Bearer tok-1234567890\t"), nil},
		{nil, answerMissingAuth},
		{new(""), answerMissingAuth},
		{new("Bearer"), answerMissingAuth},
		{new("Bearer "), answerMissingAuth}, // a scheme and nothing after it
		{new("Bearer\ttok-1234567890"), answerMissingAuth},
		{new("Basic tok-1234567890"), answerMissingAuth},
		{new("Token tok-1234567890"), answerMissingAuth},
		{new("tok-1234567890"), answerMissingAuth},
		{new("Bearer  "), answerInvalidToken}, // blank token
		{new("Bearer x"), answerInvalidToken},
		{new("Bearer tok-123456789"), answerInvalidToken},   // short
		{new("Bearer tok-12345678901"), answerInvalidToken}, // long
		{new("Bearer TOK-1234567890"), answerInvalidToken},  // the token is case-sensitive
		{new("Bearer tok-1234567890 x"), answerInvalidToken},
	} {
		var authorization []byte
		label := "<nil>"
		if tc.authorization != nil {
			authorization = []byte(*tc.authorization)
			label = *tc.authorization
		}
		if got := authorize(authorization, token); got != tc.answer {
			t.Errorf("authorize(%q) = %+v, want %+v", label, got, tc.answer)
		}
	}
}

func TestHeadAuthAnswersAre401WithABearerChallenge(t *testing.T) {
	if answerMissingAuth.Status != 401 || answerMissingAuth.Detail != "Missing or invalid Authorization header." {
		t.Errorf("answerMissingAuth = %+v", answerMissingAuth)
	}
	if answerInvalidToken.Status != 401 || answerInvalidToken.Detail != "Invalid token." {
		t.Errorf("answerInvalidToken = %+v", answerInvalidToken)
	}
	for _, a := range []*Answer{answerMissingAuth, answerInvalidToken} {
		if !slices.Equal(a.Headers, [][2]string{{"WWW-Authenticate", "Bearer"}}) {
			t.Errorf("%s: headers %v", a.Detail, a.Headers)
		}
		if a.Reason != "auth" || a.Kind != "" || a.KeepOpen {
			t.Errorf("%s: reason %q kind %q keepOpen %v", a.Detail, a.Reason, a.Kind, a.KeepOpen)
		}
	}
}

// -- refusal ---------------------------------------------------------------------------------------

// htInvalidCL stands for the Python INVALID_CONTENT_LENGTH (compared by status and reason: the Go
// answer is built per call, and its detail reads "Malformed HTTP request: invalid Content-Length.").
var htInvalidCL = &Answer{Status: 400, Reason: "malformed"}

func TestHeadRefusal(t *testing.T) {
	type row struct {
		method         string
		upgrade        bool // Python's parser_upgrade
		websocket      bool
		contentLength  *string
		answer         *Answer
		explainsAnswer string
	}
	var rows []row
	methods := make([]string, 0, len(forwardedMethods))
	for m := range forwardedMethods {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	for _, m := range methods {
		rows = append(rows, row{m, false, false, nil, nil, ""})
	}
	rows = append(rows,
		row{"PROPFIND", false, false, nil, answerMethod, ""},
		row{"TRACE", false, false, nil, answerMethod, ""},
		row{"CONNECT", true, false, nil, answerMethod, ""},
		row{"get", false, false, nil, answerMethod, ""},
		row{"PROPFIND", true, false, new("x"), answerMethod, "the method is judged first"},
		row{"GET", true, false, nil, answerUpgrade, ""},
		row{"POST", true, false, nil, answerUpgrade, ""},
		row{"GET", true, false, new("99999"), answerUpgrade, "before the body size"},
		row{"GET", true, true, nil, nil, ""},
		row{"GET", false, true, nil, nil, ""},
		row{"POST", false, false, new("0"), nil, ""},
		row{"POST", false, false, new("1000"), nil, ""},
		// Python: " 12 " (int() strips); the Go reader has already trimmed the value.
		row{"POST", false, false, new("12"), nil, ""},
		row{"POST", false, false, new("1001"), answerBodyTooLarge, ""},
		// Python: 413. Go: ParseInt overflows, 400 — unreachable either way, framingError refuses
		// more than 18 digits before refusal runs.
		row{"POST", false, false, new(strings.Repeat("9", 30)), htInvalidCL, "framingError refuses it first"},
		row{"POST", false, false, new("-1"), htInvalidCL, ""},
		row{"POST", false, false, new("abc"), htInvalidCL, ""},
		row{"POST", false, false, new(""), htInvalidCL, ""},
		row{"POST", false, false, new("1.5"), htInvalidCL, ""},
		row{"POST", false, false, new("0x10"), htInvalidCL, ""},
		// Python's int() accepts both; framingError refuses both before refusal runs (see
		// TestHeadFramingError), so what refusal itself says is not observable.
		row{"POST", false, false, new("+5"), nil, "ParseInt accepts a sign"},
		row{"POST", false, false, new("1_000"), htInvalidCL, "ParseInt base 10 refuses underscores"},
	)
	for _, tc := range rows {
		c := &classified{duplicate: -1, upgrade: tc.upgrade, websocket: tc.websocket}
		label := "<none>"
		if tc.contentLength != nil {
			c.contentLength, c.clCount = []byte(*tc.contentLength), 1
			label = *tc.contentLength
		}
		got := refusal([]byte(tc.method), c, 1000)
		ok := got == tc.answer
		if tc.answer == htInvalidCL {
			ok = got != nil && got.Status == 400 && got.Reason == "malformed" && got.Detail ==
				"Malformed HTTP request: invalid Content-Length."
		}
		if !ok {
			t.Errorf("refusal(%s, upgrade=%v, websocket=%v, CL=%q) = %+v, want %+v %s", tc.method, tc.upgrade,
				tc.websocket, label, got, tc.answer, tc.explainsAnswer)
		}
	}
}

func TestHeadRefusalAnswers(t *testing.T) {
	for _, tc := range []struct {
		answer         *Answer
		status         int
		detail, reason string
	}{
		{answerMethod, 405, "Method not allowed through the router.", "method"},
		{answerUpgrade, 400, "Only WebSocket upgrades are supported.", "routing"},
		{malformed("invalid Content-Length").answer, 400, "Malformed HTTP request: invalid Content-Length.", "malformed"},
		{answerBodyTooLarge, 413, "Request body too large.", "request_too_large"},
		{answerNotOriginForm, 400, "Request target must be an origin-form path.", "routing"},
		{errHeadersTooLarge.answer, 431, "Request headers too large.", "headers_too_large"},
	} {
		a := tc.answer
		if a.Status != tc.status || a.Detail != tc.detail || a.Reason != tc.reason || a.Kind != "" || a.KeepOpen {
			t.Errorf("%+v, want %d %q %q (closing)", a, tc.status, tc.detail, tc.reason)
		}
	}
}

// -- appendUpstreamHead ----------------------------------------------------------------------------

func TestHeadAppendUpstreamHead(t *testing.T) {
	for _, tc := range []struct{ raw, head string }{
		{htHead("GET / HTTP/1.1"), "GET / HTTP/1.1\r\nHost: 10.0.0.1:8888\r\n\r\n"},
		{htHead("POST /a%2Fb?q=1&r HTTP/1.1", "X-A: 1", "x-b: 2", "Content-Length:  5 "),
			"POST /a%2Fb?q=1&r HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nX-A: 1\r\nx-b: 2\r\nContent-Length: 5\r\n\r\n"},
		// chunked wins: the body is re-chunked
		{htHead("PUT /u HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked"),
			"PUT /u HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{htHead("GET /ws HTTP/1.1", "Sec-WebSocket-Key: k", "Connection: Upgrade", "Upgrade: websocket"),
			"GET /ws HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{htHead("DELETE /d HTTP/1.1", "X-Dup: 1", "X-Dup: 2", "Content-Length: 0"),
			"DELETE /d HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nX-Dup: 1\r\nX-Dup: 2\r\nContent-Length: 0\r\n\r\n"},
		// Go only: an HTTP/1.0 client's request goes upstream as HTTP/1.1, its Connection dropped.
		{htHead("GET /old HTTP/1.0", "Connection: keep-alive", "X-A: 1"),
			"GET /old HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nX-A: 1\r\n\r\n"},
	} {
		h := htMustRead(t, tc.raw)
		c := &classified{}
		classify(h, c, nil)
		if got := string(appendUpstreamHead(nil, h, c, "10.0.0.1:8888")); got != tc.head {
			t.Errorf("appendUpstreamHead(%q) =\n%q\nwant\n%q", tc.raw, got, tc.head)
		}
	}
	// It appends to what dst already holds.
	h := htMustRead(t, htHead("GET / HTTP/1.1"))
	c := &classified{}
	classify(h, c, nil)
	if got := string(appendUpstreamHead([]byte("prefix"), h, c, "a:1")); got != "prefixGET / HTTP/1.1\r\nHost: a:1\r\n\r\n" {
		t.Errorf("appending to dst: %q", got)
	}
}

func TestHeadAClassifiedRequestBecomesTheUpstreamHead(t *testing.T) {
	h, c := htSort(t, "POST", "Host: router", "Authorization: Bearer t", "X-Sandbox-ID: sbx", "X-Sandbox-Port: 9000",
		"User-Agent: sdk", "Connection: keep-alive, X-Drop", "X-Drop: 1", "Keep-Alive: 5",
		"Content-Length: 3", "Expect: 100-continue", "Accept: */*")
	h.target = []byte("/run")
	if !c.expect100 {
		t.Error("expect100 = false")
	}
	want := "POST /run HTTP/1.1\r\nHost: [fd00::1]:9000\r\nUser-Agent: sdk\r\nAccept: */*\r\n" +
		"Content-Length: 3\r\n\r\n"
	if got := string(appendUpstreamHead(nil, h, c, "[fd00::1]:9000")); got != want {
		t.Errorf("upstream head =\n%q\nwant\n%q", got, want)
	}
}

// -- yes/no facts: Expect: 100-continue (classify) and an announced body (declaresBody) --------------

func TestHeadYesNoFactsOfTheHead(t *testing.T) {
	expectsContinue := func(c *classified) bool { return c.expect100 }
	for _, tc := range []struct {
		name  string
		fact  func(*classified) bool
		lines []string
		yes   bool
	}{
		{"expect", expectsContinue, nil, false},
		{"expect", expectsContinue, []string{"Expect: 100-continue"}, true},
		{"expect", expectsContinue, []string{"expect:  100-Continue "}, true},
		{"expect", expectsContinue, []string{"Expect: 100-continue, x"}, false},
		{"expect", expectsContinue, []string{"Expect: something"}, false},
		{"expect", expectsContinue, []string{"Expect: 100-continue", "Expect: other"}, false}, // the last one counts
		{"declaresBody", declaresBody, nil, false},
		{"declaresBody", declaresBody, []string{"Content-Length: 0"}, false},
		{"declaresBody", declaresBody, []string{"content-length:  0 "}, false},
		{"declaresBody", declaresBody, []string{"Content-Length: 1"}, true},
		{"declaresBody", declaresBody, []string{"Content-Length: 2147483648"}, true},
		{"declaresBody", declaresBody, []string{"Content-Length: 00"}, true},
		{"declaresBody", declaresBody, []string{"Transfer-Encoding: chunked"}, true},
		{"declaresBody", declaresBody, []string{"transfer-encoding: identity"}, true},
		{"declaresBody", declaresBody, []string{"Content-Length: 0", "Transfer-Encoding: chunked"}, true},
		{"declaresBody", declaresBody, []string{"Content_Length: 5", "Transfer_Encoding: chunked", "X-Length: 5"}, false},
	} {
		_, c := htSort(t, "POST", tc.lines...)
		if got := tc.fact(c); got != tc.yes {
			t.Errorf("%s(%q) = %v, want %v", tc.name, tc.lines, got, tc.yes)
		}
	}
}

// -- classify: Go only ------------------------------------------------------------------------------

func TestHeadKeepAliveFollowsTheVersionAndConnection(t *testing.T) {
	for _, tc := range []struct {
		version string
		lines   []string
		keep    bool
	}{
		{"HTTP/1.1", nil, true},
		{"HTTP/1.1", []string{"Connection: close"}, false},
		{"HTTP/1.1", []string{"Connection: Keep-Alive, CLOSE"}, false},
		{"HTTP/1.1", []string{"Connection: keep-alive"}, true},
		{"HTTP/1.1", []string{"Connection: x-a", "Connection: close"}, false},
		{"HTTP/1.1", []string{"Connection_: close"}, true}, // not a Connection header
		{"HTTP/1.0", nil, false},
		{"HTTP/1.0", []string{"Connection: keep-alive"}, true},
		{"HTTP/1.0", []string{"connection: Keep-Alive"}, true},
		{"HTTP/1.0", []string{"Connection: keep-alive, close"}, false},
		{"HTTP/1.0", []string{"Keep-Alive: 5"}, false},
	} {
		h := htMustRead(t, htHead("GET / "+tc.version, tc.lines...))
		c := &classified{}
		classify(h, c, nil)
		if c.keepAlive != tc.keep {
			t.Errorf("%s %q: keepAlive = %v, want %v", tc.version, tc.lines, c.keepAlive, tc.keep)
		}
	}
}

func TestHeadClassifyStartsAfreshForEachRequest(t *testing.T) {
	c := &classified{}
	scratch := classify(htMustRead(t, htHead("POST / HTTP/1.1", "X-Sandbox-ID: a", "X-Sandbox-ID: b",
		"Authorization: Bearer t", "Content-Length: 5", "Transfer-Encoding: chunked", "Expect: 100-continue",
		"Connection: upgrade", "Upgrade: websocket", "X-A: 1")), c, nil)
	h := htMustRead(t, htHead("GET / HTTP/1.0", "X-B: 2"))
	classify(h, c, scratch)
	if len(htRouting(c)) != 0 || c.duplicate != -1 || c.authorization != nil || c.authCount != 0 ||
		c.contentLength != nil || c.clCount != 0 || c.teCount != 0 || len(c.transferEnc) != 0 || c.chunked ||
		c.websocket || c.upgrade || c.expect100 || c.keepAlive {
		t.Errorf("state of the previous request leaked: %+v", c)
	}
	if got := htForwarded(h, c); !slices.Equal(got, []htPair{{"X-B", "2"}}) {
		t.Errorf("forwarded = %v", got)
	}
}

// -- framingError ----------------------------------------------------------------------------------

func TestHeadFramingError(t *testing.T) {
	for _, tc := range []struct {
		lines   []string
		refused bool
	}{
		{nil, false},
		{[]string{"Content-Length: 0"}, false},
		{[]string{"Content-Length: 5"}, false},
		{[]string{"Content-Length: " + strings.Repeat("9", 18)}, false},
		{[]string{"Transfer-Encoding: chunked"}, false},
		{[]string{"Transfer-Encoding: Chunked"}, false},
		{[]string{"Transfer-Encoding: gzip, chunked"}, false},
		{[]string{"Transfer-Encoding: gzip", "Transfer-Encoding: chunked"}, false},
		// Content-Length together with Transfer-Encoding (either order)
		{[]string{"Content-Length: 4", "Transfer-Encoding: chunked"}, true},
		{[]string{"Transfer-Encoding: chunked", "Content-Length: 0"}, true},
		// repeated lengths, conflicting or not
		{[]string{"Content-Length: 4", "Content-Length: 5"}, true},
		{[]string{"Content-Length: 5", "Content-Length: 5"}, true},
		{[]string{"Content-Length: 5", "content-length: 5"}, true},
		// Transfer-Encoding not ending in chunked, or chunked twice
		{[]string{"Transfer-Encoding: chunked, identity"}, true},
		{[]string{"Transfer-Encoding: gzip"}, true},
		{[]string{"Transfer-Encoding: identity"}, true},
		{[]string{"Transfer-Encoding: chunked, chunked"}, true},
		{[]string{"Transfer-Encoding: chunked", "Transfer-Encoding: chunked"}, true},
		{[]string{"Transfer-Encoding: chunked", "Transfer-Encoding: gzip"}, true},
		{[]string{"Transfer-Encoding: chunked,"}, true},
		{[]string{"Transfer-Encoding: "}, true},
		{[]string{"Transfer-Encoding: xchunked"}, true},
		// a length that is not a plain number
		{[]string{"Content-Length: abc"}, true},
		{[]string{"Content-Length: -1"}, true},
		{[]string{"Content-Length: +5"}, true},
		{[]string{"Content-Length: 1_000"}, true},
		{[]string{"Content-Length: 0x10"}, true},
		{[]string{"Content-Length: 1.5"}, true},
		{[]string{"Content-Length: 5, 5"}, true},
		{[]string{"Content-Length: 5 5"}, true},
		{[]string{"Content-Length: "}, true},
		{[]string{"Content-Length: " + strings.Repeat("9", 19)}, true},
		{[]string{"Content-Length: " + strings.Repeat("9", 30)}, true},
	} {
		_, c := htSort(t, "POST", tc.lines...)
		err := framingError(c)
		if (err != nil) != tc.refused {
			t.Errorf("framingError(%q) = %v, want refused=%v", tc.lines, err, tc.refused)
			continue
		}
		if err != nil && (err.answer.Status != 400 || err.answer.Reason != "malformed" ||
			!strings.HasPrefix(err.answer.Detail, "Malformed HTTP request: ")) {
			t.Errorf("framingError(%q) answer %+v", tc.lines, err.answer)
		}
	}
}

// -- readRequestHead -------------------------------------------------------------------------------

func TestHeadReaderParsesAValidHead(t *testing.T) {
	raw := "POST /a/b?c=d HTTP/1.1\r\nHost: r\r\nX-Empty:\r\nX-Tab:\tv\t\r\nX-Spaces:   a  b   \r\n" +
		"X-Obs-Text: caf\xe9\r\nx-lower:v\r\n\r\nBODY"
	br := bufio.NewReader(strings.NewReader(raw))
	h := &requestHead{}
	if err := readRequestHead(br, h, htMaxBytes, htMaxCount); err != nil {
		t.Fatal(err)
	}
	if string(h.method) != "POST" || string(h.target) != "/a/b?c=d" || h.http10 {
		t.Errorf("method %q target %q http10 %v", h.method, h.target, h.http10)
	}
	var got []htPair
	for _, f := range h.fields {
		got = append(got, htPair{string(h.name(f)), string(h.value(f))})
	}
	want := []htPair{{"Host", "r"}, {"X-Empty", ""}, {"X-Tab", "v"}, {"X-Spaces", "a  b"}, {"X-Obs-Text", "caf\xe9"},
		{"x-lower", "v"}}
	if !slices.Equal(got, want) {
		t.Errorf("fields = %q, want %q", got, want)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "BODY" {
		t.Errorf("left after the head: %q", rest)
	}
	for _, tc := range []struct {
		line   string
		method string
		http10 bool
	}{
		{"GET / HTTP/1.0", "GET", true},
		{"M-SEARCH * HTTP/1.1", "M-SEARCH", false},
		{"OPTIONS * HTTP/1.1", "OPTIONS", false},
	} {
		h := htMustRead(t, htHead(tc.line))
		if string(h.method) != tc.method || h.http10 != tc.http10 || len(h.fields) != 0 {
			t.Errorf("%q: method %q http10 %v fields %d", tc.line, h.method, h.http10, len(h.fields))
		}
	}
}

// htWantMalformed checks that err is the 400 malformed answer.
func htWantMalformed(t *testing.T, label string, err error) {
	t.Helper()
	var he *headError
	if !errors.As(err, &he) {
		t.Errorf("%s: err = %v (%T), want a 400 malformed *headError", label, err, err)
		return
	}
	if he.answer.Status != 400 || he.answer.Reason != "malformed" ||
		!strings.HasPrefix(he.answer.Detail, "Malformed HTTP request: ") {
		t.Errorf("%s: answer %+v, want 400 malformed", label, he.answer)
	}
}

func TestHeadReaderRefusesHeadsTheSandboxCouldReadDifferently(t *testing.T) {
	const ok = "GET /probe HTTP/1.1\r\nHost: r\r\n"
	for _, tc := range []struct{ name, raw string }{
		// bare LF and CR
		{"bare-lf-request-line", "GET /probe HTTP/1.1\nHost: r\r\n\r\n"},
		{"bare-lf-header-line", ok + "X-A: a\nX-B: b\r\n\r\n"},
		{"bare-lf-end-of-head", ok + "\n"},
		{"bare-lf-only-head", "GET / HTTP/1.1\n\n"},
		{"cr-injection", ok + "X-A: a\rX-Sandbox-ID: evil\r\n\r\n"},
		{"bare-cr-end-of-value", ok + "X-A: a\r\r\n\r\n"},
		{"bare-cr-in-name", ok + "X\rA: a\r\n\r\n"},
		{"bare-cr-in-target", "GET /a\rb HTTP/1.1\r\n\r\n"},
		{"bare-cr-end-of-head", ok + "\r\r\n"},
		// obsolete line folding
		{"obs-fold-space", ok + "X-A: a\r\n  folded\r\n\r\n"},
		{"obs-fold-tab", ok + "X-A: a\r\n\tfolded\r\n\r\n"},
		{"obs-fold-first-line", "GET / HTTP/1.1\r\n folded: x\r\n\r\n"},
		// names
		{"space-in-header-name", ok + "X Bad: 1\r\n\r\n"},
		{"space-before-colon", ok + "Content-Length : 5\r\n\r\n"},
		{"tab-before-colon", ok + "Transfer-Encoding\t: chunked\r\n\r\n"},
		{"empty-name", ok + ": v\r\n\r\n"},
		{"no-colon", ok + "Xyz\r\n\r\n"},
		{"quote-in-name", ok + "X-\"A\": 1\r\n\r\n"},
		{"slash-in-name", ok + "X/A: 1\r\n\r\n"},
		{"non-ascii-name", ok + "X-\xe9: 1\r\n\r\n"},
		// control characters in a value
		{"nul-in-value", ok + "X-A: a\x00b\r\n\r\n"},
		{"soh-in-value", ok + "X-A: \x01\r\n\r\n"},
		{"del-in-value", ok + "X-A: a\x7f\r\n\r\n"},
		{"vt-in-value", ok + "X-A: a\vb\r\n\r\n"},
		// request lines
		{"http2", "GET / HTTP/2.0\r\n\r\n"},
		{"http12", "GET / HTTP/1.2\r\n\r\n"},
		{"http09", "GET / HTTP/0.9\r\n\r\n"},
		{"lower-case-version", "GET / http/1.1\r\n\r\n"},
		{"no-version", "GET /\r\n\r\n"},
		{"only-a-method", "GET\r\n\r\n"},
		{"extra-field", "GET / HTTP/1.1 x\r\n\r\n"},
		{"trailing-space", "GET / HTTP/1.1 \r\n\r\n"},
		{"double-space", "GET  / HTTP/1.1\r\n\r\n"},
		{"leading-space", " GET / HTTP/1.1\r\n\r\n"},
		{"tab-separator", "GET\t/ HTTP/1.1\r\n\r\n"},
		{"lower-case-method", "get / HTTP/1.1\r\n\r\n"},
		{"method-with-digit", "G3T / HTTP/1.1\r\n\r\n"},
		{"non-ascii-target", "GET /caf\xe9 HTTP/1.1\r\n\r\n"},
		{"del-in-target", "GET /a\x7f HTTP/1.1\r\n\r\n"},
		{"tls-client-hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 64) + "\r\n\r\n"},
	} {
		_, err := htRead(tc.raw)
		htWantMalformed(t, tc.name, err)
	}
}

// The hostile table's framing rows: the reader accepts the head, framingError refuses it.
func TestHeadSmugglingFramingIsRefusedAfterTheRead(t *testing.T) {
	base := []string{"Host: r", "Authorization: Bearer t", "X-Sandbox-ID: sbx"}
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"cl-and-te", []string{"Content-Length: 4", "Transfer-Encoding: chunked"}},
		{"conflicting-cl", []string{"Content-Length: 4", "Content-Length: 5"}},
		{"duplicate-cl", []string{"Content-Length: 4", "Content-Length: 4"}},
		{"te-not-chunked-last", []string{"Transfer-Encoding: chunked, identity"}},
		{"non-numeric-cl", []string{"Content-Length: 4x"}},
		{"negative-content-length", []string{"Content-Length: -1"}},
	} {
		h, err := htRead(htHead("POST /probe HTTP/1.1", append(slices.Clone(base), tc.extra...)...))
		if err != nil {
			t.Errorf("%s: read: %v", tc.name, err)
			continue
		}
		c := &classified{}
		classify(h, c, nil)
		if err := framingError(c); err == nil {
			t.Errorf("%s: not refused", tc.name)
		} else {
			htWantMalformed(t, tc.name, err)
		}
	}
}

func TestHeadReaderLimitsTheHead(t *testing.T) {
	isTooLarge := func(err error) bool {
		var he *headError
		return errors.As(err, &he) && he == errHeadersTooLarge && he.answer.Status == 431
	}
	lines := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "X-H: 1"
		}
		return out
	}
	// too many headers
	if _, err := htRead(htHead("GET / HTTP/1.1", lines(htMaxCount)...)); err != nil {
		t.Errorf("%d headers: %v", htMaxCount, err)
	}
	if _, err := htRead(htHead("GET / HTTP/1.1", lines(htMaxCount+1)...)); !isTooLarge(err) {
		t.Errorf("%d headers: %v, want errHeadersTooLarge", htMaxCount+1, err)
	}
	if _, err := htRead(htHead("GET / HTTP/1.1", lines(200)...)); !isTooLarge(err) {
		t.Errorf("200 headers: %v, want errHeadersTooLarge", err)
	}
	// too many bytes: one big header, a big request line, many medium headers
	if _, err := htRead(htHead("GET / HTTP/1.1", "X-Big: "+strings.Repeat("a", 70000))); !isTooLarge(err) {
		t.Errorf("70000-byte header: %v, want errHeadersTooLarge", err)
	}
	if _, err := htRead(htHead("GET /" + strings.Repeat("a", 70000) + " HTTP/1.1")); !isTooLarge(err) {
		t.Errorf("70000-byte request line: %v, want errHeadersTooLarge", err)
	}
	medium := make([]string, 100)
	for i := range medium {
		medium[i] = "X-M: " + strings.Repeat("m", 1000)
	}
	if _, err := htRead(htHead("GET / HTTP/1.1", medium...)); !isTooLarge(err) {
		t.Errorf("100 × 1000-byte headers: %v, want errHeadersTooLarge", err)
	}
	// The byte limit covers the request line and the header lines with their CRLFs, not the
	// empty line that ends the head.
	const limit = 1024
	line := "GET / HTTP/1.1\r\n"
	fill := func(total int) string {
		value := strings.Repeat("v", total-len(line)-len("X-F: \r\n"))
		return line + "X-F: " + value + "\r\n\r\n"
	}
	h := &requestHead{}
	if err := readRequestHead(bufio.NewReader(strings.NewReader(fill(limit))), h, limit, htMaxCount); err != nil {
		t.Errorf("head of exactly the limit: %v", err)
	}
	if err := readRequestHead(bufio.NewReader(strings.NewReader(fill(limit+1))), h, limit, htMaxCount); !isTooLarge(err) {
		t.Errorf("head one byte over the limit: %v, want errHeadersTooLarge", err)
	}
	// An endless line without LF is cut off at the limit, whatever the buffer size.
	endless := io.MultiReader(strings.NewReader("GET /"), iotest.OneByteReader(strings.NewReader(strings.Repeat("a", 8192))))
	if err := readRequestHead(bufio.NewReaderSize(endless, 16), h, limit, htMaxCount); !isTooLarge(err) {
		t.Errorf("endless request line: %v, want errHeadersTooLarge", err)
	}
}

func TestHeadReaderParsesTargetsThatAreNotOriginForm(t *testing.T) {
	// Parsed (so the router answers answerNotOriginForm), but not a path.
	for _, tc := range []struct{ line, target string }{
		{"GET http://127.0.0.1:8080/probe HTTP/1.1", "http://127.0.0.1:8080/probe"},
		{"OPTIONS * HTTP/1.1", "*"},
		{"CONNECT 127.0.0.1:8080 HTTP/1.1", "127.0.0.1:8080"},
		{"GET probe HTTP/1.1", "probe"},
	} {
		h := htMustRead(t, htHead(tc.line, "Host: r"))
		if string(h.target) != tc.target || h.target[0] == '/' {
			t.Errorf("%q: target %q", tc.line, h.target)
		}
	}
	if h := htMustRead(t, htHead("GET /probe HTTP/1.1")); string(h.target) != "/probe" {
		t.Errorf("origin-form target %q", h.target)
	}
}

// A head read one byte at a time through the smallest bufio buffer: lines longer than the
// buffer, and a CRLF split across refills, read exactly as with one big read.
func TestHeadReaderJoinsLinesSplitAcrossBufferRefills(t *testing.T) {
	raw := "POST /a-rather-long-target?with=query&and=more HTTP/1.1\r\n" +
		"Host: router.example\r\n" +
		"X-Sandbox-ID: sbx-123456789\r\n" +
		"X-Long: " + strings.Repeat("0123456789", 50) + "\r\n" +
		"A: b\r\n" +
		"Content-Length: 4\r\n\r\nBODY"
	want := htMustRead(t, raw)
	pairs := func(h *requestHead) []htPair {
		var out []htPair
		for _, f := range h.fields {
			out = append(out, htPair{string(h.name(f)), string(h.value(f))})
		}
		return out
	}
	for size := 16; size <= 40; size++ {
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"one-byte": iotest.OneByteReader, "half": iotest.HalfReader, "data-err": iotest.DataErrReader,
		} {
			br := bufio.NewReaderSize(wrap(strings.NewReader(raw)), size)
			h := &requestHead{}
			if err := readRequestHead(br, h, htMaxBytes, htMaxCount); err != nil {
				t.Fatalf("size %d %s: %v", size, name, err)
			}
			if string(h.method) != string(want.method) || string(h.target) != string(want.target) ||
				!slices.Equal(pairs(h), pairs(want)) {
				t.Fatalf("size %d %s: %q %q %q", size, name, h.method, h.target, pairs(h))
			}
			if rest, _ := io.ReadAll(br); string(rest) != "BODY" {
				t.Fatalf("size %d %s: left %q", size, name, rest)
			}
		}
	}
	// Strictness does not depend on where the buffer splits the input.
	for _, bad := range []string{
		"GET / HTTP/1.1\r\nX-Abcdefghijklm: a\rb\r\n\r\n",
		"GET / HTTP/1.1\r\nX-Abcdefghijklmn: a\nX: b\r\n\r\n",
		"GET /abcdefghijklmno HTTP/1.1\n\r\n",
		"GET / HTTP/1.1\r\nX-Abcdefghijkl: a\r\n folded\r\n\r\n",
	} {
		for size := 16; size <= 24; size++ {
			h := &requestHead{}
			err := readRequestHead(bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(bad)), size), h,
				htMaxBytes, htMaxCount)
			htWantMalformed(t, strings.ReplaceAll(bad, "\r", "\\r"), err)
		}
	}
}

func TestHeadReaderReusesItsBuffersAcrossPipelinedRequests(t *testing.T) {
	raw := "GET /first HTTP/1.1\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n" +
		"POST /second HTTP/1.0\r\nX-D: 4\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	h := &requestHead{}
	if err := readRequestHead(br, h, htMaxBytes, htMaxCount); err != nil {
		t.Fatal(err)
	}
	if string(h.target) != "/first" || len(h.fields) != 3 || h.http10 {
		t.Fatalf("first: %q %d %v", h.target, len(h.fields), h.http10)
	}
	if err := readRequestHead(br, h, htMaxBytes, htMaxCount); err != nil {
		t.Fatal(err)
	}
	if string(h.method) != "POST" || string(h.target) != "/second" || !h.http10 || len(h.fields) != 1 ||
		string(h.name(h.fields[0])) != "X-D" || string(h.value(h.fields[0])) != "4" {
		t.Errorf("second: %q %q %v %d", h.method, h.target, h.http10, len(h.fields))
	}
	if err := readRequestHead(br, h, htMaxBytes, htMaxCount); err != errClosed {
		t.Errorf("after the last request: %v, want errClosed", err)
	}
}

// htTimeout is a read deadline as a net.Conn reports it.
type htTimeout struct{}

func (htTimeout) Error() string   { return "i/o timeout" }
func (htTimeout) Timeout() bool   { return true }
func (htTimeout) Temporary() bool { return true }

func htIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHeadReaderReportsHowTheConnectionEnded(t *testing.T) {
	// Nothing at all: errClosed (the router answers nothing).
	if _, err := htRead(""); err != errClosed {
		t.Errorf("empty: %v, want errClosed", err)
	}
	// Ended inside the head: an error, never errClosed (which would read as "no request") and
	// never a parsed head. (Today io.EOF; head.go's "connection closed inside the head" branch
	// is never taken, readLine only returns errClosed for the first line.)
	for _, raw := range []string{"GET / HT", "GET / HTTP/1.1", "GET / HTTP/1.1\r", "GET / HTTP/1.1\r\nX-A: 1",
		"GET / HTTP/1.1\r\nX-A: 1\r\n", "GET / HTTP/1.1\r\nX-A: 1\r\n\r"} {
		_, err := htRead(raw)
		if err == nil || err == errClosed {
			t.Errorf("%q: %v, want an error other than errClosed", raw, err)
		}
	}
	// A timeout passes through, before the first byte too (the router answers 408).
	if err := readRequestHead(bufio.NewReader(iotest.ErrReader(htTimeout{})), &requestHead{}, htMaxBytes,
		htMaxCount); !htIsTimeout(err) {
		t.Errorf("timeout before the first byte: %v, want the timeout", err)
	}
	r := io.MultiReader(strings.NewReader("GET / HTTP/1.1\r\nX-A:"), iotest.ErrReader(htTimeout{}))
	if err := readRequestHead(bufio.NewReader(r), &requestHead{}, htMaxBytes, htMaxCount); !htIsTimeout(err) {
		t.Errorf("timeout mid-head: %v, want the timeout", err)
	}
	r = io.MultiReader(strings.NewReader("GET / HTT"), iotest.ErrReader(htTimeout{}))
	if err := readRequestHead(bufio.NewReader(r), &requestHead{}, htMaxBytes, htMaxCount); !htIsTimeout(err) {
		t.Errorf("timeout mid-request-line: %v, want the timeout", err)
	}
}

// A request line that can never be valid is refused at its first impossible byte, not when its
// LF arrives: the hostile table's "not-http" row sends a TLS ClientHello-like prefix (no LF) and
// waits for the answer, as llhttp (the Python router) refuses it at once.
func TestHeadReaderRefusesGarbageBeforeItsLineEnds(t *testing.T) {
	garbage := "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 64)
	stalled := io.MultiReader(strings.NewReader(garbage), iotest.ErrReader(htTimeout{}))
	err := readRequestHead(bufio.NewReader(stalled), &requestHead{}, htMaxBytes, htMaxCount)
	htWantMalformed(t, "TLS bytes, then the client waits", err)
	halfClosed := strings.NewReader(garbage)
	err = readRequestHead(bufio.NewReader(halfClosed), &requestHead{}, htMaxBytes, htMaxCount)
	htWantMalformed(t, "TLS bytes, then the client half-closes", err)
}

// Empty lines before the request line are skipped (RFC 9112 2.2: some clients send a stray CRLF
// after a request body), as llhttp does.
func TestHeadReaderIgnoresAnEmptyLineBeforeTheRequestLine(t *testing.T) {
	h, err := htRead("\r\nGET /after HTTP/1.1\r\nX-A: 1\r\n\r\n")
	if err != nil {
		t.Fatalf("leading CRLF: %v, want the request read", err)
	}
	if string(h.method) != "GET" || string(h.target) != "/after" || len(h.fields) != 1 {
		t.Errorf("leading CRLF: %q %q %d fields", h.method, h.target, len(h.fields))
	}
}

// lowerInto and trimOWS, which classify and response.go build on.
func TestHeadLowerIntoAndTrimOWS(t *testing.T) {
	if got := string(lowerInto([]byte("x"), []byte("Content-TYPE_1"))); got != "xcontent-type_1" {
		t.Errorf("lowerInto = %q", got)
	}
	for in, want := range map[string]string{"": "", " \t a b \t ": "a b", "a": "a", "\t": "", " a\r": "a\r"} {
		if got := string(trimOWS([]byte(in))); got != want {
			t.Errorf("trimOWS(%q) = %q, want %q", in, got, want)
		}
	}
	if !bytes.Equal(trimOWS([]byte("  ")), []byte{}) {
		t.Error("trimOWS of blanks is not empty")
	}
}
