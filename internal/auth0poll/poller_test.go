package auth0poll

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/testredis"
)

const day = 24 * time.Hour

func TestFirstStartBackfillsRetentionWindow(t *testing.T) {
	// Auth0 keeps 10 days here, the poller is configured for 6: the first
	// start must take exactly what lies within its own window.
	h := newHarness(t, harnessOpts{simRetention: 10 * day})
	now := h.clock.Now()
	tooOld := h.addEvents(30, now.Add(-8*day), time.Minute)
	want := h.addEvents(250, now.Add(-6*day+time.Hour), 20*time.Minute)
	require.Len(t, h.auth0.LogIDs(), 280, "simulator must still hold the old events")

	p, _ := h.newPoller(nil)
	require.False(t, p.Ready())
	require.Zero(t, testutil.ToFloat64(p.m.stage.Received))
	h.run(p)
	h.drive("backfill", func() bool { return polled(p) >= float64(len(want)) })

	require.Equal(t, want, h.streamIDs(), "exactly the retained window, in order, once")
	for _, id := range tooOld {
		require.NotContains(t, h.streamIDs(), id)
	}
	require.Equal(t, want[len(want)-1], h.checkpoint())
	froms := h.requestedFroms()
	require.GreaterOrEqual(t, len(froms), 3)
	require.Equal(t, []string{auth0log.CheckpointAt(now.Add(-DefaultRetention)), want[99], want[199]}, froms[:3],
		"first request starts at now − retention; full pages are followed by the next one")
	require.Less(t, h.clock.Since(now), testInterval, "full pages are fetched at once, without waiting")

	require.True(t, p.Ready())
	require.False(t, p.LastSuccess().IsZero())
	require.Equal(t, 250.0, testutil.ToFloat64(p.m.polled))
	require.Equal(t, 250.0, testutil.ToFloat64(p.m.stage.Received))
	require.Equal(t, 250.0, testutil.ToFloat64(p.m.stage.Written))
	require.Equal(t, 250.0, testutil.ToFloat64(p.m.stage.Acked))
	require.Zero(t, testutil.ToFloat64(p.m.stage.Failed))
	require.Zero(t, testutil.ToFloat64(p.m.gaps), "backfilling the window is not a gap")
	require.Equal(t, float64(3), testutil.ToFloat64(p.m.requests[code2xx]))
	require.Len(t, h.logRecords("no checkpoint stored; backfilling Auth0's retention window"), 1)
}

func TestPagingUnderFaultsLosesAndDuplicatesNothing(t *testing.T) {
	cases := []struct {
		name      string
		failEvery int // every nth eligible logs request answers 500
		rate      bool
	}{
		{name: "clean"},
		{name: "every third request fails with 500", failEvery: 3},
		{name: "rate limited with a noisy neighbour", rate: true},
		{name: "500s and rate limit", failEvery: 3, rate: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			now := h.clock.Now()
			h.addEvents(3000, now.Add(-2*day), 50*time.Second)
			if tc.failEvery > 0 {
				h.auth0.FailEveryN(tc.failEvery, http.StatusInternalServerError)
			}
			drained, drained5xx := 0, 0
			if tc.rate {
				// Burst 5, one request per 10 s: any retry before the
				// reset would draw another 429.
				h.auth0.SetRateLimit(5, 6)
				n429, n5xx := h.drainBucket()
				drained, drained5xx = drained+n429, drained5xx+n5xx
			}

			p, _ := h.newPoller(func(c *Config) { c.MaxBackoff = 4 * time.Second })
			h.run(p)
			addedLive, drainedMid := false, 0
			h.drive("all events", func() bool {
				n := h.streamLen()
				if n >= 1500 && !addedLive {
					h.addEvents(500, h.clock.Now(), time.Millisecond)
					addedLive = true
				}
				if tc.rate && drainedMid < 2 && n >= 1000*(drainedMid+1) {
					n429, n5xx := h.drainBucket()
					drained, drained5xx = drained+n429, drained5xx+n5xx
					drainedMid++
				}
				return addedLive && polled(p) >= 3500
			})
			h.idle() // no request in flight while counts are compared

			all := h.auth0.LogIDs()
			require.Len(t, all, 3500)
			require.Equal(t, all, h.streamIDs(), "every event once, in order")
			require.Equal(t, all[len(all)-1], h.checkpoint())
			require.Equal(t, 3500.0, testutil.ToFloat64(p.m.polled))

			st := h.auth0.Stats()
			ours5xx := st.Failed - drained5xx
			require.Equal(t, float64(ours5xx), testutil.ToFloat64(p.m.requests[code5xx]))
			require.Equal(t, float64(ours5xx), testutil.ToFloat64(p.m.pageErrors[reasonHTTP]))
			if tc.failEvery > 0 {
				require.Positive(t, ours5xx)
			}
			ours429 := st.RateLimited - drained
			require.Equal(t, float64(ours429), testutil.ToFloat64(p.m.requests[code429]))
			if tc.rate {
				require.Positive(t, ours429, "the neighbour's draining must have cost us a 429")
				require.LessOrEqual(t, ours429, drained,
					"after a 429 the poller waits for the reset, and paces itself on remaining = 0")
				require.GreaterOrEqual(t, h.clock.Since(now), 3*time.Minute,
					"35 pages at 6/min with burst 5 take minutes")
			} else {
				require.Zero(t, ours429)
			}
			require.Zero(t, testutil.ToFloat64(p.m.gaps))
			require.Zero(t, testutil.ToFloat64(p.m.pageErrors[reasonDecode]))
		})
	}
}

