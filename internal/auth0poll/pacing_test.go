package auth0poll

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
)

// simClient talks to the simulator's logs endpoint directly (no network):
// the pacing rules alone, or another Management API client of the tenant.
type simClient struct {
	t     *testing.T
	auth0 *sim.Auth0
	token string
}

func newSimClient(t *testing.T, a *sim.Auth0) *simClient {
	t.Helper()
	form := url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClientID},
		"client_secret": {testSecret}, "audience": {"http://example.com/api/v2/"},
	}
	req := httptest.NewRequest(http.MethodPost, "http://example.com/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &tok))
	return &simClient{t: t, auth0: a, token: tok.AccessToken}
}

// get asks for an empty page and returns the answer's status and headers.
func (c *simClient) get() (int, http.Header) {
	req := httptest.NewRequest(http.MethodGet, "http://example.com/api/v2/logs?take=1&from="+strings.Repeat("9", 56), nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	rec := httptest.NewRecorder()
	c.auth0.ServeHTTP(rec, req)
	return rec.Code, rec.Header()
}

// neighbour is another client of the tenant's Management API, asking at a
// steady rate from start on: one request (or burst of them) every so often.
type neighbour struct {
	c        *simClient
	every    time.Duration
	burst    int // requests at once; 0 means 1
	next     time.Time
	requests int
	limited  int
}

// catchUp makes the requests due by now.
func (n *neighbour) catchUp(now time.Time) {
	if n == nil || n.every == 0 {
		return
	}
	for !n.next.After(now) {
		for range max(n.burst, 1) {
			n.requests++
			if code, _ := n.c.get(); code == http.StatusTooManyRequests {
				n.limited++
			}
		}
		n.next = n.next.Add(n.every)
	}
}

// TestPacingUsesItsShare drives the pacing rules alone against the
// simulator's bucket, with a little latency per request and as much demand
// as the rules allow: the share of the refill is used, the floor is kept,
// and Auth0 never answers 429.
func TestPacingUsesItsShare(t *testing.T) {
	cases := []struct {
		name             string
		burst, perMinute int
		share            float64
		run              time.Duration
		neighbourEvery   time.Duration // 0: no other client
	}{
		{name: "Essentials: burst 10, 100/min", burst: 10, perMinute: 100, share: 0.8, run: 10 * time.Minute},
		{name: "half the bucket", burst: 10, perMinute: 100, share: 0.5, run: 10 * time.Minute},
		{name: "the whole bucket", burst: 10, perMinute: 100, share: 1, run: 10 * time.Minute},
		{name: "slow bucket: burst 5, 6/min", burst: 5, perMinute: 6, share: 0.8, run: 2 * time.Hour},
		{name: "Enterprise: burst 50, 16/s", burst: 50, perMinute: 960, share: 0.8, run: 5 * time.Minute},
		{name: "neighbour within its share", burst: 10, perMinute: 100, share: 0.8, run: 10 * time.Minute,
			neighbourEvery: 4 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC))
			a := sim.NewAuth0(sim.Auth0Options{ClientID: testClientID, ClientSecret: testSecret, Clock: clock,
				Burst: tc.burst, PerMinute: tc.perMinute})
			c := newSimClient(t, a)
			var nb *neighbour
			if tc.neighbourEvery > 0 {
				nb = &neighbour{c: newSimClient(t, a), every: tc.neighbourEvery, next: clock.Now()}
			}
			rl := newRateLimit(tc.share, time.Minute)
			floor := int(math.Ceil((1-tc.share)*float64(tc.burst) - 1e-9))
			rate := float64(tc.perMinute) / 60
			const latency = 30 * time.Millisecond

			start := clock.Now()
			var sent []time.Time
			for clock.Since(start) < tc.run {
				nb.catchUp(clock.Now())
				if d := rl.wait(clock.Now()); d > 0 {
					clock.Advance(max(min(d, nb.nextOr(clock.Now().Add(d)).Sub(clock.Now())), time.Millisecond))
					continue
				}
				at, takenBefore := clock.Now(), rl.sending()
				clock.Advance(latency)
				code, h := c.get()
				rl.observe(h, code, at, clock.Now(), takenBefore)
				require.Equal(t, http.StatusOK, code, "request %d at %s", len(sent), clock.Since(start))
				rem, ok := rl.remainingRequests()
				require.True(t, ok)
				if nb == nil {
					require.GreaterOrEqual(t, int(rem), floor, "request %d at %s leaves the floor", len(sent), clock.Since(start))
				}
				sent = append(sent, at)
			}

			// The measured refill rate is a lower bound, and close.
			got := rl.refillRate()
			net := rate
			if nb != nil {
				net -= 1 / tc.neighbourEvery.Seconds()
			}
			require.LessOrEqual(t, got, rate, "refill rate over-estimated")
			require.GreaterOrEqual(t, got, 0.97*net, "refill rate")

			// Once measured: the share of the refill, within 5 %, and never
			// more than it plus our share of the burst.
			steadyFrom := tc.run / 5
			n := 0
			for _, s := range sent {
				if s.Sub(start) >= steadyFrom {
					n++
				}
			}
			span := (tc.run - steadyFrom).Seconds()
			allowed := tc.share * rate * span
			t.Logf("%d requests in the steady %s: %.1f%% of the allowed %0.f (share %.2f of %.3g/s); measured refill %.4g/s; %d requests in all",
				n, tc.run-steadyFrom, 100*float64(n)/allowed, allowed, tc.share, rate, got, len(sent))
			if nb != nil {
				t.Logf("neighbour: %d requests, %d answered 429", nb.requests, nb.limited)
				require.Zero(t, nb.limited, "the floor leaves the neighbour room")
				allowed = tc.share * net * span
			}
			require.GreaterOrEqual(t, float64(n), 0.95*allowed)
			require.LessOrEqual(t, float64(n), allowed+tc.share*float64(tc.burst)+1)
			require.Zero(t, a.Stats().RateLimited)
		})
	}
}

