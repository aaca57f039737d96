package auth0poll

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

const (
	// minRateLimitWait is the wait after a 429 whose headers name no future
	// time (missing, or already past by our clock): the bucket refills in
	// whole seconds, so asking again at once would only draw another 429.
	minRateLimitWait = time.Second
	// maxRateLimitWaitFloor bounds a wait taken from headers, so that a bogus
	// or far-skewed reset time cannot stall polling for long; the actual
	// bound is the larger of this and Config.MaxBackoff.
	maxRateLimitWaitFloor = time.Minute
	// maxMarks bounds the observations kept for measuring the refill rate.
	maxMarks = 256
	// minMeasuredTokens is how many refilled tokens a measurement of the
	// refill rate must rest on. A measurement is off by less than one token
	// (x-ratelimit-remaining is a whole number), so by less than 1/32 ≈ 3 %.
	minMeasuredTokens = 32
	// tokenEpsilon absorbs float rounding in token arithmetic.
	tokenEpsilon = 1e-9
)

// rateLimit mirrors the tenant's rate-limit bucket for logs requests from
// the x-ratelimit-limit, -remaining and -reset headers of every response
// (and Retry-After on a 429), and paces the poller within its share of it.
// The transport feeds it every response; the poller asks it before each
// request how long to wait.
//
// Auth0's bucket holds limit tokens and refills continuously at a rate the
// headers do not state; every client of the tenant's Management API draws
// on it. The pacing keeps two rules, with share = Config.RateLimitShare:
//
//  1. Floor: a request is sent only when the bucket will still hold
//     ⌈(1 − share) × limit⌉ tokens after it, so other clients always find
//     that much. The bucket is known to hold x-ratelimit-remaining at the
//     last response, one more token once x-ratelimit-reset has passed, and
//     remaining + refill × elapsed once the refill rate is measured.
//  2. Share: once the refill rate is measured, requests are spaced by a
//     golang.org/x/time/rate limiter of share × the refill rate and bursts
//     of share × limit, so that over any longer stretch the poller uses at
//     most that share of the refill and the rest fills the bucket up for
//     the others' bursts (TestRefillMeasurementLeavesNeighboursTheirShare:
//     with the floor alone a neighbour's bursts meet 429s).
//
// The refill rate is measured, never configured. Let N be the tokens in the
// bucket plus every token our own requests took: N grows by the refill, and
// only other clients' requests and a full bucket (which drops the refill)
// hold it back. At each response N lies within [remaining + taken,
// remaining + taken + 1) — exactly remaining + taken when the bucket was
// full — where taken counts our requests Auth0 had surely handled (for the
// low end) or possibly handled (for the high end, those still in flight
// included: Backfill may run beside Run). So for two responses A before B,
// (N_low(B) − N_high(A)) divided by the time from sending A to receiving B
// is a lower bound of the refill rate, whatever other clients did. The
// estimate is the best such bound resting on at least minMeasuredTokens
// tokens, taken only where the bucket ran low (B's remaining in the lower
// half of what lies above the floor): a bucket that stays near full shows
// only that the refill keeps up with the demand, and then there is nothing
// to pace. Until the rate is measured only the floor applies; draining a
// backlog measures it within about minMeasuredTokens tokens' refill (some
// 20 s at 100 requests a minute). As the estimate is a lower bound, the
// poller errs towards leaving more to the others. A change of
// x-ratelimit-limit (another plan) starts the measurement over.
type rateLimit struct {
	share   float64
	maxWait time.Duration

	mu        sync.Mutex
	known     bool      // a response carried x-ratelimit-remaining
	limit     int64     // bucket size; 0 = unknown
	remaining int64     // requests left in the bucket
	reset     time.Time // when the bucket refills (zero if unknown)
	limited   bool      // the last response was a 429
	retryAt   time.Time // Retry-After of that 429 (zero if none)
	at        time.Time // when the last response arrived

	taken    int64         // our answered requests that took a token, ever
	inflight int64         // our requests sent and not answered yet
	marks    []mark        // recent responses, oldest first, at most maxMarks
	refill   float64       // measured refill rate (tokens/s, a lower bound); 0 = not yet
	ours     *rate.Limiter // our share of the refill; nil until refill is measured
}

