package auth0stream_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// BenchmarkReceiveRedis measures the events per second the receiver
// accepts into a Redis buffer over real HTTP (loopback, keep-alive), from
// parallel clients, each request a batch of new events in JSON Lines: the
// whole path of a push, parse, dedupe read, atomic append, answer.
func BenchmarkReceiveRedis(b *testing.B) {
	a := sim.NewAuth0(sim.Auth0Options{})
	tmplID := a.Add(sim.Event{Type: "fp", UserName: "user1@example.com", IP: "203.0.113.7",
		UserAgent: "Chrome 120.0.0 / Mac OS X 10.15.7", ClientID: "kJ8bW2xQ9mZt4LpR7vYc3NdE6sHfA1gU",
		ClientName: "Storefront Web", Connection: "Username-Password-Authentication",
		Details: map[string]any{"error": map[string]any{"message": "Wrong email or password."}}})[0]
	tmpl, _ := a.Log(tmplID)
	stamp := time.Now().UTC().Format("20060102150405")

	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			buf := openRedis(b, redisClient(b, testredis.Addr(b)), buffer.Config{})
			recv, err := auth0stream.New([]auth0stream.Tenant{{Name: "acme", Token: token, Buffer: buf}},
				auth0stream.Config{}, auth0stream.Deps{})
			require.NoError(b, err)
			srv := httptest.NewServer(recv)
			defer srv.Close()
			var seq atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				client := srv.Client()
				logs := make([]sim.RawLog, batch)
				for pb.Next() {
					last := seq.Add(int64(batch))
					for i := range logs {
						id := fmt.Sprintf("900%s%039d", stamp, last-int64(i))
						logs[i] = sim.RawLog{ID: id, JSON: bytes.Replace(tmpl, []byte(tmplID), []byte(id), 1)}
					}
					req, _ := http.NewRequest(http.MethodPost, srv.URL+auth0stream.PathPrefix,
						bytes.NewReader(sim.StreamBody(sim.StreamJSONLines, logs)))
					req.Header.Set("Authorization", token)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(seq.Load())/b.Elapsed().Seconds(), "events/s")
		})
	}
}
