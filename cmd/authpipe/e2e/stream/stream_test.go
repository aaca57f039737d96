package stream

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// pushTotal is how many logs the stream pushes per content format.
const pushTotal = 20_000

// TestE2EStreamAndPollerDeliverEveryLogOnce: the simulator's Log Stream
// pushes 20,000 logs, in each content format, with 5 % of its deliveries
// dropped for good, while the poller polls the same logs at its slow
// interval (the stream is healthy). Every log reaches Segment once by
// messageId, each stored first by exactly one of the two sources, and the
// stream's missed counter equals the logs it dropped — the poller found
// them all. When the stream falls silent the poller returns to
// AUTH0_POLL_INTERVAL within the healthy window.
func TestE2EStreamAndPollerDeliverEveryLogOnce(t *testing.T) {
	addr := testredis.Addr(t)
	for i, format := range sim.StreamFormats {
		t.Run(string(format), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, addr,
				"AUTHPIPE_STREAM_POLL_INTERVAL=2s",
				// Also the grace within which a log pushed after the
				// poller stored it is not missed: well above the
				// stream's lag on a loaded test machine (CI runs the
				// e2e packages in parallel on 2 CPUs; 20 s was tight).
				"AUTHPIPE_STREAM_HEALTHY_WINDOW=60s",
				"AUTH0_LOG_RETENTION=24h")
			w.start()
			all := w.warmUp(format)

			s := w.newStream(sim.StreamOptions{Format: format, DropRate: 0.05, Seed: uint64(i + 1)})
			// 20,000 logs over about 20 s (1,000 a second), dated as they
			// are added.
			for added := 0; added < pushTotal; added += 100 {
				all = append(all, w.add(100)...)
				time.Sleep(100 * time.Millisecond)
			}
			e2etest.WaitFor(t, 90*time.Second, func() bool { return s.Stats().Pending == 0 },
				func() string { return fmt.Sprintf("stream: %+v", s.Stats()) })
			require.Equal(t, 2.0, w.metric("authpipe_auth0_poll_interval_seconds"), "the poller runs at its slow interval while the stream delivers")
			st := s.Stats()
			dropped := s.Dropped()
			require.Equal(t, pushTotal, st.Offered)
			require.Len(t, dropped, st.Dropped)
			require.Equal(t, pushTotal, st.Delivered+st.Dropped)
			require.Greater(t, st.Dropped, pushTotal/100, "some 5 % of the deliveries dropped")
			t.Logf("%s: %d logs pushed in %d deliveries, %d dropped for good", format, st.Delivered, st.Deliveries, st.Dropped)

			e2etest.WaitDelivered(t, w.segment, w.env.Tenant, all, 90*time.Second)
			dup := e2etest.RequireExactlyOnceByMessageID(t, w.segment, w.env.Tenant, all)
			require.Zero(t, dup, "each log stored once, sent once")

			// Each log was stored first by exactly one source.
			streamFirst := w.metric(`authpipe_stream_events_total{outcome="new"`)
			pollerFirst := w.metric("authpipe_auth0_events_first_total")
			require.Equal(t, float64(len(all)), streamFirst+pollerFirst)
			require.GreaterOrEqual(t, pollerFirst, float64(len(dropped)), "the poller stored what the stream dropped")

			// The dropped logs are counted as missed once their grace has
			// passed; nothing else is.
			missed := func() float64 { return w.metric("authpipe_stream_missed_events_total") }
			e2etest.WaitFor(t, 120*time.Second, func() bool { return missed() >= float64(len(dropped)) },
				func() string { return fmt.Sprintf("missed %v of %d dropped", missed(), len(dropped)) })
			time.Sleep(time.Second)
			require.Equal(t, float64(len(dropped)), missed(), "missed = dropped")
			t.Logf("%s: stream first %v, poller first %v, missed %v", format, streamFirst, pollerFirst, missed())

			// Silence: the poller is back at AUTH0_POLL_INTERVAL (200ms)
			// within the healthy window (60s), not after its slow wait.
			s.stop()
			e2etest.WaitFor(t, 90*time.Second, func() bool { return w.metric("authpipe_auth0_poll_interval_seconds") == 0.2 },
				func() string { return "the poller stayed at its slow interval" })
			w.requireNoStreamSecrets()
		})
	}
}
