package main

// The responses the router answers itself (errors, health, metrics): the Answer that describes
// one, and its bytes. Errors are the JSON {"detail": ...} shape shared with the upstream router.

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Answer is how the router ends an exchange itself instead of relaying the sandbox's response:
// the status and detail of the JSON error, the metric it counts under (Reason for a refusal,
// Kind for an upstream failure), and whether the client connection ends with it. An answer with
// a Body of its own is one of the router's endpoints. Status 0: too late to answer (part of a
// response went out), both sides are dropped.
type Answer struct {
	Status      int
	Detail      string
	Reason      string // sandbox_router_rejected_total{reason}
	Kind        string // sandbox_router_upstream_errors_total{kind}
	Headers     [][2]string
	KeepOpen    bool   // the connection may serve another request after it (endpoints only)
	Body        []byte // an endpoint's own body instead of the JSON error
	ContentType string
}

func reasonPhrase(status int) string {
	if text := http.StatusText(status); text != "" {
		return text
	}
	return "Unknown"
}

// encode: the response bytes for a request that asked for keepAlive (and was HEAD: headOnly).
// An error always carries its JSON body, for HEAD too: its connection closes after it.
func (a *Answer) encode(keepAlive, headOnly bool) []byte {
	closeAfter := !a.KeepOpen || !keepAlive
	body, contentType := a.Body, a.ContentType
	if body == nil {
		body, _ = json.Marshal(map[string]string{"detail": a.Detail})
		contentType = "application/json"
		headOnly = false
	}
	out := make([]byte, 0, 160+len(body))
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(a.Status), 10)
	out = append(out, ' ')
	out = append(out, reasonPhrase(a.Status)...)
	out = append(out, "\r\nContent-Type: "...)
	out = append(out, contentType...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n"...)
	for _, h := range a.Headers {
		out = append(out, h[0]...)
		out = append(out, ": "...)
		out = append(out, h[1]...)
		out = append(out, "\r\n"...)
	}
	if closeAfter {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	if !headOnly {
		out = append(out, body...)
	}
	return out
}

var (
	healthBody   = []byte(`{"status":"ok"}`)
	notReadyBody = []byte(`{"status":"syncing","detail":"The sandbox pod index is not loaded yet."}`)
)

func unreachable(sandboxID, kind string) *Answer {
	return &Answer{Status: 502, Detail: "Could not connect to the backend sandbox: " + sandboxID, Kind: kind}
}

func timedOut(sandboxID, kind string) *Answer {
	return &Answer{Status: 504, Detail: "Timed out waiting for the backend sandbox: " + sandboxID, Kind: kind}
}

var (
	answerInvalidResponse   = &Answer{Status: 502, Detail: "The backend sandbox sent an invalid HTTP response.", Kind: "bad_response"}
	answerOversizedHeaders  = &Answer{Status: 502, Detail: "The backend sandbox sent oversized response headers.", Kind: "bad_response"}
	answerUnexpectedSwitch  = &Answer{Status: 502, Detail: "The backend sandbox switched protocols unexpectedly.", Kind: "bad_response"}
	dropTooLarge            = &Answer{Kind: "response_too_large"}
	dropReset               = &Answer{Kind: "reset_mid_response"}
	dropTimeout             = &Answer{Kind: "timeout_mid_response"}
	answerConnectionLimit   = &Answer{Status: 429, Detail: "Too many connections from this client.", Reason: "connection_limit"}
	answerRouterFull        = &Answer{Status: 429, Detail: "The router is at its connection limit; retry later.", Reason: "connection_limit"}
	answerClientGoneMidBody = &Answer{Reason: "client_disconnected"}
)
