package main

// Tests of body.go: lengthBody, untilCloseBody and chunkedBody decode correctly whether the
// socket delivers one byte per read or large reads (and through a buffer smaller than a chunk),
// never read past the end of their body (a pipelined request stays in the buffer), ignore chunk
// extensions and drop trailers, and refuse every malformed chunked form (missing or bare-LF line
// ends, bad or over-long hex sizes, control characters, obs-folded or oversized trailers, over-long
// lines); a body cut short is an error, never a clean io.EOF. Plus chunkSize and appendChunk.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// btDrain reads b to its end: the body, and the error that ended it (io.EOF when complete).
func btDrain(b bodyReader) ([]byte, int, error) {
	var out []byte
	pieces := 0
	for {
		p, err := b.next()
		if err != nil {
			return out, pieces, err
		}
		if len(p) == 0 {
			return out, pieces, errors.New("empty piece")
		}
		pieces++
		out = append(out, p...) // a piece is valid only until the next call
	}
}

// btReaders are the ways the bytes can arrive: one per read, in large reads, and one per read
// through the smallest bufio buffer.
var btReaders = []struct {
	name string
	make func(string) *bufio.Reader
}{
	{"one-byte", func(s string) *bufio.Reader { return bufio.NewReader(iotest.OneByteReader(strings.NewReader(s))) }},
	{"large", func(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 64<<10) }},
	{"tiny-buffer", func(s string) *bufio.Reader {
		return bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(s)), 16)
	}},
	{"half", func(s string) *bufio.Reader { return bufio.NewReader(iotest.HalfReader(strings.NewReader(s))) }},
}

func btRest(br *bufio.Reader) string {
	rest, _ := io.ReadAll(br)
	return string(rest)
}

// -- lengthBody -----------------------------------------------------------------------------------

func TestBodyLengthBodyReadsExactlyItsLength(t *testing.T) {
	for _, rd := range btReaders {
		for _, tc := range []struct {
			raw  string
			left int64
			body string
		}{
			{"hello world", 11, "hello world"},
			{"hello world", 5, "hello"},
			{"helloGET / HTTP/1.1\r\n\r\n", 5, "hello"},
			{"abc", 0, ""},
			{"", 0, ""},
		} {
			br := rd.make(tc.raw)
			body, _, err := btDrain(&lengthBody{r: br, left: tc.left})
			if err != io.EOF || string(body) != tc.body {
				t.Errorf("%s %q/%d: body %q err %v", rd.name, tc.raw, tc.left, body, err)
			}
			if rest := btRest(br); rest != tc.raw[len(tc.body):] {
				t.Errorf("%s %q/%d: left %q", rd.name, tc.raw, tc.left, rest)
			}
		}
	}
}

func TestBodyLengthBodyInLargeReads(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	br := bufio.NewReaderSize(bytes.NewReader(append(btClone(data), "NEXT"...)), 16<<10)
	body, pieces, err := btDrain(&lengthBody{r: br, left: int64(len(data))})
	if err != io.EOF || !bytes.Equal(body, data) {
		t.Fatalf("%d bytes, err %v", len(body), err)
	}
	if pieces < len(data)/(16<<10) {
		t.Errorf("%d pieces: larger than the buffer?", pieces)
	}
	if rest := btRest(br); rest != "NEXT" {
		t.Errorf("left %q", rest)
	}
}

func TestBodyLengthBodyCutShortIsUnexpectedEOF(t *testing.T) {
	for _, rd := range btReaders {
		body, _, err := btDrain(&lengthBody{r: rd.make("hel"), left: 5})
		if err != io.ErrUnexpectedEOF || string(body) != "hel" {
			t.Errorf("%s: body %q err %v, want io.ErrUnexpectedEOF", rd.name, body, err)
		}
		if _, _, err := btDrain(&lengthBody{r: rd.make(""), left: 1}); err != io.ErrUnexpectedEOF {
			t.Errorf("%s: empty: %v, want io.ErrUnexpectedEOF", rd.name, err)
		}
	}
	// Another read error passes through.
	r := io.MultiReader(strings.NewReader("he"), iotest.ErrReader(htTimeout{}))
	if _, _, err := btDrain(&lengthBody{r: bufio.NewReader(r), left: 5}); !htIsTimeout(err) {
		t.Errorf("timeout: %v", err)
	}
}