func TestUndecodablePageIsRetriedNeverSkipped(t *testing.T) {
	cases := []struct {
		name      string
		setup     func(h *harness, corrupt *atomic.Int32)
		wantIndex bool // the error log names the event's index in the page
	}{
		{
			name: "body is not valid JSON",
			setup: func(h *harness, _ *atomic.Int32) {
				h.auth0.MalformedNext(1)
			},
		},
		{
			name: "one event has no valid date",
			setup: func(h *harness, corrupt *atomic.Int32) {
				corrupt.Store(1)
			},
			wantIndex: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var corrupt atomic.Int32 // logs responses still to corrupt
			h := newHarness(t, harnessOpts{wrap: corruptDates(&corrupt)})
			ids := h.addEvents(250, h.clock.Now().Add(-day), time.Minute)
			tc.setup(h, &corrupt)

			p, _ := h.newPoller(nil)
			h.run(p)
			h.drive("backfill", func() bool { return polled(p) >= float64(len(ids)) })
			require.Equal(t, 1.0, testutil.ToFloat64(p.m.pageErrors[reasonDecode]))

			// Once more while tailing.
			tc.setup(h, &corrupt)
			more := h.addEvents(30, h.clock.Now(), time.Second)
			h.drive("tail", func() bool { return polled(p) >= float64(len(ids)+len(more)) })

			require.Equal(t, append(ids, more...), h.streamIDs(), "nothing skipped")
			require.Equal(t, 2.0, testutil.ToFloat64(p.m.pageErrors[reasonDecode]))
			require.Equal(t, float64(len(ids)+len(more)), testutil.ToFloat64(p.m.stage.Written))

			recs := h.logRecords("auth0 poll attempt failed; retrying the same page")
			require.Len(t, recs, 2)
			require.Equal(t, auth0log.CheckpointAt(h.t0.Add(-DefaultRetention)), recs[0]["from"], "the error names the page's position")
			require.Equal(t, ids[len(ids)-1], recs[1]["from"])
			for _, rec := range recs {
				require.Equal(t, "ERROR", rec["level"])
				require.Equal(t, reasonDecode, rec["reason"])
				if tc.wantIndex {
					require.Contains(t, rec, "event_index")
					require.Contains(t, rec, "after_log_id")
				}
			}
			require.NotContains(t, h.logText(), "@example.com", "event bodies must never be logged")
			require.NotContains(t, h.logText(), "203.0.113.")
		})
	}
}

