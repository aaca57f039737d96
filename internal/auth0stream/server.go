package auth0stream

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/authpipe/authpipe/internal/inject"
)

// Bounds of the receiver's HTTP server (NewServer). The listener faces the
// internet (behind the TLS proxy): every phase of a connection is bounded.
const (
	// ServerReadHeaderTimeout bounds reading a request's headers.
	ServerReadHeaderTimeout = 10 * time.Second
	// ServerReadTimeout bounds reading a whole request, body included: a
	// body of DefaultMaxBodyBytes at 1 MB/s fits.
	ServerReadTimeout = 30 * time.Second
	// ServerWriteTimeout bounds a request from the end of its headers to
	// the end of its answer: the body read, the commit and the answer. It
	// exceeds ServerReadTimeout + DefaultCommitTimeout, so a request that
	// committed gets its 200 out.
	ServerWriteTimeout = 60 * time.Second
	// ServerIdleTimeout bounds a kept-alive connection between requests.
	ServerIdleTimeout = 2 * time.Minute
	// ServerMaxHeaderBytes bounds the request headers: Auth0 sends a few
	// and the Authorization token.
	ServerMaxHeaderBytes = 64 << 10
)

// NewServer returns the *http.Server for the receiver's own listener on
// addr (AUTHPIPE_STREAM_LISTEN), with the bounds above; the request body
// is bounded by the receiver itself (Config.MaxBodyBytes, through
// http.MaxBytesReader). The server's own errors (malformed requests, broken
// connections) go to log at debug: they are the internet's, not ours.
func NewServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	inject.Defaults(&log, nil, nil)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ServerReadHeaderTimeout,
		ReadTimeout:       ServerReadTimeout,
		WriteTimeout:      ServerWriteTimeout,
		IdleTimeout:       ServerIdleTimeout,
		MaxHeaderBytes:    ServerMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("component", "stream").Handler(), slog.LevelDebug),
	}
}