func TestBodyLengthBodyStaysAtEOF(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("abXY"))
	b := &lengthBody{r: br, left: 2}
	if _, _, err := btDrain(b); err != io.EOF {
		t.Fatal(err)
	}
	for range 3 {
		if p, err := b.next(); err != io.EOF || p != nil {
			t.Errorf("after the end: %q %v", p, err)
		}
	}
	if rest := btRest(br); rest != "XY" {
		t.Errorf("left %q", rest)
	}
}

// -- untilCloseBody -------------------------------------------------------------------------------

func TestBodyUntilCloseBodyReadsToTheEnd(t *testing.T) {
	for _, rd := range btReaders {
		for _, raw := range []string{"", "x", "0\r\n\r\nnot chunked, just bytes", strings.Repeat("z", 5000)} {
			body, _, err := btDrain(&untilCloseBody{r: rd.make(raw)})
			if err != io.EOF || string(body) != raw {
				t.Errorf("%s %d bytes: got %d bytes, err %v", rd.name, len(raw), len(body), err)
			}
		}
	}
	data := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18)
	body, _, err := btDrain(&untilCloseBody{r: bufio.NewReaderSize(bytes.NewReader(data), 32<<10)})
	if err != io.EOF || !bytes.Equal(body, data) {
		t.Errorf("large: %d bytes, err %v", len(body), err)
	}
	r := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(htTimeout{}))
	body, _, err = btDrain(&untilCloseBody{r: bufio.NewReader(r)})
	if !htIsTimeout(err) || string(body) != "partial" {
		t.Errorf("timeout: %q %v, want the timeout (not a complete body)", body, err)
	}
}

// -- chunkedBody: what decodes --------------------------------------------------------------------

func TestBodyChunkedDecodes(t *testing.T) {
	for _, tc := range []struct{ name, raw, body string }{
		{"empty", "0\r\n\r\n", ""},
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"several", "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n", "hello world"},
		{"upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"leading zeros", "000a\r\n0123456789\r\n000\r\n\r\n", "0123456789"},
		{"CRLF in the data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"},
		{"extension", "5;name=value\r\nhello\r\n0\r\n\r\n", "hello"},
		{"bare extension", "5;x\r\nhello\r\n0\r\n\r\n", "hello"},
		{"quoted extension", "5;a=\"q;x\"\r\nhello\r\n0\r\n\r\n", "hello"},
		{"several extensions", "5;a=1;b=2\r\nhello\r\n0\r\n\r\n", "hello"},
		{"extension with a tab", "5;a=\t1\r\nhello\r\n0\r\n\r\n", "hello"},
		{"last-chunk extension", "5\r\nhello\r\n0;end=1\r\n\r\n", "hello"},
		{"trailer", "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "hello"},
		{"trailers", "5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n", "hello"},
		{"binary data", "3\r\n\x00\xff\n\r\n0\r\n\r\n", "\x00\xff\n"},
	} {
		for _, rd := range btReaders {
			br := rd.make(tc.raw + "GET /next HTTP/1.1\r\n\r\n")
			b := &chunkedBody{r: br}
			body, _, err := btDrain(b)
			if err != io.EOF || string(body) != tc.body {
				t.Errorf("%s (%s): body %q err %v, want %q", tc.name, rd.name, body, err, tc.body)
				continue
			}
			if p, err := b.next(); p != nil || err != io.EOF {
				t.Errorf("%s (%s): after the end %q %v", tc.name, rd.name, p, err)
			}
			// Extensions and trailers are consumed, nothing after the body is.
			if rest := btRest(br); rest != "GET /next HTTP/1.1\r\n\r\n" {
				t.Errorf("%s (%s): left %q", tc.name, rd.name, rest)
			}
		}
	}
}

func TestBodyChunkedDecodesLargeChunksInLargeReads(t *testing.T) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var raw []byte
	for off := 0; off < len(data); off += 100_000 {
		raw = appendChunk(raw, data[off:min(off+100_000, len(data))])
	}
	raw = append(raw, lastChunk...)
	for _, size := range []int{16, 4096, 16 << 10, 1 << 21} {
		br := bufio.NewReaderSize(bytes.NewReader(raw), size)
		body, _, err := btDrain(&chunkedBody{r: br})
		if err != io.EOF || !bytes.Equal(body, data) {
			t.Errorf("buffer %d: %d bytes, err %v", size, len(body), err)
		}
	}
	// One byte per read, one chunk far larger than the buffer.
	big := bytes.Repeat([]byte("x"), 10000)
	raw = append(appendChunk(nil, big), lastChunk...)
	br := bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(raw)), 16)
	if body, _, err := btDrain(&chunkedBody{r: br}); err != io.EOF || !bytes.Equal(body, big) {
		t.Errorf("one byte at a time: %d bytes, err %v", len(body), err)
	}
}

