package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/status"
)

// listen builds the HTTP server on AUTHPIPE_LISTEN: the mux (status page,
// metrics, probes, profiles), behind admin.Front, which routes /api/ to the
// admin API and audits every refusal before the mux, with the timeouts and
// bounds of config.HTTP. It opens the audit trail when the admin API is on.
func (a *App) listen() (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	mux.Handle("/", status.NewHandler(a.reg, status.Options{Retention: a.cfg.Auth0.LogRetention}))
	mux.Handle("/metrics", getOnly(promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg})))
	mux.Handle("/-/healthy", getOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "authpipe is healthy")
	})))
	mux.Handle("/-/ready", getOnly(http.HandlerFunc(a.serveReady)))
	if a.cfg.Pprof {
		// The handlers net/http/pprof registers on http.DefaultServeMux,
		// mounted on this mux only when asked for (AUTHPIPE_PPROF).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	api, err := a.adminHandler()
	if err != nil {
		return nil, nil, err
	}
	front := admin.NewFront(mux, api, admin.FrontConfig{MaxBodyBytes: a.cfg.HTTP.MaxBodyBytes})
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on AUTHPIPE_LISTEN %s: %w", a.cfg.Listen, err)
	}
	return newHTTPServer(a.cfg.HTTP, front, a.logger), front.Listener(ln), nil
}

func (a *App) serveReady(w http.ResponseWriter, _ *http.Request) {
	switch {
	case a.draining.Load():
		http.Error(w, "authpipe is shutting down", http.StatusServiceUnavailable)
	case !a.bufOK.Load():
		http.Error(w, "authpipe is not ready: the buffer has not answered", http.StatusServiceUnavailable)
	case a.waitingForAuth0() != "":
		http.Error(w, "authpipe is not ready: Auth0 has not answered (tenant "+a.waitingForAuth0()+")", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "authpipe is ready")
	}
}

// newHTTPServer is the worker's HTTP server: every timeout and bound of
// config.HTTP set, net/http's own messages in the JSON log, and front's
// hooks, which audit the answers net/http writes itself (431 …). Serve it
// on front.Listener.
func newHTTPServer(c config.HTTP, front *admin.Front, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           front,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ConnState:         front.ConnState,
		ConnContext:       front.ConnContext,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// serveHTTP is the actor of an HTTP server: it serves ln until ctx ends,
// then shuts the server down gracefully — requests in flight finish —
// until stopBy ends, and closes what is left.
func serveHTTP(srv *http.Server, ln net.Listener, stopBy func() context.Context) func(context.Context) error {
	return func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err) // never http.ErrServerClosed: nothing else shuts it down
		case <-ctx.Done():
		}
		err := srv.Shutdown(stopBy())
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = srv.Close() // the deadline passed: cut the connections left
		}
		<-served
		if err != nil {
			return fmt.Errorf("shut down: %w", err)
		}
		return nil
	}
}

// getOnly serves GET and HEAD; other methods get 405.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}
