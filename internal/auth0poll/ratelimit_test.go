package auth0poll

import (
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
)

// TestRefillMeasurementLeavesNeighboursTheirShare shows what measuring the
// refill rate buys over the floor alone. Another client of the tenant (an
// admin script, say) sends 6 requests at once every minute: 6 a minute,
// well within the 20 % of 100 a minute the poller leaves to others, but
// more than the floor's 2 tokens at once. With the refill measured, the
// poller takes 80 % of the refill and the rest fills the bucket up between
// the bursts: the neighbour meets no 429. With the floor alone (the same
// rules, the measurement wiped after every response) the poller takes
// every token above the floor, more than its share, and each burst meets
// 429s.
func TestRefillMeasurementLeavesNeighboursTheirShare(t *testing.T) {
	const (
		burst, perMinute = 10, 100
		share            = 0.8
		run              = 10 * time.Minute
	)
	type result struct{ neighbour429, steady int }
	pace := func(t *testing.T, floorOnly bool) result {
		clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC))
		a := sim.NewAuth0(sim.Auth0Options{ClientID: testClientID, ClientSecret: testSecret, Clock: clock,
			Burst: burst, PerMinute: perMinute})
		c := newSimClient(t, a)
		// The first burst comes a minute in, once the refill is measured.
		nb := &neighbour{c: newSimClient(t, a), every: time.Minute, burst: 6, next: clock.Now().Add(time.Minute)}
		rl := newRateLimit(share, time.Minute)
		start := clock.Now()
		steady := 0
		for clock.Since(start) < run {
			nb.catchUp(clock.Now())
			if d := rl.wait(clock.Now()); d > 0 {
				clock.Advance(max(min(d, nb.next.Sub(clock.Now())), time.Millisecond))
				continue
			}
			at, takenBefore := clock.Now(), rl.sending()
			clock.Advance(30 * time.Millisecond)
			code, h := c.get()
			rl.observe(h, code, at, clock.Now(), takenBefore)
			if floorOnly {
				rl.forgetRefill()
			}
			if code == http.StatusTooManyRequests {
				clock.Advance(rl.after429(clock.Now()))
				continue
			}
			if at.Sub(start) >= time.Minute {
				steady++
			}
		}
		return result{neighbour429: nb.limited, steady: steady}
	}

	allowed := share * perMinute * (run - time.Minute).Minutes()
	measured := pace(t, false)
	floor := pace(t, true)
	t.Logf("refill measured: neighbour met %d 429s, poller sent %d requests after the first minute (%.1f%% of its share %.0f)",
		measured.neighbour429, measured.steady, 100*float64(measured.steady)/allowed, allowed)
	t.Logf("floor alone:     neighbour met %d 429s, poller sent %d requests after the first minute (%.1f%% of its share %.0f)",
		floor.neighbour429, floor.steady, 100*float64(floor.steady)/allowed, allowed)

	require.Zero(t, measured.neighbour429, "with the refill measured the neighbour's bursts find the bucket refilled")
	require.LessOrEqual(t, float64(measured.steady), allowed+share*burst+1, "the poller keeps to its share")
	require.GreaterOrEqual(t, float64(measured.steady), 0.9*allowed, "and uses it")
	// What the measurement buys: without it the neighbour is starved of
	// its share of the refill.
	require.Positive(t, floor.neighbour429, "the floor alone leaves no room for the neighbour's bursts")
	require.Greater(t, float64(floor.steady), allowed+share*burst+1, "the floor alone takes more than the share")
}

// BenchmarkPacing is the pacing rules' cost per logs request: the wait
// asked before it and the headers observed after it, on a bucket of 10
// refilled at 100 a minute that a backlog holds low, so the refill is
// measured and both the floor and the share apply.
func BenchmarkPacing(b *testing.B) {
	t0 := time.Unix(1_700_000_000, 0)
	rl := newRateLimit(DefaultRateLimitShare, time.Minute)
	bk := &testBucket{size: 10, rate: 100.0 / 60, level: 10, at: t0}
	now := t0
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		if d := rl.wait(now); d > 0 {
			now = now.Add(d)
		}
		sent, taken := now, rl.sending()
		now = now.Add(30 * time.Millisecond)
		rl.observe(h, bk.take(now, h), sent, now, taken)
	}
	b.ReportMetric(rl.refillRate(), "refill/s")
}

// testBucket is Auth0's logs bucket as the simulator models it, without
// the HTTP around it: take answers one request and sets its headers.
type testBucket struct {
	size, rate, level float64
	at                time.Time
}

func (bk *testBucket) take(now time.Time, h http.Header) int {
	bk.level = min(bk.size, bk.level+now.Sub(bk.at).Seconds()*bk.rate)
	bk.at = now
	code := http.StatusTooManyRequests
	if bk.level >= 1 {
		bk.level--
		code = http.StatusOK
	}
	next := now.Add(time.Duration((math.Floor(bk.level) + 1 - bk.level) / bk.rate * float64(time.Second)))
	h.Set("X-Ratelimit-Limit", strconv.Itoa(int(bk.size)))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(int(bk.level)))
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(next.Unix()+1, 10))
	return code
}

// forgetRefill wipes the refill measurement: the pacing falls back to the
// floor alone.
func (r *rateLimit) forgetRefill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks, r.refill, r.ours = nil, 0, nil
}
