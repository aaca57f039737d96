package auth0stream_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
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

// BenchmarkWatchStreamDown: the poller's report of one page of 100 logs
// found first while the stream is silent, at an Enterprise tenant's 1,600
// logs a second with the default 2m grace (some 192,000 logs held).
func BenchmarkWatchStreamDown(b *testing.B) {
	clock := clockwork.NewFakeClock()
	w, err := auth0stream.NewWatch("acme", auth0stream.WatchConfig{}, prometheus.NewRegistry(), clock)
	require.NoError(b, err)
	w.Committed(auth0stream.Commit{Tenant: "acme", At: clock.Now(), Logs: []auth0log.Log{{ID: "first", Date: clock.Now()}}})
	const perPage, perSecond = 100, 1600
	page := func(n int) []auth0log.Log {
		out := make([]auth0log.Log, perPage)
		for i := range out {
			out[i] = auth0log.Log{ID: strconv.Itoa(n*perPage + i), Date: clock.Now()}
		}
		return out
	}
	step := time.Second * perPage / perSecond
	n := 0
	for ; time.Duration(n)*step < auth0stream.DefaultGrace; n++ { // fill the grace
		w.PolledFirst(page(n), clock.Now())
		clock.Advance(step)
	}
	pages := make([][]auth0log.Log, b.N)
	for i := range pages {
		pages[i] = page(n + i)
	}
	b.ResetTimer()
	for i := range b.N {
		w.PolledFirst(pages[i], clock.Now())
		clock.Advance(step)
	}
}
