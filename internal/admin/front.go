package admin

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/authpipe/authpipe/internal/audit"
)

// Reasons of requests refused before they reach the mux.
const (
	// ReasonBadPath: a path the mux would redirect (// . ..), refused
	// instead: a redirect would carry the Authorization header on.
	ReasonBadPath = "bad_path"
	// ReasonBodyTooLarge: a declared body above the server's bound.
	ReasonBodyTooLarge = "body_too_large"
)

// Reasons of the answers net/http writes itself, before any handler: 431
// (headers above the server's MaxHeaderBytes), 400 (a request it cannot
// parse), 501 (an unknown transfer encoding), 505 (HTTP version), 417 (an
// Expect other than 100-continue), and any other.
const (
	ReasonHeaderTooLarge      = "header_too_large"
	ReasonBadRequest          = "bad_request"
	ReasonUnsupportedEncoding = "unsupported_transfer_encoding"
	ReasonHTTPVersion         = "http_version_not_supported"
	ReasonExpectationFailed   = "expectation_failed"
	ReasonRefusedByServer     = "refused_by_server"
)

const (
	defaultFrontMaxBodyBytes = 1 << 20
	// statusLineLen is the length of "HTTP/1.1 431": a status line's
	// version and code.
	statusLineLen = len("HTTP/1.1 431")
)

// FrontConfig configures Front.
type FrontConfig struct {
	// MaxBodyBytes bounds every request body; default 1 MiB.
	MaxBodyBytes int64
}

// Front is the handler in front of the HTTP server's mux. It refuses what
// the mux would otherwise redirect or serve unbounded, and routes
// /api/… to the admin API directly, so that every refusal of an admin
// request is audited:
//
//   - a path that is not canonical (// . ..) is answered 400 bad_path
//     (the mux would redirect it, and the client follow with its token);
//   - a body larger than MaxBodyBytes is refused (413, or cut when read);
//   - /api, /api/v1 and everything under /api/ go to the admin API, which
//     audits them (unknown paths 404), when it is on.
//
// With Listener, ConnState and ConnContext wired into the http.Server, the
// answers net/http writes itself before any handler runs (431 for headers
// above MaxHeaderBytes, 400 for a request it cannot parse, 501, 505, 417)
// are audited too: each is recorded before it is written.
//
// With api nil (the admin API off) refusals are answered, not audited.
type Front struct {
	next    http.Handler
	api     *API
	maxBody int64
}

// NewFront returns the front handler over next (the mux).
func NewFront(next http.Handler, api *API, cfg FrontConfig) *Front {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = defaultFrontMaxBodyBytes
	}
	return &Front{next: next, api: api, maxBody: cfg.MaxBodyBytes}
}

type connKey struct{}

// ServeHTTP implements http.Handler.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if tc, ok := r.Context().Value(connKey{}).(*trackedConn); ok {
		tc.handled.Store(true)
	}
	p := r.URL.Path
	switch {
	case !canonical(p):
		f.refuse(w, r, http.StatusBadRequest, ReasonBadPath, "the request path is not canonical (no //, . or .. segments)")
		return
	case r.ContentLength > f.maxBody:
		// Closing spares reading a body refused unread.
		w.Header().Set("Connection", "close")
		f.refuse(w, r, http.StatusRequestEntityTooLarge, ReasonBodyTooLarge, "the request body is larger than "+strconv.FormatInt(f.maxBody, 10)+" bytes")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, f.maxBody)
	if f.api != nil && (p == "/api" || strings.HasPrefix(p, "/api/")) {
		f.api.ServeHTTP(w, r)
		return
	}
	f.next.ServeHTTP(w, r)
}

// canonical reports whether the mux would serve p as it is.
func canonical(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// refuse answers a refusal of the front handler, after its audit entry.
func (f *Front) refuse(w http.ResponseWriter, r *http.Request, status int, reason, msg string) {
	if f.api == nil {
		writeJSON(w, status, errorBody{msg, reason})
		return
	}
	a := f.api
	start := a.clock.Now()
	e := a.newEntry(r, start)
	e.TokenThumbprint = bearerThumbprint(r)
	e.Outcome, e.Reason, e.Status = OutcomeDenied, reason, &status
	e.LatencySeconds = a.clock.Since(start).Seconds()
	if err := a.trail.Record(r.Context(), *e); err != nil {
		a.trail.Defer(r.Context(), refusal(*e))
		a.requests.WithLabelValues(OpUnknown, OutcomeRefused).Inc()
		answerUnavailable(w)
		return
	}
	a.requests.WithLabelValues(OpUnknown, OutcomeDenied).Inc()
	writeJSON(w, status, errorBody{msg, reason})
}

// bearerThumbprint is the thumbprint of the request's Bearer token, if it
// has one (no other scheme: see authenticate).
func bearerThumbprint(r *http.Request) string {
	scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return ""
	}
	return audit.Thumbprint(token)
}

// Listener wraps the server's listener so that answers net/http writes
// itself can be audited (see Front).
func (f *Front) Listener(ln net.Listener) net.Listener {
	return &trackedListener{Listener: ln, front: f}
}

// ConnState is the http.Server's ConnState hook: a connection that starts
// reading a request has no handler for it yet.
func (f *Front) ConnState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(*trackedConn); ok && (s == http.StateActive || s == http.StateIdle) {
		tc.handled.Store(false)
	}
}

// ConnContext is the http.Server's ConnContext hook: it lets ServeHTTP
// mark the connection's request as handled.
func (f *Front) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

type trackedListener struct {
	net.Listener
	front *Front
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, front: l.front}, nil
}

// trackedConn is a server connection. handled is false from the moment
// net/http starts on a request (ConnState active) until Front.ServeHTTP
// runs for it: a response that starts while it is false is one net/http
// wrote itself.
type trackedConn struct {
	net.Conn
	front   *Front
	handled atomic.Bool
}

func (c *trackedConn) Write(p []byte) (int, error) {
	if !c.handled.Load() && bytes.HasPrefix(p, []byte("HTTP/1.")) && len(p) >= statusLineLen {
		c.handled.Store(true) // one entry per answer, however it is written
		c.front.serverRefusal(c.RemoteAddr().String(), p)
	}
	return c.Conn.Write(p)
}

// serverRefusal records an answer net/http wrote itself, before it goes
// out. The request was not parsed: the entry has its client and status.
func (f *Front) serverRefusal(remote string, p []byte) {
	a := f.api
	if a == nil {
		return
	}
	status, err := strconv.Atoi(string(p[len("HTTP/1.1 "):statusLineLen]))
	if err != nil {
		return
	}
	reason := ReasonRefusedByServer
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		reason = ReasonHeaderTooLarge
	case http.StatusBadRequest:
		reason = ReasonBadRequest
	case http.StatusNotImplemented:
		reason = ReasonUnsupportedEncoding
	case http.StatusHTTPVersionNotSupported:
		reason = ReasonHTTPVersion
	case http.StatusExpectationFailed:
		reason = ReasonExpectationFailed
	}
	now := a.clock.Now()
	e := audit.Entry{
		ID: audit.NewID(), Kind: audit.KindRequest, Part: 1, Parts: 1, Time: now.UTC(), Host: a.host, RemoteAddr: remote,
		Auth: AuthNone, Operation: OpUnknown, Outcome: OutcomeDenied, Reason: reason, Status: &status,
	}
	// The answer goes out whatever happens: it shows nothing and does
	// nothing. A sink that fails keeps the entry.
	a.trail.Defer(context.Background(), e)
	a.requests.WithLabelValues(OpUnknown, OutcomeDenied).Inc()
}