func TestBodyChunkedAcceptsLinesUpToTheLimit(t *testing.T) {
	// A chunk-size line with its extensions, and each trailer line, may be up to maxChunkLine
	// bytes with the CRLF; trailers up to maxTrailerBytes in all.
	ext := "5;" + strings.Repeat("e", maxChunkLine-len("5;\r\n"))
	trailer := "X: " + strings.Repeat("t", maxChunkLine-len("X: \r\n"))
	var trailers strings.Builder
	for trailers.Len()+len(trailer) <= maxTrailerBytes-maxChunkLine {
		trailers.WriteString(trailer + "\r\n")
	}
	raw := ext + "\r\nhello\r\n0\r\n" + trailers.String() + "\r\n"
	br := bufio.NewReaderSize(strings.NewReader(raw), 16<<10)
	if body, _, err := btDrain(&chunkedBody{r: br}); err != io.EOF || string(body) != "hello" {
		t.Errorf("lines at the limit: %q %v", body, err)
	}
}

// -- chunkedBody: what is refused -----------------------------------------------------------------

func TestBodyChunkedRefusesMalformedCoding(t *testing.T) {
	longLine := "5;" + strings.Repeat("e", maxChunkLine) + "\r\nhello\r\n0\r\n\r\n"
	longTrailer := "5\r\nhello\r\n0\r\nX: " + strings.Repeat("t", maxChunkLine) + "\r\n\r\n"
	var manyTrailers strings.Builder
	manyTrailers.WriteString("5\r\nhello\r\n0\r\n")
	for manyTrailers.Len() <= maxTrailerBytes+maxChunkLine {
		manyTrailers.WriteString("X: " + strings.Repeat("t", 4000) + "\r\n")
	}
	manyTrailers.WriteString("\r\n")
	for _, tc := range []struct{ name, raw string }{
		// a chunk's data not followed by CRLF
		{"data then garbage", "5\r\nhelloX\r\n0\r\n\r\n"},
		{"data too long", "5\r\nhello!\r\n0\r\n\r\n"},
		{"data then last chunk", "5\r\nhello0\r\n\r\n"},
		{"data then CR CR LF", "5\r\nhello\r\r\n0\r\n\r\n"},
		// LF without CR
		{"LF after data", "5\r\nhello\n0\r\n\r\n"},
		{"LF after size", "5\nhello\r\n0\r\n\r\n"},
		{"LF after last chunk", "5\r\nhello\r\n0\n\r\n"},
		{"LF ending the trailers", "5\r\nhello\r\n0\r\n\n"},
		{"LF after a trailer", "5\r\nhello\r\n0\r\nX: 1\n\r\n"},
		{"CR without LF", "5\rhello\r\n0\r\n\r\n"},
		// bad hex
		{"not hex", "g\r\nhello\r\n0\r\n\r\n"},
		{"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"},
		{"negative", "-5\r\nhello\r\n0\r\n\r\n"},
		{"plus sign", "+5\r\nhello\r\n0\r\n\r\n"},
		{"space before", " 5\r\nhello\r\n0\r\n\r\n"},
		{"space after", "5 \r\nhello\r\n0\r\n\r\n"},
		{"tab before extension", "5\t;x\r\nhello\r\n0\r\n\r\n"},
		{"empty size", "\r\nhello\r\n0\r\n\r\n"},
		{"extension without size", ";x\r\nhello\r\n0\r\n\r\n"},
		{"underscore", "1_0\r\n" + strings.Repeat("x", 16) + "\r\n0\r\n\r\n"},
		{"bad last chunk", "5\r\nhello\r\nz\r\n\r\n"},
		// size too long
		{"16 hex digits", "0000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"17 hex digits", "10000000000000000\r\n"},
		{"int64 overflow", "ffffffffffffffffff\r\n"},
		// control characters in a size line
		{"NUL in extension", "5;a\x00\r\nhello\r\n0\r\n\r\n"},
		{"SOH in extension", "5;\x01\r\nhello\r\n0\r\n\r\n"},
		{"DEL in extension", "5;a\x7f\r\nhello\r\n0\r\n\r\n"},
		{"bare CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n"},
		{"NUL after size", "5\x00\r\nhello\r\n0\r\n\r\n"},
		// trailers
		{"trailer obs-fold space", "5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"},
		{"trailer obs-fold tab", "5\r\nhello\r\n0\r\nX: a\r\n\tb\r\n\r\n"},
		{"trailer starting with a space", "0\r\n X: a\r\n\r\n"},
		{"trailers too large", manyTrailers.String()},
		// lines over maxChunkLine
		{"size line too long", longLine},
		{"trailer line too long", longTrailer},
	} {
		for _, rd := range append(btReaders[:2:2], struct {
			name string
			make func(string) *bufio.Reader
		}{"16KiB", func(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 16<<10) }}) {
			_, _, err := btDrain(&chunkedBody{r: rd.make(tc.raw)})
			if err != errBadChunk {
				t.Errorf("%s (%s): %v, want errBadChunk", tc.name, rd.name, err)
			}
		}
	}
}

