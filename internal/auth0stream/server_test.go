package auth0stream_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/sim"
)

// TestSeriesAtZero: every series of a tenant exists from the start, and
// requests to unknown paths have one series, under tenant "".
func TestSeriesAtZero(t *testing.T) {
	f := newFixture(t, auth0stream.Config{}, tenant("acme", backends[1].open(t, buffer.Config{})))
	want := `
# HELP authpipe_stream_events_total Log events received by the Log Streams receiver, by outcome: new and duplicate were committed (200); full and unavailable were answered 503 for Auth0 to retry.
# TYPE authpipe_stream_events_total counter
authpipe_stream_events_total{outcome="duplicate",tenant="acme"} 0
authpipe_stream_events_total{outcome="full",tenant="acme"} 0
authpipe_stream_events_total{outcome="new",tenant="acme"} 0
authpipe_stream_events_total{outcome="unavailable",tenant="acme"} 0
# HELP authpipe_stream_last_event_timestamp_seconds Time the receiver last committed a request with events (new or duplicate) for the tenant, Unix seconds; 0 until then.
# TYPE authpipe_stream_last_event_timestamp_seconds gauge
authpipe_stream_last_event_timestamp_seconds{tenant="acme"} 0
# HELP authpipe_stream_requests_total Log Streams requests answered, by tenant, status code and outcome.
# TYPE authpipe_stream_requests_total counter
authpipe_stream_requests_total{code="200",outcome="ok",tenant="acme"} 0
authpipe_stream_requests_total{code="400",outcome="bad_request",tenant="acme"} 0
authpipe_stream_requests_total{code="401",outcome="unauthorized",tenant="acme"} 0
authpipe_stream_requests_total{code="404",outcome="not_found",tenant=""} 0
authpipe_stream_requests_total{code="405",outcome="method_not_allowed",tenant="acme"} 0
authpipe_stream_requests_total{code="413",outcome="too_large",tenant="acme"} 0
authpipe_stream_requests_total{code="503",outcome="full",tenant="acme"} 0
authpipe_stream_requests_total{code="503",outcome="unavailable",tenant="acme"} 0
`
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(want)))
}

// TestNewServerBounds: the server has the documented bounds.
func TestNewServerBounds(t *testing.T) {
	srv := auth0stream.NewServer(":9465", http.NotFoundHandler(), nil)
	require.Equal(t, ":9465", srv.Addr)
	require.Equal(t, 10*time.Second, srv.ReadHeaderTimeout)
	require.Equal(t, 30*time.Second, srv.ReadTimeout)
	require.Equal(t, 60*time.Second, srv.WriteTimeout)
	require.Equal(t, 2*time.Minute, srv.IdleTimeout)
	require.Equal(t, 64<<10, srv.MaxHeaderBytes)
	require.Greater(t, srv.WriteTimeout, srv.ReadTimeout+auth0stream.DefaultCommitTimeout,
		"a request that committed must get its answer out")
}

// serve runs the receiver behind NewServer on a real listener, with the
// read timeout shortened, and returns the address.
func serve(t *testing.T, f *fixture, readTimeout time.Duration) string {
	t.Helper()
	srv := auth0stream.NewServer("127.0.0.1:0", f.recv, nil)
	srv.ReadTimeout = readTimeout
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestServerStalledBody: a client that stops sending its body halfway is
// cut off at the read timeout with a 400, and nothing is stored.
func TestServerStalledBody(t *testing.T) {
	b := backends[1].open(t, buffer.Config{})
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
	logs := f.events(2)
	body := sim.StreamBody(sim.StreamJSONLines, logs)
	addr := serve(t, f, 300*time.Millisecond)

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /auth0/logs HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n%s",
		token, len(body), body[:len(body)/2])
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, 1.0, f.requests("acme", auth0stream.OutcomeBadRequest, 400))
	requireNothingStored(t, b, logs)
}

// TestServerHugeHeader: headers beyond MaxHeaderBytes are refused by the
// server before the receiver sees them.
func TestServerHugeHeader(t *testing.T) {
	b := backends[1].open(t, buffer.Config{})
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
	addr := serve(t, f, time.Second)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/auth0/logs", strings.NewReader("[]"))
	require.NoError(t, err)
	req.Header.Set("Authorization", token+strings.Repeat("x", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	require.Zero(t, f.requests("acme", auth0stream.OutcomeUnauthorized, 401))
}