// mark is one response as the start of a measurement window.
type mark struct {
	sent time.Time // when the request was sent: Auth0 answered after it
	high float64   // upper bound of N (bucket + our taken tokens) then
}

func newRateLimit(share float64, maxBackoff time.Duration) *rateLimit {
	return &rateLimit{share: share, maxWait: max(maxBackoff, maxRateLimitWaitFloor)}
}

// sending records a request about to be sent. It returns the tokens our
// answered requests had taken by then, for observe, which must follow
// (or unanswered when the request got no answer).
func (r *rateLimit) sending() (takenBefore int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight++
	return r.taken
}

// unanswered records that a request sent got no answer.
func (r *rateLimit) unanswered() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight--
}

// observe records the rate-limit headers of one response to a request sent
// at sent, when our answered requests had taken takenBefore tokens, and
// answered at now.
func (r *rateLimit) observe(h http.Header, status int, sent, now time.Time, takenBefore int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight--
	// Every answer but a 429 took a token from the bucket.
	took := status != http.StatusTooManyRequests
	if took {
		r.taken++
		if r.ours != nil {
			r.ours.ReserveN(now, 1) // spent, even below zero: the next waits
		}
	}
	if v, err := strconv.ParseInt(h.Get("X-RateLimit-Limit"), 10, 64); err == nil && v > 0 {
		if r.limit != 0 && v != r.limit {
			// Another bucket: measure it afresh.
			r.marks, r.refill, r.ours = nil, 0, nil
		}
		r.limit = v
	}
	if v, err := strconv.ParseInt(h.Get("X-RateLimit-Remaining"), 10, 64); err == nil && v >= 0 {
		r.known, r.remaining = true, v
	} else {
		r.known = false
	}
	r.reset = time.Time{}
	if v, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil && v > 0 {
		r.reset = time.Unix(v, 0)
	}
	r.limited = status == http.StatusTooManyRequests
	r.retryAt = time.Time{}
	if r.limited {
		r.retryAt = parseRetryAfter(h.Get("Retry-After"), now)
	}
	r.at = now
	if r.known && r.limit > 0 {
		r.measure(took, sent, now, takenBefore)
	}
}

// measure adds the last response to the refill measurement.
func (r *rateLimit) measure(took bool, sent, now time.Time, takenBefore int64) {
	full := r.limit
	surely := takenBefore // handled before this request was
	if took {
		full-- // right after our request the bucket holds at most limit − 1
		surely++
	}
	// N when Auth0 answered: at least remaining plus the tokens surely
	// taken by then; at most remaining (+1 unless the bucket was full)
	// plus every token we may have taken, those in flight included.
	low := float64(r.remaining + surely)
	high := float64(r.remaining + r.taken + r.inflight)
	if r.remaining < full {
		high++
	}
	if floor := r.floor(); 2*(r.remaining-floor) < r.limit-floor {
		best := r.refill
		for _, m := range r.marks {
			if dt := now.Sub(m.sent).Seconds(); dt > 0 && low-m.high >= minMeasuredTokens {
				best = max(best, (low-m.high)/dt)
			}
		}
		switch {
		case best == r.refill:
		case r.ours == nil:
			// Pacing starts now, with nothing saved up.
			burst := max(1, int(r.share*float64(r.limit)+tokenEpsilon))
			r.ours = rate.NewLimiter(rate.Limit(r.share*best), burst)
			r.ours.ReserveN(now, burst)
		default:
			r.ours.SetLimitAt(now, rate.Limit(r.share*best))
		}
		r.refill = best
	}
	if len(r.marks) == maxMarks {
		r.marks = append(r.marks[:0], r.marks[1:]...)
	}
	r.marks = append(r.marks, mark{sent: sent, high: high})
}