func TestBodyChunkedCutShortIsAnError(t *testing.T) {
	// Inside a chunk's data: io.ErrUnexpectedEOF.
	for _, raw := range []string{"5\r\nhel", "5\r\n", "5;x\r\n", "3\r\nabc\r\n5\r\nhe"} {
		for _, rd := range btReaders {
			_, _, err := btDrain(&chunkedBody{r: rd.make(raw)})
			if err != io.ErrUnexpectedEOF {
				t.Errorf("%q (%s): %v, want io.ErrUnexpectedEOF", raw, rd.name, err)
			}
		}
	}
	// Inside a line (size, CRLF after the data, trailers): an error, never a complete body.
	// (chunkedBody reports these as errBadChunk.)
	for _, raw := range []string{"", "5", "5;ext", "5\r", "5\r\nhello", "5\r\nhello\r", "5\r\nhello\r\n",
		"5\r\nhello\r\n0", "5\r\nhello\r\n0\r\n", "0\r\nX: 1\r\n", "0\r\nX: 1"} {
		for _, rd := range btReaders {
			_, _, err := btDrain(&chunkedBody{r: rd.make(raw)})
			if err != errBadChunk && err != io.ErrUnexpectedEOF {
				t.Errorf("%q (%s): %v, want errBadChunk or io.ErrUnexpectedEOF", raw, rd.name, err)
			}
		}
	}
	// Another read error passes through, in a chunk and in a line alike.
	for _, raw := range []string{"5\r\nhe", "5\r\nhello\r\n0\r\nX:"} {
		r := io.MultiReader(strings.NewReader(raw), iotest.ErrReader(htTimeout{}))
		if _, _, err := btDrain(&chunkedBody{r: bufio.NewReader(r)}); !htIsTimeout(err) {
			t.Errorf("%q then a timeout: %v, want the timeout", raw, err)
		}
	}
}