// nextOr returns when the neighbour asks next, or def without a neighbour.
func (n *neighbour) nextOr(def time.Time) time.Time {
	if n == nil || n.every == 0 || n.next.After(def) {
		return def
	}
	return n.next
}

// timerClock is the harness' fake clock that remembers when the timer made
// last is due: the poller sleeps on one timer at a time, so a test can move
// the clock exactly to the poller's next wake-up and see its pacing without
// the rounding of fixed steps.
type timerClock struct {
	*clockwork.FakeClock
	mu  sync.Mutex
	due time.Time
}

func (c *timerClock) NewTimer(d time.Duration) clockwork.Timer {
	c.mu.Lock()
	c.due = c.Now().Add(d)
	c.mu.Unlock()
	return c.FakeClock.NewTimer(d)
}

func (c *timerClock) nextDue() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.due
}

// newTimedPoller builds a poller on the harness whose clock reports its
// timers; drive it with driveTimers.
func (h *harness) newTimedPoller(mod func(*Config)) (*Poller, *timerClock) {
	h.t.Helper()
	clock := &timerClock{FakeClock: h.clock}
	cfg := h.config()
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, h.buf, Deps{Logger: h.logger(), Clock: clock})
	require.NoError(h.t, err)
	return p, clock
}

// driveTimers is drive, but each time the poller sleeps the clock moves to
// its wake-up (or to wake(now), when that comes first), until cond holds.
func (h *harness) driveTimers(clock *timerClock, what string, wake func(now time.Time) time.Time, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(driveTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s (fake clock advanced %s)", what, h.clock.Since(h.t0))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := h.clock.BlockUntilContext(ctx, 1)
		cancel()
		if err != nil {
			continue
		}
		now := h.clock.Now()
		next := clock.nextDue()
		if wake != nil {
			if w := wake(now); w.Before(next) {
				next = w
			}
		}
		h.clock.Advance(max(next.Sub(now), time.Millisecond))
	}
}

// wireLog records the logs requests that reach the simulator: when (by the
// fake clock) and how they were answered.
type wireLog struct {
	clock  clockwork.Clock
	before atomic.Pointer[func()] // run once before the next logs request is served
	mu     sync.Mutex
	at     []time.Time
	codes  []int
}

func (w *wireLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/logs" {
			next.ServeHTTP(rw, r)
			return
		}
		if f := w.before.Swap(nil); f != nil {
			(*f)()
		}
		at := w.clock.Now()
		rec := &statusRecorder{ResponseWriter: rw, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		w.mu.Lock()
		w.at, w.codes = append(w.at, at), append(w.codes, rec.code)
		w.mu.Unlock()
	})
}