// floor returns the tokens the bucket keeps for other clients:
// ⌈(1 − share) × limit⌉, at most limit − 1.
func (r *rateLimit) floor() int64 {
	if r.limit <= 0 {
		return 0
	}
	f := int64(math.Ceil((1-r.share)*float64(r.limit) - tokenEpsilon))
	return min(max(f, 0), r.limit-1)
}

// remainingRequests returns the last x-ratelimit-remaining, if any.
func (r *rateLimit) remainingRequests() (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remaining, r.known
}

// refillRate returns the measured refill rate in requests per second, 0
// while not measured.
func (r *rateLimit) refillRate() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refill
}

// wait returns how long to hold off before the next request: until the
// bucket holds a token above the floor, and, once the refill rate is
// measured, until our share allows another request. Zero when the last
// response carried no rate-limit headers.
func (r *rateLimit) wait(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d float64 // seconds
	if r.known && !r.limited {
		// A 429 is waited out by after429, right when it happens.
		d = r.floorWait(now)
	}
	if r.ours != nil {
		if short := 1 - r.ours.TokensAt(now); short > tokenEpsilon {
			d = max(d, short/float64(r.ours.Limit()))
		}
	}
	return r.clamp(time.Duration(math.Ceil(d * float64(time.Second))))
}

// floorWait returns the seconds until the bucket holds floor + 1 tokens.
func (r *rateLimit) floorWait(now time.Time) float64 {
	short := float64(r.floor()+1-r.remaining) - tokenEpsilon
	if short <= 0 {
		return 0
	}
	best := math.Inf(1)
	if r.refill > 0 {
		best = r.at.Sub(now).Seconds() + short/r.refill
	}
	if short <= 1 || r.refill == 0 {
		// One more token is there by the reset. Without a measured rate
		// and further below the floor, the request at the reset is a
		// probe: nothing else tells when the bucket has refilled.
		switch {
		case !r.reset.IsZero():
			best = min(best, r.reset.Sub(now).Seconds())
		case r.refill == 0:
			best = min(best, minRateLimitWait.Seconds())
		}
	}
	return max(best, 0)
}

// after429 returns how long to wait after a 429: until Retry-After or the
// bucket's reset, whichever is later, and at least minRateLimitWait.
func (r *rateLimit) after429(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	until := r.reset
	if r.retryAt.After(until) {
		until = r.retryAt
	}
	return max(r.clamp(until.Sub(now)), minRateLimitWait)
}

func (r *rateLimit) clamp(d time.Duration) time.Duration {
	return min(max(d, 0), r.maxWait)
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Time {
	if v == "" {
		return time.Time{}
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return now.Add(time.Duration(s) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Time{}
}

// transport observes every attempt of a logs request (the token requests do
// not pass it): it counts responses by class and feeds the rate-limit state.
type transport struct {
	base      http.RoundTripper
	clock     clockwork.Clock
	rl        *rateLimit
	requests  map[string]prometheus.Counter // by code class
	remaining prometheus.Gauge
	refill    prometheus.Gauge
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := t.clock.Now()
	takenBefore := t.rl.sending()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.rl.unanswered()
		t.requests[codeError].Inc()
		return resp, err
	}
	t.requests[codeClass(resp.StatusCode)].Inc()
	t.rl.observe(resp.Header, resp.StatusCode, sent, t.clock.Now(), takenBefore)
	if rem, ok := t.rl.remainingRequests(); ok {
		t.remaining.Set(float64(rem))
	}
	t.refill.Set(t.rl.refillRate())
	return resp, nil
}

// Response classes of authpipe_auth0_requests_total{code}.
const (
	code2xx   = "2xx"
	code4xx   = "4xx"
	code429   = "429"
	code5xx   = "5xx"
	codeError = "error" // no response, or a status outside the other classes
)

var codeClasses = []string{code2xx, code4xx, code429, code5xx, codeError}

func codeClass(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return code429
	case status >= 200 && status < 300:
		return code2xx
	case status >= 400 && status < 500:
		return code4xx
	case status >= 500 && status < 600:
		return code5xx
	default:
		return codeError
	}
}
