package admin_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
)

// frontServer serves the world's API behind Front as the worker does: the
// listener, ConnState and ConnContext hooks wired, headers bounded.
func frontServer(t *testing.T, w *world) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "metrics") })
	front := admin.NewFront(mux, w.api, admin.FrontConfig{MaxBodyBytes: 1024})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{
		Handler: front, MaxHeaderBytes: 16 << 10, ReadHeaderTimeout: 5 * time.Second,
		ConnState: front.ConnState, ConnContext: front.ConnContext,
	}
	go func() { _ = srv.Serve(front.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// raw sends bytes on a new connection and returns the status line of the
// answer.
func raw(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, req)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
		require.NoError(t, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line)
}

// TestRefusalsBeforeTheMux: what net/http answers itself (431, 400, 501,
// 505, 417) and what Front refuses (a path the mux would redirect, a body
// above the bound) are audited, once each; answers of handlers are not
// taken for the server's, on the same connection either.
func TestRefusalsBeforeTheMux(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	addr := frontServer(t, w)
	big := strings.Repeat("a", 1400<<10)
	tests := []struct {
		name, req, status, reason string
	}{
		{"oversize headers (1.4 MB)", "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + staticToken + "\r\nX-Big: " + big + "\r\n\r\n",
			"HTTP/1.1 431 Request Header Fields Too Large", admin.ReasonHeaderTooLarge},
		{"unparsable request", "GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request", admin.ReasonBadRequest},
		{"no Host", "GET /api/v1/status HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request: missing required Host header", admin.ReasonBadRequest},
		{"unknown transfer encoding", "POST /api/v1/dlq/drop HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501 Not Implemented", admin.ReasonUnsupportedEncoding},
		{"HTTP version", "GET /api/v1/status HTTP/3.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version", admin.ReasonHTTPVersion},
		{"unknown expectation", "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", "HTTP/1.1 417 Expectation Failed", admin.ReasonExpectationFailed},
		{"path the mux would redirect", "GET /api/v1//dlq HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + staticToken + "\r\n\r\n", "HTTP/1.1 400 Bad Request", admin.ReasonBadPath},
		{"dot segment", "GET /api/v1/./dlq HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 Bad Request", admin.ReasonBadPath},
		{"body above the bound", "POST /api/v1/dlq/drop HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n", "HTTP/1.1 413 Request Entity Too Large", admin.ReasonBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(w.audits())
			require.Equal(t, tt.status, raw(t, addr, tt.req))
			require.Eventually(t, func() bool { return len(w.audits()) > before }, 5*time.Second, 10*time.Millisecond)
			entries := w.audits()
			require.Len(t, entries, before+1, "one entry per refusal")
			e := entries[before]
			requireAuditFields(t, e)
			require.Equal(t, admin.OutcomeDenied, e["outcome"])
			require.Equal(t, tt.reason, e["reason"])
			var code int
			_, err := fmt.Sscanf(tt.status, "HTTP/1.1 %d", &code)
			require.NoError(t, err)
			require.EqualValues(t, code, e["status"])
			require.NotEmpty(t, e["remote_addr"])
			if tt.reason == admin.ReasonBadPath && strings.Contains(tt.req, "Bearer") {
				require.Equal(t, thumb(staticToken), e["token_thumbprint"])
				require.Equal(t, "/api/v1//dlq", e["path"])
			}
		})
	}

	// A served request, then an oversize one on the same connection: two
	// entries, the first the handler's.
	before := len(w.audits())
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	br := bufio.NewReader(c)
	_, err = io.WriteString(c, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+staticToken+"\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.Equal(t, 200, resp.StatusCode)
	_, _ = io.WriteString(c, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 431 Request Header Fields Too Large", strings.TrimSpace(line))
	require.Eventually(t, func() bool { return len(w.audits()) == before+2 }, 5*time.Second, 10*time.Millisecond)
	entries := w.audits()
	require.Equal(t, admin.OutcomeAllowed, entries[before]["outcome"])
	require.Equal(t, admin.ReasonHeaderTooLarge, entries[before+1]["reason"])

	// Open endpoints stay out of the trail.
	before = len(w.audits())
	require.Equal(t, "HTTP/1.1 200 OK", raw(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.Len(t, w.audits(), before)
	w.requireChainsIntact()
}

// TestBodyBoundWhenRead: a body without a declared length is cut at the
// bound when the handler reads it.
func TestBodyBoundWhenRead(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	addr := frontServer(t, w)
	body := `{"ids":["` + strings.Repeat("1", 2000) + `-0"]}`
	req := "POST /api/v1/dlq/drop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + staticToken + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	require.Equal(t, "HTTP/1.1 400 Bad Request", raw(t, addr, req))
	e := w.lastAudit()
	require.Equal(t, admin.OpDLQDrop, e["operation"])
	require.EqualValues(t, 400, e["status"])
}