func (w *wireLog) requests() ([]time.Time, []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.at...), append([]int(nil), w.codes...)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// perMinute counts the requests in each whole minute from start, up to the
// last whole minute before end.
func perMinute(at []time.Time, start, end time.Time) []int {
	counts := make([]int, int(end.Sub(start)/time.Minute))
	for _, t := range at {
		if i := int(t.Sub(start) / time.Minute); t.After(start) || t.Equal(start) {
			if i < len(counts) {
				counts[i]++
			}
		}
	}
	return counts
}

// TestPacingDrainsBacklogWithinShare is issue 5's acceptance test: with the
// simulator at burst 10 and 100 requests a minute and the default share of
// 80 %, a large backlog drains at no less than 95 % of 80 requests a minute
// and no more than 80, without a single 429.
func TestPacingDrainsBacklogWithinShare(t *testing.T) {
	wire := &wireLog{}
	h := newHarness(t, harnessOpts{wrap: wire.wrap})
	wire.clock = h.clock
	h.auth0.SetRateLimit(10, 100)
	// Pages of 5 events: 500 requests' worth of backlog, little data.
	ids := h.addEvents(2500, h.clock.Now().Add(-2*day), time.Minute)
	p, clock := h.newTimedPoller(func(c *Config) { c.PageSize = 5 })
	require.Equal(t, DefaultRateLimitShare, p.cfg.RateLimitShare)
	h.run(p)
	h.driveTimers(clock, "backlog drained", nil, func() bool { return polled(p) >= float64(len(ids)) })
	drained := h.clock.Now()
	h.idle()

	require.Equal(t, ids, h.streamIDs(), "every event once, in order")
	require.Zero(t, h.auth0.Stats().RateLimited, "no 429")
	require.Zero(t, testutil.ToFloat64(p.m.requests[code429]))

	at, _ := wire.requests()
	counts := perMinute(at, h.t0, drained)
	require.GreaterOrEqual(t, len(counts), 5, "the backlog takes minutes to drain")
	steady := counts[1:] // the first minute measures the refill rate
	sum := 0
	for i, n := range steady {
		require.GreaterOrEqual(t, n, 76, "minute %d: %v", i+1, counts)
		require.LessOrEqual(t, n, 80, "minute %d: %v", i+1, counts)
		sum += n
	}
	share := float64(sum) / float64(len(steady)) / 80
	t.Logf("requests per minute %v: %.1f%% of the allowed 80/min once measured; refill measured %.4g/s of 1.667/s",
		counts, 100*share, testutil.ToFloat64(p.m.refill))
	require.InDelta(t, 100.0/60, testutil.ToFloat64(p.m.refill), 0.05, "authpipe_auth0_rate_limit_refill_per_second")
}

// TestPacingWithGreedyNeighbour: another client of the tenant asks 40
// times a minute (more than the 20 % left to it) and once drains the whole
// bucket. The poller still delivers every event in order; the 429s it
// meets are waited out, never met in a storm, and its own use stays within
// its share.
func TestPacingWithGreedyNeighbour(t *testing.T) {
	wire := &wireLog{}
	h := newHarness(t, harnessOpts{wrap: wire.wrap})
	wire.clock = h.clock
	h.auth0.SetRateLimit(10, 100)
	ids := h.addEvents(1500, h.clock.Now().Add(-2*day), time.Minute)
	p, clock := h.newTimedPoller(func(c *Config) { c.PageSize = 5 })
	nb := &neighbour{c: newSimClient(t, h.auth0), every: 1500 * time.Millisecond, next: h.clock.Now()}
	h.run(p)
	// Halfway, another client empties the bucket right before one of the
	// poller's requests.
	drainer := newSimClient(t, h.auth0)
	var drained429 atomic.Int64
	drain := func() {
		for range 100 {
			if code, _ := drainer.get(); code == http.StatusTooManyRequests {
				drained429.Add(1)
				return
			}
		}
	}
	armed := false
	h.driveTimers(clock, "backlog drained", func(time.Time) time.Time { return nb.next }, func() bool {
		nb.catchUp(h.clock.Now())
		if !armed && polled(p) >= 750 {
			wire.before.Store(&drain)
			armed = true
		}
		return polled(p) >= float64(len(ids))
	})
	end := h.clock.Now()
	h.idle()

	require.Equal(t, ids, h.streamIDs(), "every event once, in order: 429s are waited out, pages never skipped")
	at, codes := wire.requests()
	ours429, run, longest := 0, 0, 0
	for _, c := range codes {
		if c != http.StatusTooManyRequests {
			run = 0
			continue
		}
		ours429++
		run++
		longest = max(longest, run)
	}
	require.Equal(t, float64(ours429), testutil.ToFloat64(p.m.requests[code429]))
	require.Equal(t, ours429+nb.limited+int(drained429.Load()), h.auth0.Stats().RateLimited)
	require.Positive(t, ours429, "the drained bucket must have cost the poller a 429")
	counts := perMinute(at, h.t0, end)
	t.Logf("poller: %d requests, %d answered 429 (longest run %d), per minute %v; neighbour: %d requests, %d answered 429; refill measured %.4g/s",
		len(at), ours429, longest, counts, nb.requests, nb.limited, testutil.ToFloat64(p.m.refill))
	require.LessOrEqual(t, ours429, len(at)/20, "429s are rare")
	require.LessOrEqual(t, longest, 2, "no 429 storm")
	for i, n := range counts[1:] {
		require.LessOrEqual(t, n, 80, "minute %d: %v", i+1, counts)
	}
}

