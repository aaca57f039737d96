package auth0poll

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProgressLines: the first start logs the end of its backfill of the
// retention window with its counts and one "caught up"; polling at the head
// logs nothing more however long it goes on; an Auth0 outage logs its first
// failure, one "behind" line and, once the poller is back at the head, one
// "recovered" and one "caught up" with what it fetched on the way.
func TestProgressLines(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ids := h.addEvents(250, h.clock.Now().Add(-24*time.Hour), time.Minute)
	p, _ := h.newPoller(nil)
	h.run(p)
	caughtUp := func() int { return len(h.logRecords("auth0 poller caught up")) }
	h.drive("backfill", func() bool { return caughtUp() == 1 })

	done := h.logRecords("auth0 backfill done")
	require.Len(t, done, 1)
	require.Equal(t, float64(len(ids)), done[0]["fetched"])
	require.Equal(t, float64(len(ids)), done[0]["added"])
	require.Equal(t, float64(0), done[0]["duplicates"])
	require.Equal(t, h.t0.Add(-DefaultRetention).UTC().Format(time.RFC3339), done[0]["backfill_since"])
	require.Contains(t, done[0], "backfill_until")
	up := h.logRecords("auth0 poller caught up")[0]
	require.Equal(t, float64(len(ids)), up["fetched"])
	require.Equal(t, ids[len(ids)-1], up["checkpoint"])

	// Five minutes at the head, with events every poll: no new line.
	for range 30 {
		n := polled(p)
		h.addEvents(3, h.clock.Now(), time.Second)
		h.drive("tail", func() bool { return polled(p) >= n+3 })
	}
	require.Equal(t, 1, caughtUp(), "caught up is logged once per transition, not every poll")
	require.Empty(t, h.logRecords("auth0 poller behind the head of the logs; catching up"))
	require.Len(t, h.logRecords("auth0 backfill done"), 1)

	// Auth0 fails every request for a while: behind once, then caught up once.
	h.auth0.FailEveryN(1, http.StatusServiceUnavailable)
	start := h.clock.Now()
	h.drive("outage", func() bool { return h.clock.Since(start) > 3*time.Minute })
	require.Len(t, h.logRecords("auth0 poller behind the head of the logs; catching up"), 1)
	require.Equal(t, 1, caughtUp())
	fails := h.logRecords("auth0 poll attempt failed; retrying the same page")
	require.Len(t, fails, 1, "the outage's first failure is logged; its repeats are counted")
	summaries := h.logRecords("auth0 poll attempt failed; retrying the same page: still failing")
	require.NotEmpty(t, summaries, "a summary a minute while it lasts")
	require.LessOrEqual(t, len(summaries), 3)
	for _, s := range summaries {
		require.Greater(t, s["failures"], float64(1))
	}

	h.auth0.FailEveryN(0, 0)
	more := h.addEvents(120, h.clock.Now(), time.Second)
	n := polled(p)
	h.drive("catch-up", func() bool { return caughtUp() == 2 })
	require.Equal(t, n+float64(len(more)), polled(p))
	up = h.logRecords("auth0 poller caught up")[1]
	require.Equal(t, float64(len(more)), up["fetched"])
	rec := h.logRecords("auth0 polling recovered")
	require.Len(t, rec, 1)
	require.Equal(t, actFetch, rec[0]["action"])
	require.Greater(t, rec[0]["failures"], float64(len(summaries)))
	require.Len(t, h.logRecords("auth0 backfill done"), 1, "only the first start backfills the retention window")
}
