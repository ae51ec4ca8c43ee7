package main

// The request head: reading it strictly off the client socket, and what each header means —
// which route, authenticate, frame or are forwarded, whether the request may go upstream at all,
// and the head the router sends the sandbox instead.
//
// Strict on purpose (the same rules as llhttp's strict mode in the Python router): a request the
// router and the sandbox could read differently is refused with 400 before anything is
// forwarded — bare LF or CR, obsolete line folding, control characters, a space before the
// colon, Content-Length with Transfer-Encoding, conflicting or repeated lengths, a
// Transfer-Encoding that does not end in chunked, anything but HTTP/1.0 and HTTP/1.1.

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"io"
	"strconv"
)

// headError is why a request head could not be read: the answer it gets.
type headError struct{ answer *Answer }

func (e *headError) Error() string { return e.answer.Detail }

var (
	errHeadersTooLarge = &headError{&Answer{Status: 431, Detail: "Request headers too large.", Reason: "headers_too_large"}}
	// errClosed: the client went away (or sent nothing) before a request began.
	errClosed = errors.New("client closed")
)

func malformed(what string) *headError {
	return &headError{&Answer{Status: 400, Detail: "Malformed HTTP request: " + what + ".", Reason: "malformed"}}
}

// maxMethodLength: longer than any method the router forwards, far shorter than a head.
const maxMethodLength = 24

// field is one header line, as offsets into requestHead.buf.
type field struct{ name0, name1, value0, value1 int }

// requestHead is one parsed request head. Its buffer is reused from request to request on a
// connection, so the hot path allocates nothing for the head itself.
type requestHead struct {
	buf     []byte
	fields  []field
	method  []byte
	target  []byte
	http10  bool
	created int64 // unix nanoseconds of the first byte (for the header timeout)
}

func (h *requestHead) name(f field) []byte  { return h.buf[f.name0:f.name1] }
func (h *requestHead) value(f field) []byte { return h.buf[f.value0:f.value1] }

// tchar: the token characters of RFC 9110 5.6.2 (header names, methods).
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// readLine reads one CRLF-terminated line into h.buf and returns its bounds (without CRLF);
// budget is what is left of the header byte limit.
func (h *requestHead) readLine(r *bufio.Reader, budget *int) (int, int, error) {
	start := len(h.buf)
	for {
		chunk, err := r.ReadSlice('\n')
		*budget -= len(chunk)
		if *budget < 0 {
			return 0, 0, errHeadersTooLarge
		}
		h.buf = append(h.buf, chunk...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(h.buf) == 0 && start == 0 {
				return 0, 0, errClosed
			}
			return 0, 0, err
		}
	}
	end := len(h.buf) - 1 // at the LF
	if end == start || h.buf[end-1] != '\r' {
		return 0, 0, malformed("line not terminated by CRLF")
	}
	return start, end - 1, nil
}

// readRequestHead reads and validates one request head. errClosed when the connection ended
// before its first byte; a *headError for a head that must be refused; another error when the
// connection failed mid-head (a timeout among them).
func readRequestHead(r *bufio.Reader, h *requestHead, maxBytes, maxCount int) error {
	h.buf = h.buf[:0]
	h.fields = h.fields[:0]
	budget := maxBytes + 2 // the empty line ending the head is not a header
	if err := skipEmptyLines(r); err != nil {
		return err
	}
	if err := checkMethod(r); err != nil {
		return err
	}
	start, end, err := h.readLine(r, &budget)
	if err != nil {
		return err
	}
	if err := h.parseRequestLine(start, end); err != nil {
		return err
	}
	for {
		start, end, err := h.readLine(r, &budget)
		if err != nil {
			if err == errClosed {
				return malformed("connection closed inside the head")
			}
			return err
		}
		if start == end {
			return nil
		}
		if len(h.fields) >= maxCount {
			return errHeadersTooLarge
		}
		f, err := h.parseField(start, end)
		if err != nil {
			return err
		}
		h.fields = append(h.fields, f)
	}
}