// TestRefillMeasurement checks when the refill rate is measured and when
// not, on a scripted bucket of 10 that refills 2 tokens a second.
func TestRefillMeasurement(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	hdr := func(limit, remaining int) http.Header {
		h := http.Header{}
		h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(t0.Unix()+1, 10))
		return h
	}
	// get sends one request at (the bucket's level at) at and observes it.
	get := func(rl *rateLimit, at time.Time, limit, remaining int) {
		rl.observe(hdr(limit, remaining), http.StatusOK, at, at, rl.sending())
	}

	t.Run("a bucket that stays full measures nothing", func(t *testing.T) {
		rl := newRateLimit(0.8, time.Minute)
		for i := range 200 {
			get(rl, t0.Add(time.Duration(i)*time.Second), 10, 9)
		}
		require.Zero(t, rl.refillRate())
		require.Zero(t, rl.wait(t0.Add(200*time.Second)), "nothing to pace")
	})

	t.Run("a bucket held low measures its refill", func(t *testing.T) {
		rl := newRateLimit(0.8, time.Minute)
		// Two requests a second keep a bucket refilled at 2/s at 2.
		for i := range 40 {
			at := t0.Add(time.Duration(i) * 500 * time.Millisecond)
			get(rl, at, 10, 2)
		}
		got := rl.refillRate()
		require.Greater(t, got, 1.9)
		require.LessOrEqual(t, got, 2.0)
		// From here on, our share: 0.8 × got requests a second.
		now := t0.Add(20 * time.Second)
		d := rl.wait(now)
		require.Positive(t, d, "the script asked faster than the share")
		now = now.Add(d)
		require.Zero(t, rl.wait(now))
		get(rl, now, 10, 5)
		require.InDelta(t, 1/(0.8*got), rl.wait(now).Seconds(), 0.02, "allowance spent to about 0")

		// Another plan: measured afresh.
		get(rl, now.Add(time.Second), 50, 40)
		require.Zero(t, rl.refillRate())
	})

	t.Run("requests in flight do not inflate the estimate", func(t *testing.T) {
		// A bucket refilled at exactly 2/s. Backfill's request leaves at
		// t0, takes its token at once and is answered only 10 s later:
		// the remaining of every answer in between already lacks that
		// token. Our requests, every 0.52 s, let the bucket creep up.
		rl := newRateLimit(0.8, time.Minute)
		const rate = 2.0
		level, last := 2.95, t0
		take := func(at time.Time) int {
			level = min(level+rate*at.Sub(last).Seconds(), 10) - 1
			last = at
			return int(math.Floor(level))
		}
		stray, strayRemaining := rl.sending(), take(t0)
		for i := 1; i <= 80; i++ {
			at := t0.Add(time.Duration(i) * 520 * time.Millisecond)
			if i == 20 {
				rl.observe(hdr(10, strayRemaining), http.StatusOK, t0, at, stray)
			}
			get(rl, at, 10, take(at))
			require.LessOrEqual(t, rl.refillRate(), rate, "request %d: over-estimated", i)
		}
		require.Greater(t, rl.refillRate(), 0.9*rate)
	})
}
