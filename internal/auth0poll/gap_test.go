package auth0poll

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// TestRetentionGapWhilePaused: Segment is down for a week, the buffer is
// full and polling paused. Auth0 deletes what it held meanwhile: the gap is
// reported while still paused (when it begins, not when polling resumes),
// once, and polling then continues with newer events.
func TestRetentionGapWhilePaused(t *testing.T) {
	h := newHarness(t, harnessOpts{maxEvents: 100})
	old := h.addEvents(300, h.clock.Now().Add(-day), time.Minute)
	p, _ := h.newPoller(nil)
	h.step = time.Hour
	h.run(p)
	h.drive("paused", func() bool { return testutil.ToFloat64(p.m.paused) == 1 })
	require.Equal(t, old[:100], h.streamIDs())
	cpTime, err := auth0log.IDTime(old[99])
	require.NoError(t, err)

	h.drive("gap while paused", func() bool { return testutil.ToFloat64(p.m.gaps) == 1 })
	require.Equal(t, 1.0, testutil.ToFloat64(p.m.paused), "still paused")
	recs := h.logRecords("auth0 logs lost to retention: checkpoint is older than the retention window")
	require.Len(t, recs, 1)
	require.Equal(t, cpTime.Format(time.RFC3339), recs[0]["lost_from"])
	lostUntil, err := time.Parse(time.RFC3339, recs[0]["lost_until"].(string))
	require.NoError(t, err)
	behind := lostUntil.Sub(cpTime)
	require.GreaterOrEqual(t, behind, gapSlack, "no gap before the checkpoint falls behind the retention")
	require.LessOrEqual(t, behind, gapSlack+h.step+testInterval, "reported at the first check after, while paused")

	end := h.clock.Now().Add(day)
	h.drive("another day paused", func() bool { return !h.clock.Now().Before(end) })
	require.Equal(t, 1.0, testutil.ToFloat64(p.m.gaps), "one gap per episode")

	// Segment is back: the backlog drains and polling resumes with what
	// Auth0 still holds, then newer events.
	ctx := context.Background()
	require.NoError(t, h.buf.EnsureGroup(ctx, "fw"))
	consume := func() {
		entries, err := h.buf.Read(ctx, "fw", "c1", 500, 10*time.Millisecond)
		require.NoError(t, err)
		for _, e := range entries {
			require.NoError(t, h.buf.Ack(ctx, "fw", e.ID))
		}
	}
	h.step = time.Second
	newer := h.addEvents(30, h.clock.Now(), time.Second)
	h.drive("newer events", func() bool {
		consume()
		return h.streamLen() >= 100+len(newer)
	})
	require.Equal(t, append(append([]string(nil), old[:100]...), newer...), h.streamIDs(), "the rest of the old events aged out")
	require.Equal(t, 1.0, testutil.ToFloat64(p.m.gaps))
	require.Len(t, h.logRecords("auth0 polling resumed after a retention gap; logs in between are lost"), 1)
}