// skipEmptyLines skips the empty lines a client may send before a request line (RFC 9112 2.2:
// e.g. a stray CRLF after a body), as llhttp does; a bounded number of them.
func skipEmptyLines(r *bufio.Reader) error {
	for i := 0; i < 8; i++ {
		p, err := r.Peek(2)
		if err != nil || p[0] != '\r' || p[1] != '\n' {
			if err == io.EOF && len(p) == 0 {
				return errClosed
			}
			return nil // anything else is judged by the request-line reader
		}
		r.Discard(2)
	}
	return nil
}

// checkMethod refuses what is not HTTP as soon as its first bytes arrive (a TLS hello has no
// line end to wait for): the method is checked byte by byte before the line is read.
func checkMethod(r *bufio.Reader) error {
	for n := 1; ; n++ {
		p, err := r.Peek(n)
		if err != nil {
			if err == io.EOF && n == 1 {
				return errClosed
			}
			return nil // the line reader reports it
		}
		c := p[n-1]
		if c == ' ' && n > 1 {
			return nil
		}
		if !(c >= 'A' && c <= 'Z' || c == '-') || n > maxMethodLength {
			return malformed("invalid method")
		}
	}
}

func (h *requestHead) parseRequestLine(start, end int) error {
	line := h.buf[start:end]
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return malformed("invalid request line")
	}
	for _, c := range line[:sp] {
		if !(c >= 'A' && c <= 'Z' || c == '-') {
			return malformed("invalid method")
		}
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return malformed("invalid request line")
	}
	for _, c := range rest[:sp2] {
		if c <= ' ' || c >= 0x7f {
			return malformed("invalid character in the request target")
		}
	}
	switch string(rest[sp2+1:]) {
	case "HTTP/1.1":
		h.http10 = false
	case "HTTP/1.0":
		h.http10 = true
	default:
		return malformed("unsupported HTTP version")
	}
	h.method = line[:sp]
	h.target = rest[:sp2]
	return nil
}

func (h *requestHead) parseField(start, end int) (field, error) {
	line := h.buf[start:end]
	if line[0] == ' ' || line[0] == '\t' {
		return field{}, malformed("obsolete line folding")
	}
	colon := -1
	for i, c := range line {
		if c == ':' {
			colon = i
			break
		}
		if !tchar[c] {
			return field{}, malformed("invalid character in a header name")
		}
	}
	if colon <= 0 {
		return field{}, malformed("invalid header line")
	}
	v0, v1 := colon+1, len(line)
	for v0 < v1 && (line[v0] == ' ' || line[v0] == '\t') {
		v0++
	}
	for v1 > v0 && (line[v1-1] == ' ' || line[v1-1] == '\t') {
		v1--
	}
	for _, c := range line[v0:v1] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return field{}, malformed("invalid character in a header value")
		}
	}
	return field{start, start + colon, start + v0, start + v1}, nil
}

// Hop-by-hop headers (RFC 9110 7.6.1): never forwarded in either direction.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "proxy-authenticate": true,
	"proxy-authorization": true, "te": true, "trailer": true, "trailers": true, "transfer-encoding": true,
	"upgrade": true,
}

// requestDrop: request headers never forwarded as they are (hop-by-hop, the framing the router
// recomputes, Host, Expect).
var requestDrop = func() map[string]bool {
	m := map[string]bool{"host": true, "content-length": true, "expect": true}
	for k := range hopByHop {
		m[k] = true
	}
	return m
}()

// standardConnectionTokens name no end-to-end header to drop with them.
var standardConnectionTokens = map[string]bool{"close": true, "keep-alive": true, "upgrade": true, "": true}

var canonicalRouting = [routingHeaderCount]string{
	"X-Sandbox-ID", "X-Sandbox-Namespace", "X-Sandbox-Port", "X-Sandbox-Pod-IP", "X-Sandbox-Timeout",
}

// classified is what the router acts on in one request head, and what it forwards.
type classified struct {
	routing       RoutingHeaders
	duplicate     int // index of the first routing header sent twice, -1 when none
	authorization []byte
	authCount     int
	contentLength []byte
	clCount       int
	transferEnc   []byte // every Transfer-Encoding value, comma-joined
	teCount       int
	chunked       bool
	websocket     bool
	upgrade       bool // the request asks to switch protocols (Connection: upgrade + Upgrade)
	expect100     bool
	keepAlive     bool
	forwarded     []field
}

