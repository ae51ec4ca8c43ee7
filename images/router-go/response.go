package main

// The sandbox's response head, read strictly (a response the router could frame differently from
// the sandbox is a 502, never relayed), and the head the client gets instead: hop-by-hop headers
// and the ones the sandbox's Connection header nominates removed, the body re-framed (verbatim
// with its length, else chunked for an HTTP/1.1 client or close-delimited for HTTP/1.0).

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

const maxResponseHeaderBytes = 256 << 10

// Body framing towards the client.
const (
	outNone    = iota // no body (HEAD, 204, 304, 101)
	outRaw            // verbatim (Content-Length, or close-delimited to an HTTP/1.0 client)
	outChunked        // re-chunked
)

// Body framing from the sandbox.
const (
	inNone = iota
	inLength
	inChunked
	inUntilClose
)

var (
	errInvalidResponse  = errors.New("invalid response")
	errOversizedHeaders = errors.New("oversized response headers")
)

// responseHead is one parsed response head of the sandbox.
type responseHead struct {
	buf       []byte
	status    int
	reason    []byte
	fields    []field
	keepAlive bool // the sandbox keeps the connection open after this response
	framing   int
	length    int64
	http10    bool
}

func (h *responseHead) name(f field) []byte  { return h.buf[f.name0:f.name1] }
func (h *responseHead) value(f field) []byte { return h.buf[f.value0:f.value1] }

// readResponseHead reads one response head (interim ones included: the caller skips 1xx).
// io.EOF when the connection ended before its first byte.
func readResponseHead(r *bufio.Reader, h *responseHead, headRequest bool) error {
	h.buf = h.buf[:0]
	h.fields = h.fields[:0]
	budget := maxResponseHeaderBytes
	rh := requestHead{buf: h.buf[:0], fields: h.fields[:0]} // reuse the line reader and field parser of the request side
	start, end, err := rh.readLine(r, &budget)
	if err != nil {
		return responseReadError(err, true)
	}
	line := rh.buf[start:end]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || !isDigit(line[9]) || !isDigit(line[10]) || !isDigit(line[11]) ||
		(len(line) > 12 && line[12] != ' ') {
		return errInvalidResponse
	}
	h.http10 = line[7] == '0'
	h.status = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	if h.status < 100 {
		return errInvalidResponse
	}
	reason0 := start + 12
	if len(line) > 12 {
		reason0++
	}
	for _, c := range rh.buf[reason0:end] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errInvalidResponse
		}
	}
	var connTokens [][]byte
	clCount, teCount := 0, 0
	var cl, te []byte
	for {
		start, end, err := rh.readLine(r, &budget)
		if err != nil {
			return responseReadError(err, false)
		}
		if start == end {
			break
		}
		f, err := rh.parseField(start, end)
		if err != nil {
			return errInvalidResponse
		}
		rh.fields = append(rh.fields, f)
		name := rh.buf[f.name0:f.name1]
		value := rh.buf[f.value0:f.value1]
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			clCount++
			cl = value
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			teCount++
			te = value
		case bytes.EqualFold(name, []byte("connection")):
			for _, t := range bytes.Split(value, []byte(",")) {
				connTokens = append(connTokens, bytes.ToLower(trimOWS(t)))
			}
		}
	}
	h.buf, h.fields = rh.buf, rh.fields
	h.reason = h.buf[reason0:end]
	h.keepAlive = !h.http10
	for _, t := range connTokens {
		switch string(t) {
		case "close":
			h.keepAlive = false
		case "keep-alive":
			if h.http10 {
				h.keepAlive = true
			}
		}
	}
	// A length the sandbox sends is relayed (also for bodiless answers): it must be one number.
	if clCount > 1 || (clCount == 1 && !allDigits(cl)) {
		return errInvalidResponse
	}
	switch {
	case h.status < 200 || h.status == 204 || h.status == 304 || headRequest:
		h.framing = inNone
		if teCount > 0 && clCount > 0 {
			return errInvalidResponse
		}
	case teCount > 0:
		if clCount > 0 || teCount > 1 {
			return errInvalidResponse
		}
		codings := bytes.Split(te, []byte(","))
		if string(bytes.ToLower(trimOWS(codings[len(codings)-1]))) == "chunked" {
			h.framing = inChunked
		} else {
			h.framing, h.keepAlive = inUntilClose, false
		}
	case clCount > 1:
		return errInvalidResponse
	case clCount == 1:
		n, err := strconv.ParseInt(string(cl), 10, 64)
		if err != nil || n < 0 || !allDigits(cl) {
			return errInvalidResponse
		}
		h.framing, h.length = inLength, n
	default:
		h.framing, h.keepAlive = inUntilClose, false
	}
	return nil
}