// -- chunkSize and appendChunk --------------------------------------------------------------------

func TestBodyChunkSize(t *testing.T) {
	for _, tc := range []struct {
		line string
		size int64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"a", 10, true},
		{"A", 10, true},
		{"fF", 255, true},
		{"ff;x=y", 255, true},
		{"10;", 16, true},
		{"1;a=\"b c\"", 1, true},
		{"1; x", 1, true},
		{"fffffffffffffff", 1<<60 - 1, true},
		{"000000000000001", 1, true},
		{"0000000000000001", 0, false}, // 16 digits
		{"7fffffffffffffff", 0, false},
		{"", 0, false},
		{";", 0, false},
		{"x", 0, false},
		{"5 ", 0, false},
		{" 5", 0, false},
		{"5\t", 0, false},
		{"5x", 0, false},
		{"5;\x01", 0, false},
		{"5;\x7f", 0, false},
		{"5;\n", 0, false},
		{"-1", 0, false},
		{"0x1", 0, false},
	} {
		size, err := chunkSize([]byte(tc.line))
		if tc.ok && (err != nil || size != tc.size) {
			t.Errorf("chunkSize(%q) = %d, %v, want %d", tc.line, size, err, tc.size)
		}
		if !tc.ok && err != errBadChunk {
			t.Errorf("chunkSize(%q) = %d, %v, want errBadChunk", tc.line, size, err)
		}
	}
}

func TestBodyAppendChunk(t *testing.T) {
	for _, tc := range []struct {
		p    string
		want string
	}{
		{"hello", "5\r\nhello\r\n"},
		{"\r\n", "2\r\n\r\n\r\n"},
		{strings.Repeat("x", 255), "ff\r\n" + strings.Repeat("x", 255) + "\r\n"},
		{strings.Repeat("y", 4096), "1000\r\n" + strings.Repeat("y", 4096) + "\r\n"},
		{strings.Repeat("z", 0xabc), "abc\r\n" + strings.Repeat("z", 0xabc) + "\r\n"},
	} {
		if got := string(appendChunk(nil, []byte(tc.p))); got != tc.want {
			t.Errorf("appendChunk(%d bytes) = %q…", len(tc.p), got[:min(len(got), 12)])
		}
	}
	if got := string(appendChunk([]byte("head"), []byte("ab"))); got != "head2\r\nab\r\n" {
		t.Errorf("appending to dst: %q", got)
	}
	if string(lastChunk) != "0\r\n\r\n" {
		t.Errorf("lastChunk = %q", lastChunk)
	}
	// Round trip: what appendChunk writes, chunkedBody reads back.
	var raw []byte
	var want []byte
	for i := 1; i <= 300; i += 37 {
		p := bytes.Repeat([]byte{byte(i)}, i)
		raw = appendChunk(raw, p)
		want = append(want, p...)
	}
	raw = append(raw, lastChunk...)
	for _, rd := range btReaders {
		if body, _, err := btDrain(&chunkedBody{r: rd.make(string(raw))}); err != io.EOF || !bytes.Equal(body, want) {
			t.Errorf("round trip (%s): %d bytes, %v", rd.name, len(body), err)
		}
	}
}

func btClone(b []byte) []byte { return append([]byte(nil), b...) }
