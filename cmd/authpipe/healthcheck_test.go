package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
)

func TestHealthcheckCommand(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/healthy" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	closed := e2etest.FreeAddr(t)

	cases := []struct {
		name   string
		status int
		args   []string
		want   int
	}{
		{"healthy", http.StatusOK, []string{srv.URL + "/-/healthy"}, 0},
		{"unhealthy status", http.StatusServiceUnavailable, []string{srv.URL + "/-/healthy"}, 1},
		{"wrong path", http.StatusOK, []string{srv.URL + "/nope"}, 1},
		{"nothing listening", http.StatusOK, []string{"--timeout", "1s", "http://" + closed + "/-/healthy"}, 1},
		{"two URLs", http.StatusOK, []string{srv.URL, srv.URL}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			var stdout, stderr bytes.Buffer
			got := cli(append([]string{"healthcheck"}, tc.args...), &stdout, &stderr)
			require.Equal(t, tc.want, got, "stdout %q stderr %q", stdout.String(), stderr.String())
		})
	}
}

func TestHealthURL(t *testing.T) {
	cases := []struct{ listen, want string }{
		{"", "http://127.0.0.1:9464/-/healthy"},
		{":9464", "http://127.0.0.1:9464/-/healthy"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/-/healthy"},
		{"[::]:8080", "http://127.0.0.1:8080/-/healthy"},
		{"10.1.2.3:9000", "http://10.1.2.3:9000/-/healthy"},
		{"[::1]:9000", "http://[::1]:9000/-/healthy"},
	}
	for _, tc := range cases {
		got, err := healthURL(tc.listen)
		require.NoError(t, err, tc.listen)
		require.Equal(t, tc.want, got, tc.listen)
	}
	_, err := healthURL("9464")
	require.ErrorContains(t, err, "AUTHPIPE_LISTEN")
}