func responseReadError(err error, first bool) error {
	switch {
	case err == errHeadersTooLarge:
		return errOversizedHeaders
	case err == errClosed && first:
		return io.EOF
	case err == errClosed || err == io.EOF:
		return io.ErrUnexpectedEOF
	}
	if _, ok := err.(*headError); ok {
		return errInvalidResponse
	}
	return err
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(b []byte) bool {
	for _, c := range b {
		if !isDigit(c) {
			return false
		}
	}
	return len(b) > 0
}

// responseDrop: response headers never relayed as they are.
func responseDrop(lower string) bool {
	return hopByHop[lower] || lower == "content-length"
}

// appendClientHead appends the client's response head for the sandbox's head h. http10: the
// client spoke HTTP/1.0; keepAlive: the client connection may be reused. Returns the head, the
// out* framing of the body towards the client, and whether the client connection stays open
// (an HTTP/1.0 client of a body without length loses keep-alive).
func appendClientHead(dst []byte, h *responseHead, headRequest, http10, keepAlive bool, scratch []byte) ([]byte, int, bool) {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(h.status), 10)
	dst = append(dst, ' ')
	if len(h.reason) > 0 {
		dst = append(dst, h.reason...)
	} else {
		dst = append(dst, reasonPhrase(h.status)...)
	}
	dst = append(dst, "\r\n"...)
	var nominated map[string]bool
	var contentLength []byte
	for _, f := range h.fields {
		if bytes.EqualFold(h.name(f), []byte("connection")) {
			for _, t := range bytes.Split(h.value(f), []byte(",")) {
				t = bytes.ToLower(trimOWS(t))
				if !standardConnectionTokens[string(t)] {
					if nominated == nil {
						nominated = map[string]bool{}
					}
					nominated[string(t)] = true
				}
			}
		}
	}
	for _, f := range h.fields {
		scratch = lowerInto(scratch[:0], h.name(f))
		if responseDrop(string(scratch)) {
			if string(scratch) == "content-length" {
				contentLength = h.value(f)
			}
			continue
		}
		if nominated != nil && nominated[string(scratch)] {
			continue
		}
		dst = append(dst, h.name(f)...)
		dst = append(dst, ": "...)
		dst = append(dst, h.value(f)...)
		dst = append(dst, "\r\n"...)
	}
	if h.status == 101 {
		return append(dst, "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"...), outNone, keepAlive
	}
	mode := outRaw
	switch {
	case headRequest || h.status == 204 || h.status == 304:
		mode = outNone
		if contentLength != nil {
			dst = append(dst, "Content-Length: "...)
			dst = append(dst, contentLength...)
			dst = append(dst, "\r\n"...)
		}
	case h.framing == inLength:
		dst = append(dst, "Content-Length: "...)
		dst = append(dst, contentLength...)
		dst = append(dst, "\r\n"...)
	case !http10:
		mode = outChunked
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	default:
		keepAlive = false
	}
	if !keepAlive {
		dst = append(dst, "Connection: close\r\n"...)
	} else if http10 {
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	return append(dst, "\r\n"...), mode, keepAlive
}