// lowerInto appends the lower-case form of b to dst.
func lowerInto(dst, b []byte) []byte {
	for _, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// classify sorts the request's headers. Names with "_" that read as a dropped header, as
// Authorization or as an X-Sandbox-* one once "_" is read as "-" (some servers do) are dropped,
// and so are unknown X-Sandbox-* headers.
func classify(h *requestHead, c *classified, scratch []byte) []byte {
	*c = classified{duplicate: -1, forwarded: c.forwarded[:0], keepAlive: !h.http10}
	var connTokens [][]byte
	var upgradeValue []byte
	var expect []byte
	closeToken, keepAliveToken := false, false
	for _, f := range h.fields {
		name := h.name(f)
		scratch = lowerInto(scratch[:0], name)
		lower := scratch
		if bytes.IndexByte(lower, '_') >= 0 {
			normalised := bytes.ReplaceAll(lower, []byte("_"), []byte("-"))
			if bytes.HasPrefix(normalised, []byte("x-sandbox-")) || requestDrop[string(normalised)] ||
				string(normalised) == "authorization" {
				continue
			}
		}
		if bytes.HasPrefix(lower, []byte("x-sandbox-")) {
			for i, routing := range RoutingHeaderNames {
				if string(lower) == routing {
					if c.routing.Present[i] && c.duplicate < 0 {
						c.duplicate = i
					}
					c.routing.Present[i] = true
					c.routing.Values[i] = string(h.value(f))
					break
				}
			}
			continue // unknown x-sandbox-* headers are dropped as well
		}
		if requestDrop[string(lower)] {
			value := h.value(f)
			switch string(lower) {
			case "connection":
				for _, t := range bytes.Split(value, []byte(",")) {
					t = bytes.ToLower(trimOWS(t))
					connTokens = append(connTokens, t)
					switch string(t) {
					case "close":
						closeToken = true
					case "keep-alive":
						keepAliveToken = true
					}
				}
			case "upgrade":
				upgradeValue = bytes.ToLower(trimOWS(value))
			case "content-length":
				c.contentLength = value
				c.clCount++
			case "transfer-encoding":
				if c.teCount > 0 {
					c.transferEnc = append(c.transferEnc, ',')
				}
				c.transferEnc = append(c.transferEnc, value...)
				c.teCount++
				c.chunked = true
			case "expect":
				expect = bytes.ToLower(trimOWS(value))
			}
			continue
		}
		if string(lower) == "authorization" {
			c.authorization = h.value(f)
			c.authCount++
			continue
		}
		c.forwarded = append(c.forwarded, f)
	}
	if h.http10 {
		c.keepAlive = keepAliveToken && !closeToken
	} else {
		c.keepAlive = !closeToken
	}
	if len(connTokens) > 0 {
		hasUpgrade := false
		var nominated map[string]bool
		for _, t := range connTokens {
			if string(t) == "upgrade" {
				hasUpgrade = true
			}
			if !standardConnectionTokens[string(t)] {
				if nominated == nil {
					nominated = map[string]bool{}
				}
				nominated[string(t)] = true
			}
		}
		c.upgrade = hasUpgrade && upgradeValue != nil
		c.websocket = string(upgradeValue) == "websocket" && hasUpgrade && string(h.method) == "GET"
		if nominated != nil {
			kept := c.forwarded[:0]
			for _, f := range c.forwarded {
				if !nominated[string(bytes.ToLower(h.name(f)))] {
					kept = append(kept, f)
				}
			}
			c.forwarded = kept
		}
	}
	c.expect100 = string(expect) == "100-continue"
	if c.authCount != 1 {
		c.authorization = nil
	}
	return scratch
}

// framingError is the request framing llhttp's strict mode refuses: a length together with
// chunked coding, conflicting or repeated lengths, a length that is not a number, a
// Transfer-Encoding whose last coding is not chunked.
func framingError(c *classified) *headError {
	if c.teCount > 0 {
		if c.clCount > 0 {
			return malformed("Content-Length together with Transfer-Encoding")
		}
		codings := bytes.Split(c.transferEnc, []byte(","))
		for i, coding := range codings {
			chunked := string(bytes.ToLower(trimOWS(coding))) == "chunked"
			if chunked != (i == len(codings)-1) {
				return malformed("Transfer-Encoding must end in chunked, once")
			}
		}
	}
	if c.clCount > 1 {
		return malformed("duplicate Content-Length")
	}
	if c.clCount == 1 {
		v := c.contentLength
		if len(v) == 0 || len(v) > 18 {
			return malformed("invalid Content-Length")
		}
		for _, d := range v {
			if d < '0' || d > '9' {
				return malformed("invalid Content-Length")
			}
		}
	}
	return nil
}

// declaresBody: the headers announce a request body (any Transfer-Encoding, or a
// Content-Length other than 0) — for the router's own endpoints, which never read one.
func declaresBody(c *classified) bool {
	return c.teCount > 0 || (c.clCount > 0 && string(trimOWS(c.contentLength)) != "0")
}

var (
	bearerChallenge     = [][2]string{{"WWW-Authenticate", "Bearer"}}
	answerNotOriginForm = &Answer{Status: 400, Detail: "Request target must be an origin-form path.", Reason: "routing"}
	answerMissingAuth   = &Answer{Status: 401, Detail: "Missing or invalid Authorization header.", Reason: "auth", Headers: bearerChallenge}
	answerInvalidToken  = &Answer{Status: 401, Detail: "Invalid token.", Reason: "auth", Headers: bearerChallenge}
	answerMethod        = &Answer{Status: 405, Detail: "Method not allowed through the router.", Reason: "method"}
	answerUpgrade       = &Answer{Status: 400, Detail: "Only WebSocket upgrades are supported.", Reason: "routing"}
	answerBodyTooLarge  = &Answer{Status: 413, Detail: "Request body too large.", Reason: "request_too_large"}
	answerDuplicate     [routingHeaderCount]*Answer
	forwardedMethods    = map[string]bool{"GET": true, "POST": true, "PUT": true, "DELETE": true, "PATCH": true, "HEAD": true, "OPTIONS": true}
	headerTimeoutAnswer = &Answer{Status: 408, Detail: "Timed out reading the request headers.", Reason: "header_timeout"}
)

func init() {
	for i, name := range canonicalRouting {
		answerDuplicate[i] = &Answer{Status: 400, Detail: "Duplicate " + name + " header.", Reason: "routing"}
	}
}

// authorize: nil when authorization is "Bearer <token>" (scheme in any case, token compared
// in constant time, surrounding whitespace ignored), else the 401 answer.
func authorize(authorization []byte, token []byte) *Answer {
	if authorization == nil || len(authorization) <= 7 || !bytes.EqualFold(authorization[:7], []byte("bearer ")) {
		return answerMissingAuth
	}
	if subtle.ConstantTimeCompare(trimOWS(authorization[7:]), token) != 1 {
		return answerInvalidToken
	}
	return nil
}

// refusal: why a routed request cannot be forwarded (method, upgrade, declared body size).
func refusal(method []byte, c *classified, maxBody int64) *Answer {
	if !forwardedMethods[string(method)] {
		return answerMethod
	}
	if c.upgrade && !c.websocket {
		return answerUpgrade
	}
	if c.clCount == 1 {
		declared, err := strconv.ParseInt(string(c.contentLength), 10, 64)
		if err != nil || declared < 0 {
			return malformed("invalid Content-Length").answer
		}
		if declared > maxBody {
			return answerBodyTooLarge
		}
	}
	return nil
}

// appendUpstreamHead appends the HTTP/1.1 request head sent to the sandbox. The body is framed
// as the client framed it: re-chunked when it was chunked, else with its Content-Length.
func appendUpstreamHead(dst []byte, h *requestHead, c *classified, authority string) []byte {
	dst = append(dst, h.method...)
	dst = append(dst, ' ')
	dst = append(dst, h.target...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, authority...)
	dst = append(dst, "\r\n"...)
	for _, f := range c.forwarded {
		dst = append(dst, h.name(f)...)
		dst = append(dst, ": "...)
		dst = append(dst, h.value(f)...)
		dst = append(dst, "\r\n"...)
	}
	if c.chunked {
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	} else if c.clCount == 1 {
		dst = append(dst, "Content-Length: "...)
		dst = append(dst, c.contentLength...)
		dst = append(dst, "\r\n"...)
	}
	if c.websocket {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: websocket\r\n"...)
	}
	return append(dst, "\r\n"...)
}
