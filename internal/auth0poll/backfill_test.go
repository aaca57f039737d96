package auth0poll

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// backfill runs p.Backfill while driving the fake clock (retries and
// rate-limit waits sleep on it).
func (h *harness) backfill(p *Poller, since, until time.Time) (BackfillResult, []BackfillResult, error) {
	h.t.Helper()
	type out struct {
		res BackfillResult
		err error
	}
	done := make(chan out, 1)
	var steps []BackfillResult
	go func() {
		res, err := p.Backfill(context.Background(), since, until, func(r BackfillResult) { steps = append(steps, r) })
		done <- out{res, err}
	}()
	var o out
	h.drive("backfill", func() bool {
		select {
		case o = <-done:
			return true
		default:
			return false
		}
	})
	return o.res, steps, o.err
}

// inWindow returns the simulator's log_ids of [since, until).
func (h *harness) inWindow(since, until time.Time) []string {
	from, to := auth0log.CheckpointAt(since), auth0log.CheckpointAt(until)
	return slices.DeleteFunc(h.auth0.LogIDs(), func(id string) bool { return id < from || id >= to })
}

func TestBackfill(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.auth0.FailEveryN(4, http.StatusInternalServerError)
	now := h.clock.Now()
	h.addEvents(300, now.Add(-3*time.Hour), 35*time.Second)
	// The worker started late: its checkpoint is 30 minutes ago, so what
	// came before is not buffered.
	skip := auth0log.CheckpointAt(now.Add(-30 * time.Minute))
	_, err := h.buf.Append(context.Background(), nil, skip)
	require.NoError(t, err)
	p, _ := h.newPoller(func(c *Config) { c.PageSize = 20 })

	since, until := now.Add(-2*time.Hour), now.Add(-time.Hour)
	want := h.inWindow(since, until)
	require.Greater(t, len(want), 60, "several pages")
	res, steps, err := h.backfill(p, since, until)
	require.NoError(t, err)
	require.True(t, res.Done)
	require.Equal(t, len(want), res.Fetched)
	require.Equal(t, len(want), res.Added)
	require.Equal(t, want, h.streamIDs(), "exactly the window, in order")
	require.Equal(t, skip, h.checkpoint(), "the checkpoint never moves")
	require.Len(t, steps, res.Pages+boolInt(len(want)%20 == 0))
	for i := 1; i < len(steps); i++ {
		require.GreaterOrEqual(t, steps[i].Fetched, steps[i-1].Fetched)
		require.False(t, steps[i].Position.Before(steps[i-1].Position))
	}

	// Again, and over a wider window up to now: dedupe absorbs the repeats.
	res, _, err = h.backfill(p, since, until)
	require.NoError(t, err)
	require.Equal(t, len(want), res.Fetched)
	require.Zero(t, res.Added)
	all := h.inWindow(since, now.Add(time.Minute))
	res, _, err = h.backfill(p, since, time.Time{})
	require.NoError(t, err)
	require.Equal(t, len(all), res.Fetched)
	require.Equal(t, len(all)-len(want), res.Added)
	require.ElementsMatch(t, all, h.streamIDs())
	require.Equal(t, skip, h.checkpoint())
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestBackfillRefuses(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	now := h.clock.Now()
	h.addEvents(10, now.Add(-time.Hour), time.Minute)
	p, _ := h.newPoller(func(c *Config) { c.Retention = 24 * time.Hour })
	tests := []struct {
		name         string
		since, until time.Time
		want         string
	}{
		{"before retention", now.Add(-25 * time.Hour), time.Time{}, "starts before Auth0's log retention"},
		{"empty window", now.Add(-time.Hour), now.Add(-time.Hour), "is not before until"},
		{"reversed window", now.Add(-time.Hour), now.Add(-2 * time.Hour), "is not before until"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Backfill(context.Background(), tt.since, tt.until, nil)
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := p.Backfill(context.Background(), now.Add(-25*time.Hour), time.Time{}, nil)
	require.ErrorIs(t, err, ErrBeyondRetention)
	require.Empty(t, h.requestedFroms(), "nothing asked of Auth0")
	require.Zero(t, h.streamLen())

	// The edge of the retention, as "--since 24h" computes it, is fine.
	res, _, err := h.backfill(p, now.Add(-24*time.Hour).Add(-time.Second), time.Time{})
	require.NoError(t, err)
	require.Equal(t, 10, res.Added)
}

// TestBackfillGivesUp: a page that keeps failing ends the backfill with the
// error and the progress so far, the secret redacted.
func TestBackfillGivesUp(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	now := h.clock.Now()
	h.addEvents(50, now.Add(-time.Hour), time.Minute)
	p, _ := h.newPoller(func(c *Config) { c.PageSize = 10; c.MaxBackoff = 2 * time.Second })
	h.auth0.FailEveryN(1, http.StatusServiceUnavailable)
	res, _, err := h.backfill(p, now.Add(-2*time.Hour), time.Time{})
	require.ErrorContains(t, err, "8 attempts failed")
	require.NotContains(t, err.Error(), testSecret)
	require.False(t, res.Done)
	require.Zero(t, res.Fetched)
	require.Len(t, h.requestedFroms(), backfillMaxAttempts)
}
