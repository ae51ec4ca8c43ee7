package main

// Message bodies in both directions: reading a body framed by Content-Length, by chunked coding
// (strictly: hex sizes, CRLF everywhere, bounded extensions and trailers) or by the end of the
// connection, one piece at a time straight out of the socket's read buffer (no copy), and
// writing a piece re-chunked.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// errBadChunk: the chunked coding is broken; the exchange cannot go on.
var errBadChunk = errors.New("invalid chunked body")

const maxChunkLine = 4096 // a chunk-size line with its extensions, or one trailer line
const maxTrailerBytes = 64 << 10

// bodyReader yields a body piece by piece. A piece is a slice of the reader's buffer, valid until
// the next call; io.EOF after the last piece.
type bodyReader interface {
	next() ([]byte, error)
	// ready: next can return without reading the socket (a piece, the end or an error is
	// already in the buffer), so held output may wait for it.
	ready() bool
}

// available is what the buffer holds beyond the piece still to be discarded.
func available(r *bufio.Reader, discard int) []byte {
	p, _ := r.Peek(r.Buffered())
	return p[discard:]
}

func (b *lengthBody) ready() bool { return b.left == 0 || len(available(b.r, b.discard)) > 0 }

func (b *untilCloseBody) ready() bool { return len(available(b.r, b.discard)) > 0 }

func (b *chunkedBody) ready() bool {
	if b.done {
		return true
	}
	buf := available(b.r, b.discard)
	if b.inChunk && b.left > 0 {
		return len(buf) > 0
	}
	if b.inChunk { // the CRLF after a chunk's data
		if len(buf) < 2 {
			return false
		}
		buf = buf[2:]
	}
	end := bytes.IndexByte(buf, '\n')
	if end < 1 {
		return false
	}
	size, err := chunkSize(buf[:end-1])
	if err != nil {
		return true // next fails at once
	}
	rest := buf[end+1:]
	if size == 0 { // trailers up to an empty line
		return bytes.HasPrefix(rest, crlfBytes) || bytes.Contains(rest, []byte("\r\n\r\n"))
	}
	return len(rest) > 0
}

var crlfBytes = []byte("\r\n")

// pieceOf returns what r has buffered (reading once when it has nothing), at most limit bytes,
// and how much to discard before the next read.
func pieceOf(r *bufio.Reader, limit int64) ([]byte, error) {
	n := r.Buffered()
	if n == 0 {
		if _, err := r.Peek(1); err != nil {
			return nil, err
		}
		n = r.Buffered()
	}
	if int64(n) > limit {
		n = int(limit)
	}
	return r.Peek(n)
}

// lengthBody is a body of a known length.
type lengthBody struct {
	r       *bufio.Reader
	left    int64
	discard int
}

func (b *lengthBody) next() ([]byte, error) {
	if b.discard > 0 {
		b.r.Discard(b.discard)
		b.discard = 0
	}
	if b.left == 0 {
		return nil, io.EOF
	}
	return framedPiece(b.r, &b.left, &b.discard)
}

// framedPiece is the next piece of a body whose remaining length is *left (the connection ending
// before it is io.ErrUnexpectedEOF); the piece is discarded on the next call.
func framedPiece(r *bufio.Reader, left *int64, discard *int) ([]byte, error) {
	p, err := pieceOf(r, *left)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	*discard = len(p)
	*left -= int64(len(p))
	return p, nil
}

// untilCloseBody is a response body that ends when the sandbox closes the connection.
type untilCloseBody struct {
	r       *bufio.Reader
	discard int
}

func (b *untilCloseBody) next() ([]byte, error) {
	if b.discard > 0 {
		b.r.Discard(b.discard)
		b.discard = 0
	}
	p, err := pieceOf(b.r, 1<<62)
	if err != nil {
		return nil, err // io.EOF: the body is complete
	}
	b.discard = len(p)
	return p, nil
}

// chunkedBody decodes chunked coding. Extensions are checked and ignored, trailers read and
// dropped (neither is forwarded).
type chunkedBody struct {
	r       *bufio.Reader
	left    int64 // bytes left in the current chunk
	inChunk bool
	done    bool
	discard int
}

func (b *chunkedBody) line() ([]byte, error) {
	line, err := b.r.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull || err == io.EOF {
			return nil, errBadChunk
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' || len(line) > maxChunkLine {
		return nil, errBadChunk
	}
	return line[:len(line)-2], nil
}

func (b *chunkedBody) next() ([]byte, error) {
	if b.discard > 0 {
		b.r.Discard(b.discard)
		b.discard = 0
	}
	for {
		if b.done {
			return nil, io.EOF
		}
		if b.inChunk && b.left > 0 {
			return framedPiece(b.r, &b.left, &b.discard)
		}
		if b.inChunk { // the CRLF after a chunk's data
			line, err := b.line()
			if err != nil {
				return nil, err
			}
			if len(line) != 0 {
				return nil, errBadChunk
			}
			b.inChunk = false
		}
		line, err := b.line()
		if err != nil {
			return nil, err
		}
		size, err := chunkSize(line)
		if err != nil {
			return nil, err
		}
		if size == 0 {
			budget := maxTrailerBytes
			for {
				trailer, err := b.line()
				if err != nil {
					return nil, err
				}
				if len(trailer) == 0 {
					break
				}
				if budget -= len(trailer); budget < 0 || trailer[0] == ' ' || trailer[0] == '\t' {
					return nil, errBadChunk
				}
			}
			b.done = true
			return nil, io.EOF
		}
		b.left, b.inChunk = size, true
	}
}

// chunkSize parses "hex[;ext]" strictly.
func chunkSize(line []byte) (int64, error) {
	end := 0
	for end < len(line) && isHex(line[end]) {
		end++
	}
	if end == 0 || end > 15 {
		return 0, errBadChunk
	}
	for _, c := range line[end:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, errBadChunk
		}
	}
	if end < len(line) && line[end] != ';' {
		return 0, errBadChunk
	}
	size, err := strconv.ParseInt(string(line[:end]), 16, 64)
	if err != nil {
		return 0, errBadChunk
	}
	return size, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// appendChunk appends p as one chunk.
func appendChunk(dst, p []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(p)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, p...)
	return append(dst, "\r\n"...)
}

var lastChunk = []byte("0\r\n\r\n")
