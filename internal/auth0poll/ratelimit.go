package auth0poll

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
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
)

// rateLimit is what the logs API last said about its token bucket
// (x-ratelimit-limit, -remaining, -reset, and Retry-After on a 429). The
// transport writes it on every response; the poller reads it before each
// request. Basic pacing: wait for the reset when the bucket is empty or a
// request was refused. It is its own type so that budget-sharing pacing can
// grow here without touching the poll loop.
type rateLimit struct {
	maxWait time.Duration

	mu        sync.Mutex
	known     bool      // a response carried x-ratelimit-remaining
	limit     int64     // bucket size
	remaining int64     // requests left in the bucket
	reset     time.Time // when the bucket refills (zero if unknown)
	limited   bool      // the last response was a 429
	retryAt   time.Time // Retry-After of that 429 (zero if none)
}

func newRateLimit(maxBackoff time.Duration) *rateLimit {
	return &rateLimit{maxWait: max(maxBackoff, maxRateLimitWaitFloor)}
}

// observe records the rate-limit headers of one response.
func (r *rateLimit) observe(h http.Header, status int, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, err := strconv.ParseInt(h.Get("X-RateLimit-Limit"), 10, 64); err == nil {
		r.limit = v
	}
	if v, err := strconv.ParseInt(h.Get("X-RateLimit-Remaining"), 10, 64); err == nil {
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
}

// remainingRequests returns the last x-ratelimit-remaining, if any.
func (r *rateLimit) remainingRequests() (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remaining, r.known
}

// wait returns how long to hold off before the next request: until the
// reset when the last response left the bucket empty, zero otherwise.
func (r *rateLimit) wait(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limited || !r.known || r.remaining > 0 || r.reset.IsZero() {
		// A 429 is waited out by after429, right when it happens.
		return 0
	}
	return r.clamp(r.reset.Sub(now))
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
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.requests[codeError].Inc()
		return resp, err
	}
	t.requests[codeClass(resp.StatusCode)].Inc()
	t.rl.observe(resp.Header, resp.StatusCode, t.clock.Now())
	if rem, ok := t.rl.remainingRequests(); ok {
		t.remaining.Set(float64(rem))
	}
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
