package main

// The router's Server-Timing header (W3C Server Timing): where the time of one exchange went,
// from the router's side, so a caller can split its own latency without access to the router.
//
//	Server-Timing: router;dur=<ms>, connect;dur=<ms>;desc=pooled|new, sandbox;dur=<ms>
//
// router: from the request head read to the sandbox's response head (everything the router
// waited for); connect: getting a sandbox connection (a pooled one, or a new one dialled);
// sandbox: from the request sent to the sandbox's response head. What the router itself spent
// is router - connect - sandbox; the sandbox's own entries (the runtime's `runtime;dur=`) are
// relayed as they came. The Python router writes the same header.

import (
	"strconv"
	"time"
)

// exchangeTiming: the instants of one exchange the header is made of.
type exchangeTiming struct {
	connect time.Duration
	pooled  bool
	sent    time.Time // the request head went to the sandbox
}

func appendMillis(dst []byte, d time.Duration) []byte {
	return strconv.AppendFloat(dst, float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// appendServerTiming inserts the header into a complete response head (one ending in the blank
// line) and returns the new head.
func appendServerTiming(head []byte, started, headAt time.Time, x *exchangeTiming) []byte {
	head = head[:len(head)-2] // the head's blank line goes back after the field
	head = append(head, "Server-Timing: router;dur="...)
	head = appendMillis(head, headAt.Sub(started))
	head = append(head, ", connect;dur="...)
	head = appendMillis(head, x.connect)
	if x.pooled {
		head = append(head, ";desc=pooled"...)
	} else {
		head = append(head, ";desc=new"...)
	}
	head = append(head, ", sandbox;dur="...)
	head = appendMillis(head, headAt.Sub(x.sent))
	return append(head, "\r\n\r\n"...)
}