// corruptDates spoils the last event's date in the next *n logs pages that
// hold events.
func corruptDates(n *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/v2/logs" || n.Load() <= 0 {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if rec.Code == http.StatusOK && bytes.Contains(body, []byte(`"date":"`)) && n.Add(-1) >= 0 {
				i := bytes.LastIndex(body, []byte(`"date":"`)) + len(`"date":"`)
				body = slices.Concat(body[:i], []byte("yesterday "), body[i:])
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
		})
	}
}

func TestTokenEndpointFailures(t *testing.T) {
	t.Run("failing at start-up recovers", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		ids := h.addEvents(120, h.clock.Now().Add(-time.Hour), time.Second)
		h.auth0.FailTokenNext(3)

		p, _ := h.newPoller(nil)
		require.Zero(t, h.auth0.Stats().TokenRequests, "New makes no network call")
		h.run(p)
		h.drive("token failure", func() bool { return testutil.ToFloat64(p.m.pageErrors[reasonToken]) >= 1 })
		require.False(t, p.Ready(), "not ready before Auth0 answered")
		h.drive("all events", func() bool { return polled(p) >= float64(len(ids)) })

		require.True(t, p.Ready())
		require.Equal(t, ids, h.streamIDs())
		require.GreaterOrEqual(t, h.auth0.Stats().TokenFailed, 3)
		require.NotContains(t, h.logText(), testSecret)
	})
	t.Run("wrong secret keeps retrying and never logs a secret", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		h.addEvents(10, h.clock.Now().Add(-time.Hour), time.Second)
		p, _ := h.newPoller(func(c *Config) { c.ClientSecret = testSecret + "-wrong" })
		h.run(p)
		h.drive("token retries", func() bool { return testutil.ToFloat64(p.m.pageErrors[reasonToken]) >= 4 })
		require.False(t, p.Ready())
		require.Zero(t, h.streamLen())
		recs := h.logRecords("auth0 poll attempt failed; retrying the same page")
		require.NotEmpty(t, recs)
		require.Equal(t, "ERROR", recs[0]["level"], "refused credentials need an operator")
		require.Equal(t, reasonToken, recs[0]["reason"])
		require.NotContains(t, h.logText(), testSecret)
		require.Zero(t, h.auth0.Stats().LogRequests, "no logs request without a token")
	})
}

func TestRevokedTokenIsReplaced(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ids := h.addEvents(150, h.clock.Now().Add(-time.Hour), time.Second)
	p, _ := h.newPoller(nil)
	h.run(p)
	h.drive("first events", func() bool { return h.streamLen() >= 150 })
	h.auth0.RevokeTokens()
	more := h.addEvents(50, h.clock.Now(), time.Second)
	h.drive("events after revocation", func() bool { return h.streamLen() >= 200 })
	require.Equal(t, append(ids, more...), h.streamIDs())
	require.Equal(t, 1.0, testutil.ToFloat64(p.m.requests[code4xx]), "one 401, then a fresh token")
}

func TestRestartContinuesFromStoredCheckpoint(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	first := h.addEvents(300, h.clock.Now().Add(-3*day), time.Minute)
	p1, _ := h.newPoller(nil)
	stop := h.run(p1)
	h.drive("first run", func() bool { return polled(p1) >= float64(len(first)) })
	h.idle()
	stop()
	servedBefore := h.auth0.Stats().EventsServed
	nFroms := len(h.requestedFroms())

	more := h.addEvents(20, h.clock.Now(), time.Second)
	p2, _ := h.newPoller(nil)
	h.run(p2)
	h.drive("second run", func() bool { return polled(p2) >= float64(len(more)) })
	h.idle()

	require.Equal(t, append(first, more...), h.streamIDs())
	require.Equal(t, first[len(first)-1], h.requestedFroms()[nFroms], "resumes at the stored checkpoint")
	require.Equal(t, 20.0, testutil.ToFloat64(p2.m.stage.Received), "nothing fetched twice")
	require.Equal(t, 20, h.auth0.Stats().EventsServed-servedBefore)
	require.Zero(t, testutil.ToFloat64(p2.m.gaps))
	require.Len(t, h.logRecords("resuming from stored checkpoint"), 1)
}

func TestRetentionGap(t *testing.T) {
	t.Run("checkpoint older than retention at restart", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		t0 := h.clock.Now()
		first := h.addEvents(100, t0.Add(-time.Hour), time.Second)
		p1, _ := h.newPoller(nil)
		stop := h.run(p1)
		h.drive("first run", func() bool { return polled(p1) >= float64(len(first)) })
		h.idle()
		stop()

		// Down for a week: Auth0 logs events meanwhile and deletes those
		// older than 6 days.
		h.addEvents(200, t0.Add(time.Hour), 50*time.Minute)
		h.clock.Advance(7 * day)
		restartAt := h.clock.Now()
		retained := h.auth0.LogIDs()
		require.Less(t, len(retained), 200, "some events must be gone")
		require.NotEmpty(t, retained)

		p2, _ := h.newPoller(nil)
		h.run(p2)
		h.drive("retained events", func() bool { return h.streamLen() >= len(first)+len(retained) })
		require.Equal(t, append(first, retained...), h.streamIDs(), "continues with the oldest retained logs")
		require.Equal(t, 1.0, testutil.ToFloat64(p2.m.gaps))

		// Further polls do not count the same gap again, and newer
		// events follow.
		newer := h.addEvents(20, h.clock.Now(), time.Second)
		later := h.clock.Now().Add(3 * testInterval)
		h.drive("more polls", func() bool { return !h.clock.Now().Before(later) })
		require.Equal(t, 1.0, testutil.ToFloat64(p2.m.gaps))
		require.Equal(t, append(append(first, retained...), newer...), h.streamIDs())
		require.Less(t, testutil.ToFloat64(p2.m.lag), (2 * testInterval).Seconds(), "caught up after the gap")

		recs := h.logRecords("auth0 logs lost to retention: checkpoint is older than the retention window")
		require.Len(t, recs, 1)
		require.Equal(t, "ERROR", recs[0]["level"])
		cpTime, err := auth0log.IDTime(first[len(first)-1])
		require.NoError(t, err)
		require.Equal(t, cpTime.Format(time.RFC3339), recs[0]["lost_from"])
		require.Equal(t, restartAt.Add(-DefaultRetention).Format(time.RFC3339), recs[0]["lost_until"])
		resumed := h.logRecords("auth0 polling resumed after a retention gap; logs in between are lost")
		require.Len(t, resumed, 1)
		require.Equal(t, recs[0]["lost_from"], resumed[0]["lost_from"])
		resumedAt, err := time.Parse(time.RFC3339, resumed[0]["resumed_at"].(string))
		require.NoError(t, err)
		firstKept, err := auth0log.IDTime(retained[0])
		require.NoError(t, err)
		require.False(t, resumedAt.Before(restartAt.Add(-DefaultRetention)), "resumes within the retention window")
		require.False(t, resumedAt.After(firstKept), "resumes at the oldest retained log")
	})

	t.Run("quiet tenant is no gap", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		h.addEvents(5, h.clock.Now().Add(-time.Hour), time.Second)
		p, _ := h.newPoller(func(c *Config) { c.PollInterval = time.Hour })
		h.step = 10 * time.Minute
		h.run(p)
		end := h.clock.Now().Add(8 * day)
		h.drive("eight quiet days", func() bool { return !h.clock.Now().Before(end) })
		require.Equal(t, 5, h.streamLen())
		require.Zero(t, testutil.ToFloat64(p.m.gaps), "every poll proved there was nothing to lose")
		require.Zero(t, testutil.ToFloat64(p.m.stage.Failed))
	})

	t.Run("outage longer than retention counts one gap", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		first := h.addEvents(5, h.clock.Now().Add(-time.Hour), time.Second)
		p, _ := h.newPoller(func(c *Config) { c.MaxBackoff = time.Hour })
		h.step = 5 * time.Minute
		h.run(p)
		h.drive("first events", func() bool { return h.streamLen() >= len(first) })

		h.auth0.FailEveryN(1, http.StatusServiceUnavailable)
		h.addEvents(10, h.clock.Now().Add(time.Minute), time.Minute) // lost: deleted during the outage
		end := h.clock.Now().Add(7 * day)
		h.drive("a week of 503s", func() bool { return !h.clock.Now().Before(end) })
		require.Equal(t, 1.0, testutil.ToFloat64(p.m.gaps))
		require.Greater(t, testutil.ToFloat64(p.m.pageErrors[reasonHTTP]), 100.0)

		h.auth0.FailEveryN(0, 0)
		after := h.addEvents(10, h.clock.Now(), time.Second)
		h.drive("recovery", func() bool { return h.streamLen() >= len(first)+len(after) })
		require.Equal(t, append(first, after...), h.streamIDs())
		require.Equal(t, 1.0, testutil.ToFloat64(p.m.gaps))
	})
}

func TestCheckpointLag(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	now := h.clock.Now()
	h.addEvents(150, now.Add(-2*day), time.Minute)
	p, _ := h.newPoller(nil)
	lag := func() float64 { return testutil.ToFloat64(p.m.lag) }
	require.Zero(t, lag(), "unknown before the checkpoint is read")

	// Auth0 unreachable at first start: as far behind as the retention window.
	h.auth0.FailTokenNext(1 << 20)
	h.run(p)
	h.drive("token failures", func() bool { return testutil.ToFloat64(p.m.pageErrors[reasonToken]) >= 2 })
	require.GreaterOrEqual(t, lag(), DefaultRetention.Seconds())
	require.Less(t, lag(), (DefaultRetention + time.Minute).Seconds())

	h.auth0.FailTokenNext(0)
	h.drive("backfill", func() bool { return polled(p) >= 150 })
	next := h.clock.Now().Add(testInterval + driveStep)
	h.drive("another poll", func() bool { return !h.clock.Now().Before(next) })
	require.LessOrEqual(t, lag(), (testInterval + driveStep).Seconds(),
		"caught up: lag is the age of the last short poll, not of the last event (~45 h ago)")

	// Auth0 fails for two hours: lag grows although the checkpoint is unchanged.
	h.auth0.FailEveryN(1, http.StatusInternalServerError)
	end := h.clock.Now().Add(2 * time.Hour)
	h.drive("two hours of 500s", func() bool { return !h.clock.Now().Before(end) })
	require.GreaterOrEqual(t, lag(), (2 * time.Hour).Seconds())

	h.auth0.FailEveryN(0, 0)
	h.drive("lag back to the poll interval after recovery", func() bool { return lag() < (testInterval + driveStep).Seconds() })
}

func TestBackPressurePausesPolling(t *testing.T) {
	h := newHarness(t, harnessOpts{maxEvents: 150})
	ids := h.addEvents(400, h.clock.Now().Add(-day), time.Minute)
	p, _ := h.newPoller(nil)
	h.run(p)
	h.drive("paused", func() bool { return testutil.ToFloat64(p.m.paused) == 1 })
	require.Equal(t, 200, h.streamLen(), "two pages, then the buffer reports full")

	requests := h.auth0.Stats().LogRequests
	later := h.clock.Now().Add(5 * testInterval)
	h.drive("a while paused", func() bool { return !h.clock.Now().Before(later) })
	require.Equal(t, requests, h.auth0.Stats().LogRequests, "no Auth0 requests while paused")
	require.Equal(t, 200, h.streamLen())
	require.Equal(t, 1.0, testutil.ToFloat64(p.m.paused))

	// A consumer drains the backlog: polling resumes.
	ctx := context.Background()
	require.NoError(t, h.buf.EnsureGroup(ctx, "fw"))
	consume := func() {
		entries, err := h.buf.Read(ctx, "fw", "c1", 500, 10*time.Millisecond)
		require.NoError(t, err)
		for _, e := range entries {
			require.NoError(t, h.buf.Ack(ctx, "fw", e.ID))
		}
	}
	consume()
	h.drive("resumed", func() bool { return h.streamLen() > 200 })
	h.drive("all events", func() bool {
		consume()
		return h.streamLen() >= len(ids)
	})
	require.Equal(t, ids, h.streamIDs())
	h.drive("unpaused", func() bool {
		consume()
		return testutil.ToFloat64(p.m.paused) == 0
	})
	require.NotEmpty(t, h.logRecords("buffer full; polling paused (Auth0 keeps the logs meanwhile)"))
	require.NotEmpty(t, h.logRecords("buffer has room; polling resumed"))
}

func TestBufferErrorsRetrySamePage(t *testing.T) {
	t.Run("redis down at start-up", func(t *testing.T) {
		srv := testredis.Start(t)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1})
		t.Cleanup(func() { _ = rdb.Close() })
		h := newHarness(t, harnessOpts{rdb: rdb})
		ids := h.addEvents(150, h.clock.Now().Add(-day), time.Minute)
		srv.Kill()

		p, _ := h.newPoller(nil)
		h.run(p)
		h.drive("checkpoint read failures", func() bool { return testutil.ToFloat64(p.m.pageErrors[reasonBuffer]) >= 3 })
		require.Zero(t, h.auth0.Stats().LogRequests, "no polling before the checkpoint is known")
		require.NoError(t, srv.Restart())
		h.drive("all events", func() bool { return polled(p) >= float64(len(ids)) })
		require.Equal(t, ids, h.streamIDs())
	})
	t.Run("append refused", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		ids := h.addEvents(150, h.clock.Now().Add(-day), time.Minute)
		ctx := context.Background()
		// A key of the wrong type makes the append script refuse the page.
		require.NoError(t, h.rdb.Set(ctx, h.buf.Key("seen"), "wrong type", 0).Err())

		p, _ := h.newPoller(nil)
		h.run(p)
		h.drive("append failures", func() bool { return testutil.ToFloat64(p.m.pageErrors[reasonBuffer]) >= 3 })
		require.Zero(t, h.streamLen())
		require.Empty(t, h.checkpoint(), "the checkpoint does not move past data not buffered")
		require.Zero(t, polled(p))
		require.Positive(t, testutil.ToFloat64(p.m.stage.Failed))
		froms := h.requestedFroms()
		require.GreaterOrEqual(t, len(froms), 3)
		// The page after a full page is asked for while it is appended
		// (prefetch), but only while nothing fails: after the first
		// refusal, every request is for the refused page.
		ahead := 0
		for _, f := range froms {
			if f != froms[0] {
				ahead++
				require.Greater(t, f, froms[0], "a prefetch asks for the next page, never an earlier one")
			}
		}
		require.LessOrEqual(t, ahead, 1, "requests for other pages than the refused one: %v", froms)
		for _, f := range froms[2:] {
			require.Equal(t, froms[0], f, "the refused page is fetched again, never skipped")
		}

		require.NoError(t, h.rdb.Del(ctx, h.buf.Key("seen")).Err())
		h.drive("all events", func() bool { return polled(p) >= float64(len(ids)) })
		require.Equal(t, ids, h.streamIDs())
		require.Equal(t, ids[len(ids)-1], h.checkpoint())
	})
}

func TestMetricsExistAtZero(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	_, reg := h.newPoller(nil)
	for name, n := range map[string]int{
		"authpipe_auth0_events_polled_total":            1,
		"authpipe_auth0_requests_total":                 len(codeClasses),
		"authpipe_auth0_checkpoint_lag_seconds":         1,
		"authpipe_auth0_gaps_total":                     1,
		"authpipe_auth0_rate_limit_remaining":           1,
		"authpipe_auth0_page_errors_total":              len(pageErrorReasons),
		"authpipe_auth0_last_success_timestamp_seconds": 1,
		"authpipe_auth0_paused":                         1,
		"authpipe_auth0_events_first_total":             1,
		"authpipe_auth0_poll_interval_seconds":          1,
	} {
		got, err := testutil.GatherAndCount(reg, name)
		require.NoError(t, err)
		require.Equal(t, n, got, name)
	}
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

func TestTwoTenantsShareARegistry(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	reg := prometheus.NewRegistry()
	cfg := h.config()
	_, err := New(cfg, h.buf, Deps{Registerer: metrics.Tenant(reg, cfg.Tenant)})
	require.NoError(t, err)
	cfg2 := cfg
	cfg2.Tenant += "-b"
	_, err = New(cfg2, h.buf, Deps{Registerer: metrics.Tenant(reg, cfg2.Tenant)})
	require.NoError(t, err)
	got, err := testutil.GatherAndCount(reg, "authpipe_auth0_gaps_total")
	require.NoError(t, err)
	require.Equal(t, 2, got)

	_, err = New(cfg, h.buf, Deps{Registerer: metrics.Tenant(reg, cfg.Tenant)})
	require.ErrorContains(t, err, "one poller per registerer")
}

func TestRunTwiceAtOnceIsRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	p, _ := h.newPoller(nil)
	h.run(p)
	h.drive("running", func() bool { return p.running.Load() })
	require.ErrorContains(t, p.Run(context.Background()), "already running")
}

func TestInvalidStoredCheckpointStopsRun(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	require.NoError(t, h.rdb.Set(context.Background(), h.buf.Key("checkpoint"), "not-a-log-id", 0).Err())
	p, _ := h.newPoller(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.ErrorContains(t, p.Run(ctx), "stored checkpoint")
	require.Zero(t, h.auth0.Stats().LogRequests)
}

func TestNewRejectsBadInput(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	_, err := New(Config{}, h.buf, Deps{})
	require.Error(t, err)
	_, err = New(h.config(), nil, Deps{})
	require.ErrorContains(t, err, "nil buffer")
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Tenant: "acme", Domain: "acme.eu.auth0.com", ClientID: "id", ClientSecret: "secret"}
	cases := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "defaults", mod: func(*Config) {}},
		{name: "https domain", mod: func(c *Config) { c.Domain = "https://acme.eu.auth0.com" }},
		{name: "http simulator", mod: func(c *Config) { c.Domain = "http://127.0.0.1:8080" }},
		{name: "trailing slash", mod: func(c *Config) { c.Domain = "https://acme.eu.auth0.com/" }},
		{name: "page size 100", mod: func(c *Config) { c.PageSize = 100 }},
		{name: "no tenant", mod: func(c *Config) { c.Tenant = "" }, wantErr: "tenant"},
		{name: "bad tenant", mod: func(c *Config) { c.Tenant = "a b" }, wantErr: "tenant"},
		{name: "no domain", mod: func(c *Config) { c.Domain = "" }, wantErr: "domain is empty"},
		{name: "ftp", mod: func(c *Config) { c.Domain = "ftp://x" }, wantErr: "scheme"},
		{name: "path", mod: func(c *Config) { c.Domain = "https://x/api/v2" }, wantErr: "path"},
		{name: "credentials in domain", mod: func(c *Config) { c.Domain = "https://u:p@x" }, wantErr: "credentials"},
		{name: "no client id", mod: func(c *Config) { c.ClientID = "" }, wantErr: "client id"},
		{name: "no secret", mod: func(c *Config) { c.ClientSecret = "" }, wantErr: "client secret"},
		{name: "page size 101", mod: func(c *Config) { c.PageSize = 101 }, wantErr: "page size"},
		{name: "negative page size", mod: func(c *Config) { c.PageSize = -1 }, wantErr: "page size"},
		{name: "negative interval", mod: func(c *Config) { c.PollInterval = -time.Second }, wantErr: "poll interval"},
		{name: "negative retention", mod: func(c *Config) { c.Retention = -time.Hour }, wantErr: "retention"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), "secret\"", "the secret value is never echoed")
		})
	}
}

func TestParseDomain(t *testing.T) {
	cases := []struct {
		in, base string
		insecure bool
	}{
		{"acme.eu.auth0.com", "https://acme.eu.auth0.com", false},
		{"https://acme.eu.auth0.com/", "https://acme.eu.auth0.com", false},
		{"http://127.0.0.1:9999", "http://127.0.0.1:9999", true},
		{"localhost:8080", "https://localhost:8080", false},
	}
	for _, tc := range cases {
		base, insecure, err := parseDomain(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.base, base, tc.in)
		require.Equal(t, tc.insecure, insecure, tc.in)
	}
}

func TestRateLimitState(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	reset := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	cases := []struct {
		name      string
		h         http.Header
		status    int
		wantWait  time.Duration // before the next request
		want429   time.Duration // after429
		remaining int64
	}{
		{name: "room left", h: hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "3", "X-RateLimit-Reset", reset(5*time.Second)),
			status: 200, remaining: 3, want429: 5 * time.Second},
		{name: "bucket empty waits for reset", h: hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(7*time.Second)),
			status: 200, wantWait: 7 * time.Second, want429: 7 * time.Second},
		{name: "at the floor waits for reset", h: hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "2", "X-RateLimit-Reset", reset(2*time.Second)),
			status: 200, remaining: 2, wantWait: 2 * time.Second, want429: 2 * time.Second},
		{name: "below the floor, rate unknown: probe at reset", h: hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "1", "X-RateLimit-Reset", reset(time.Second)),
			status: 200, remaining: 1, wantWait: time.Second, want429: time.Second},
		{name: "one above the floor", h: hdr("X-RateLimit-Limit", "50", "X-RateLimit-Remaining", "11", "X-RateLimit-Reset", reset(time.Second)),
			status: 200, remaining: 11, want429: time.Second},
		{name: "empty, reset passed", h: hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(-time.Second)),
			status: 200, want429: minRateLimitWait},
		{name: "429 until reset", h: hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(4*time.Second)),
			status: 429, want429: 4 * time.Second},
		{name: "429 Retry-After later than reset", h: hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(2*time.Second), "Retry-After", "9"),
			status: 429, want429: 9 * time.Second},
		{name: "429 without headers", h: hdr(), status: 429, want429: minRateLimitWait},
		{name: "bogus far reset is capped", h: hdr("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", reset(10*day)),
			status: 200, wantWait: maxRateLimitWaitFloor, want429: maxRateLimitWaitFloor},
		{name: "Retry-After as HTTP date", h: hdr("Retry-After", now.Add(3*time.Second).UTC().Format(http.TimeFormat)),
			status: 429, want429: 3 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rl := newRateLimit(DefaultRateLimitShare, time.Second)
			rl.observe(tc.h, tc.status, now, now, rl.sending())
			require.Equal(t, tc.wantWait, rl.wait(now))
			require.Equal(t, tc.want429, rl.after429(now))
			if rem, ok := rl.remainingRequests(); ok {
				require.Equal(t, tc.remaining, rem)
			}
		})
	}
}

func TestBackoffGrowsWithJitterAndIsCapped(t *testing.T) {
	b := backoff{base: time.Second, max: 10 * time.Second}
	for i, upper := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
		upper *= time.Second
		d := b.next()
		require.GreaterOrEqual(t, d, upper/2, "attempt %d", i)
		require.LessOrEqual(t, d, upper, "attempt %d", i)
	}
	b.reset()
	require.LessOrEqual(t, b.next(), time.Second)
	for range 100 {
		b.next() // no overflow
	}
	require.LessOrEqual(t, b.next(), 10*time.Second)
}

func TestRedactRemovesSecretForms(t *testing.T) {
	p := &Poller{cfg: Config{ClientID: "id", ClientSecret: "p@ss word/+"}}
	err := errors.New("oauth2: body echoed p@ss word/+ and p%40ss+word%2F%2B and aWQ6cCU0MHNzK3dvcmQlMkYlMkI=")
	got := p.redact(err)
	require.NotContains(t, got, "p@ss")
	require.NotContains(t, got, "p%40ss")
	require.NotContains(t, got, "aWQ6cCU0MHNzK3dvcmQlMkYlMkI=")
	require.Equal(t, 3, strings.Count(got, "<secret>"))
	long := p.redact(errors.New(strings.Repeat("x", 2000)))
	require.LessOrEqual(t, len(long), maxErrLen+len("…"))
}

func TestPersistent429sBackOff(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ids := h.addEvents(50, h.clock.Now().Add(-time.Hour), time.Second)
	// 429s whose headers promise an immediate reset, again and again.
	h.auth0.FailEveryN(1, http.StatusTooManyRequests)
	p, _ := h.newPoller(func(c *Config) { c.MaxBackoff = time.Minute })
	h.run(p)
	end := h.clock.Now().Add(10 * time.Minute)
	h.drive("ten minutes of 429s", func() bool { return !h.clock.Now().Before(end) })
	n := testutil.ToFloat64(p.m.requests[code429])
	require.Greater(t, n, 5.0)
	require.Less(t, n, 60.0, "backs off instead of asking every second")
	require.Zero(t, h.streamLen())

	h.auth0.FailEveryN(0, 0)
	h.drive("all events", func() bool { return polled(p) >= float64(len(ids)) })
	require.Equal(t, ids, h.streamIDs())
}

// overlapBuffer holds each Append until the request for the page after it
// has reached Auth0 (or 3 s have passed), recording which it was.
type overlapBuffer struct {
	Buffer
	h *harness

	mu         sync.Mutex
	overlapped int // appends during which the next page was asked for
	alone      int // appends that waited in vain
}

func (b *overlapBuffer) Append(ctx context.Context, logs []auth0log.Log, cp string) (int, error) {
	deadline := time.Now().Add(3 * time.Second) // waited in full only after the last, short page
	seen := false
	for !seen && time.Now().Before(deadline) {
		seen = slices.Contains(b.h.requestedFroms(), cp)
		if !seen {
			time.Sleep(time.Millisecond)
		}
	}
	b.mu.Lock()
	if seen {
		b.overlapped++
	} else {
		b.alone++
	}
	b.mu.Unlock()
	return b.Buffer.Append(ctx, logs, cp)
}

// While a full page is appended, the page after it is already being
// fetched; every page is still asked for once, in order, and buffered in
// order.
func TestPrefetchOverlapsAppend(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ids := h.addEvents(1050, h.clock.Now().Add(-day), time.Second)
	buf := &overlapBuffer{Buffer: h.buf, h: h}
	cfg := h.config()
	reg := metrics.Tenant(prometheus.NewPedanticRegistry(), cfg.Tenant)
	p, err := New(cfg, buf, Deps{Logger: h.logger(), Registerer: reg, Clock: h.clock, Stages: metrics.NewStages(reg)})
	require.NoError(t, err)
	h.run(p)
	h.drive("all events", func() bool { return polled(p) >= float64(len(ids)) })

	require.Equal(t, ids, h.streamIDs())
	froms := h.requestedFroms()
	require.True(t, slices.IsSorted(froms), "pages asked for in order: %v", froms)
	require.Len(t, slices.Compact(slices.Clone(froms)), len(froms), "no page asked for twice: %v", froms)
	buf.mu.Lock()
	defer buf.mu.Unlock()
	// 10 full pages, each appended while the next was fetched; the last,
	// short page has nothing after it to fetch early.
	require.Equal(t, 10, buf.overlapped)
	require.Equal(t, 1, buf.alone)
}

func TestRepollsAfterTheBufferLostData(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	ids := h.addEvents(300, h.clock.Now().Add(-3*day), time.Minute)
	p, _ := h.newPoller(nil)
	h.run(p)
	h.drive("first poll", func() bool { return polled(p) >= float64(len(ids)) })
	h.idle()

	// A consumer has acknowledged the first 200; the buffer learns it.
	require.NoError(t, h.buf.EnsureGroup(ctx, "fwd"))
	got, err := h.buf.Read(ctx, "fwd", "c1", 300, 0)
	require.NoError(t, err)
	acked := make([]string, 200)
	for i := range acked {
		acked[i] = got[i].ID
	}
	require.NoError(t, h.buf.Ack(ctx, "fwd", acked...))
	require.NoError(t, h.buf.CheckLoss(ctx))

	// Redis loses the tenant's data (FLUSHALL, a restart on an empty data
	// dir); new logs arrive and the poller's next page finds the
	// checkpoint gone.
	keys, err := h.rdb.Keys(ctx, "authpipe:{"+h.tenant+"}:*").Result()
	require.NoError(t, err)
	require.NoError(t, h.rdb.Del(ctx, keys...).Err())
	nFroms := len(h.requestedFroms())
	more := h.addEvents(5, h.clock.Now(), time.Second)
	want := append(append([]string(nil), ids[200:]...), more...)
	h.drive("re-poll", func() bool { return len(h.streamIDs()) >= len(want) })
	h.idle()

	require.Equal(t, want, h.streamIDs(), "everything not known delivered is buffered again, once")
	at, err := auth0log.IDTime(ids[200])
	require.NoError(t, err)
	require.Contains(t, h.requestedFroms()[nFroms:], auth0log.CheckpointAt(at), "re-polled from the last point known delivered")
	require.Len(t, h.logRecords("the buffer lost data: polling Auth0 again from the last point known delivered"), 1)
	require.Equal(t, more[len(more)-1], h.checkpoint())
	// The page that found the loss was not an Auth0 failure.
	require.Zero(t, testutil.ToFloat64(p.m.pageErrors[reasonBuffer]))
	require.Zero(t, testutil.ToFloat64(p.m.gaps))
}
