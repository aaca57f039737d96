package pipeline

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/config"
)

// TestHTTPServer: the worker's HTTP server has every timeout set from the
// configuration; a client sending its body slowly is cut off within the
// read timeout, with or without a token (raw TCP); the probes and
// /metrics answer GET and HEAD only.
func TestHTTPServer(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTP.ReadTimeout = time.Second
	cfg.HTTP.ReadHeaderTimeout = 500 * time.Millisecond
	cfg.HTTP.WriteTimeout = 3 * time.Second
	cfg.HTTP.IdleTimeout = 4 * time.Second
	cfg.HTTP.MaxHeaderBytes = 8 << 10
	a := &App{cfg: &cfg, logger: slog.New(slog.DiscardHandler), reg: prometheus.NewRegistry()}
	srv, ln, err := a.listen()
	require.NoError(t, err)
	require.Equal(t, time.Second, srv.ReadTimeout)
	require.Equal(t, 500*time.Millisecond, srv.ReadHeaderTimeout)
	require.Equal(t, 3*time.Second, srv.WriteTimeout)
	require.Equal(t, 4*time.Second, srv.IdleTimeout)
	require.Equal(t, 8<<10, srv.MaxHeaderBytes)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	for _, auth := range []string{"", "Authorization: Bearer some-token-0123456789\r\n"} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		start := time.Now()
		_, err = io.WriteString(c, "POST /api/v1/dlq/drop HTTP/1.1\r\nHost: x\r\n"+auth+"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
		require.NoError(t, err)
		closed := make(chan time.Duration, 1)
		go func() {
			_, _ = io.Copy(io.Discard, c) // until the server closes
			closed <- time.Since(start)
		}()
		// One byte every 100 ms would take 100 s.
		tick := time.NewTicker(100 * time.Millisecond)
		giveUp := time.NewTimer(20 * time.Second)
		var took time.Duration
	send:
		for {
			select {
			case took = <-closed:
				break send
			case <-tick.C:
				_, _ = c.Write([]byte("x"))
			case <-giveUp.C:
				t.Fatal("the slow client was not cut off")
			}
		}
		tick.Stop()
		giveUp.Stop()
		_ = c.Close()
		require.Less(t, took, 3*time.Second, "cut off after the 1s read timeout, not after the body")
	}

	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/metrics", 200}, {"HEAD", "/metrics", 200}, {"POST", "/metrics", 405}, {"PUT", "/metrics", 405},
		{"GET", "/-/healthy", 200}, {"HEAD", "/-/healthy", 200}, {"POST", "/-/healthy", 405}, {"DELETE", "/-/ready", 405},
		{"GET", "/metrics/../metrics", 400},
	} {
		req, err := http.NewRequest(tt.method, "http://"+addr+tt.path, nil)
		require.NoError(t, err)
		if tt.want == 400 {
			req.URL.Opaque = tt.path // sent as is
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tt.want, resp.StatusCode, "%s %s", tt.method, tt.path)
		if tt.want == 405 {
			require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
		}
	}
}
