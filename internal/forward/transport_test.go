package forward

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// scripted answers requests with the queued statuses, then 200.
type scripted struct {
	mu      sync.Mutex
	answers []answer
	hits    atomic.Int64
}

type answer struct {
	status     int
	retryAfter string
}

func (s *scripted) queue(a ...answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers = append(s.answers, a...)
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	a := answer{status: http.StatusOK}
	if len(s.answers) > 0 {
		a, s.answers = s.answers[0], s.answers[1:]
	}
	s.mu.Unlock()
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, `{"success":false,"message":"echo alice@example.com"}`)
}

type transportFixture struct {
	srv      *httptest.Server
	script   *scripted
	tr       *transport
	client   *http.Client
	clock    *clockwork.FakeClock
	requests *prometheus.CounterVec
	logs     *syncBuffer
}

func newTransportFixture(t *testing.T, clock clockwork.Clock, timeout time.Duration) *transportFixture {
	t.Helper()
	s := &scripted{}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	logs := &syncBuffer{}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"code"})
	tr := newTransport(clock, slog.New(slog.NewJSONHandler(logs, nil)), 100*time.Millisecond, 10*time.Second, requests)
	t.Cleanup(tr.closeIdle)
	fc, _ := clock.(*clockwork.FakeClock)
	return &transportFixture{
		srv: srv, script: s, tr: tr, clock: fc, requests: requests, logs: logs,
		// As analytics-go builds it: a 10 s timeout around our transport.
		client: &http.Client{Transport: tr, Timeout: timeout},
	}
}

func (fx *transportFixture) post(body string) error {
	req, err := http.NewRequest(http.MethodPost, fx.srv.URL+"/v1/batch", strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := fx.client.Do(req)
	if resp != nil {
		_ = resp.Body.Close()
	}
	return err
}

// postAsync posts in the background; the result arrives on the channel.
func (fx *transportFixture) postAsync(body string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fx.post(body) }()
	return ch
}

func (fx *transportFixture) count(code string) float64 {
	return testutil.ToFloat64(fx.requests.WithLabelValues(code))
}

func statusOf(t *testing.T, err error) *StatusError {
	t.Helper()
	var se *StatusError
	require.ErrorAs(t, err, &se)
	return se
}

func TestTransportRateLimitPausesEveryRequest(t *testing.T) {
	fx := newTransportFixture(t, clockwork.NewFakeClock(), 10*time.Second)
	fx.script.queue(answer{status: 429, retryAfter: "2"})

	se := statusOf(t, fx.post("batch-a"))
	require.Equal(t, 429, se.Code)
	require.False(t, se.Permanent)
	require.Equal(t, 2*time.Second, se.RetryAfter)

	// Any other batch waits for the pause too.
	done := fx.postAsync("batch-b")
	require.NoError(t, fx.clock.BlockUntilContext(t.Context(), 1))
	fx.clock.Advance(time.Second)
	require.NoError(t, fx.clock.BlockUntilContext(t.Context(), 1), "still paused after 1 s")
	require.EqualValues(t, 1, fx.script.hits.Load())
	fx.clock.Advance(time.Second)
	require.NoError(t, <-done)
	require.EqualValues(t, 2, fx.script.hits.Load())
	require.Equal(t, 1.0, fx.count("429"))
	require.Equal(t, 1.0, fx.count("2xx"))
}

func TestTransportPermanentIsShortCircuited(t *testing.T) {
	for _, code := range []int{400, 413, 404, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			fx := newTransportFixture(t, clockwork.NewFakeClock(), 10*time.Second)
			fx.script.queue(answer{status: code})
			se := statusOf(t, fx.post("bad batch"))
			require.True(t, se.Permanent)
			require.Equal(t, code, se.Code)
			for range 9 { // analytics-go's further attempts of the same body
				require.Same(t, se, statusOf(t, fx.post("bad batch")))
			}
			require.EqualValues(t, 1, fx.script.hits.Load(), "a permanent answer is never asked again")
			require.NoError(t, fx.post("another batch"))
			label := "other4xx"
			if code == 400 || code == 413 {
				label = strconv.Itoa(code)
			}
			require.Equal(t, 1.0, fx.count(label))
		})
	}
}

func TestTransportTransientBacksOffPerBody(t *testing.T) {
	for _, code := range []int{500, 502, 503, 408} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			fx := newTransportFixture(t, clockwork.NewFakeClock(), 10*time.Second)
			fx.script.queue(answer{status: code})
			se := statusOf(t, fx.post("flaky"))
			require.False(t, se.Permanent)

			retry := fx.postAsync("flaky")
			require.NoError(t, fx.clock.BlockUntilContext(t.Context(), 1))
			// Another batch is not held back by this one's backoff.
			require.NoError(t, fx.post("other"))
			require.EqualValues(t, 2, fx.script.hits.Load())
			fx.clock.Advance(100 * time.Millisecond) // MinBackoff; jitter keeps it within
			require.NoError(t, <-retry)
			require.EqualValues(t, 3, fx.script.hits.Load())
		})
	}
}

func TestTransportRejectedWriteKey(t *testing.T) {
	for _, code := range []int{401, 403} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			fx := newTransportFixture(t, clockwork.NewFakeClock(), 10*time.Second)
			fx.script.queue(answer{status: code})
			se := statusOf(t, fx.post("batch"))
			require.False(t, se.Permanent, "a bad write key is not the event's fault")
			require.Contains(t, fx.logs.String(), "Segment rejected the write key")
			require.Equal(t, 1.0, fx.count(strconv.Itoa(code)))

			// Everything waits a minute; shutdown aborts the wait.
			require.Equal(t, fx.clock.Now().Add(time.Minute), fx.tr.pausedUntil())
			done := fx.postAsync("next")
			require.NoError(t, fx.clock.BlockUntilContext(t.Context(), 1))
			fx.tr.shutdown()
			require.ErrorIs(t, <-done, errStopping)
			require.EqualValues(t, 1, fx.script.hits.Load())
		})
	}
}

// TestTransportWaitBeyondDeadline checks that a backoff longer than the
// request's timeout fails the attempt with our error before net/http's
// timeout replaces it, without network traffic.
func TestTransportWaitBeyondDeadline(t *testing.T) {
	fx := newTransportFixture(t, clockwork.NewRealClock(), 600*time.Millisecond)
	fx.tr.minBackoff = 10 * time.Second
	fx.script.queue(answer{status: 503})
	statusOf(t, fx.post("slow"))
	err := fx.post("slow")
	require.ErrorIs(t, err, errBackingOff)
	require.EqualValues(t, 1, fx.script.hits.Load())
}

func TestTransportNetworkError(t *testing.T) {
	fx := newTransportFixture(t, clockwork.NewFakeClock(), 10*time.Second)
	fx.srv.Close()
	err := fx.post("batch")
	require.Error(t, err)
	var se *StatusError
	require.False(t, errors.As(err, &se))
	require.Equal(t, 1.0, fx.count("error"))
	require.Equal(t, "segment_transient: ", transientReason(err)[:len("segment_transient: ")])
}

func TestTransportNeverLogsBodies(t *testing.T) {
	fx := newTransportFixture(t, clockwork.NewFakeClock(), 10*time.Second)
	fx.script.queue(answer{status: 400}, answer{status: 503}, answer{status: 429, retryAfter: "0"}, answer{status: 401})
	for i := range 4 {
		require.Error(t, fx.post("alice@example.com "+strconv.Itoa(i)))
	}
	require.NotContains(t, fx.logs.String(), "alice@example.com")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", defaultRetryAfter},
		{"0", 0},
		{"7", 7 * time.Second},
		{"-3", 0},
		{"soon", defaultRetryAfter},
		{"99999999999", maxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(time.Hour).Format(http.TimeFormat), maxRetryAfter},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.want, parseRetryAfter(tc.in, now))
		})
	}
}

func TestBackoff(t *testing.T) {
	require.Equal(t, 100*time.Millisecond, backoff(100*time.Millisecond, time.Second, 1))
	require.Equal(t, 400*time.Millisecond, backoff(100*time.Millisecond, time.Second, 3))
	require.Equal(t, time.Second, backoff(100*time.Millisecond, time.Second, 60))
	for range 100 {
		d := jitter(time.Second)
		require.GreaterOrEqual(t, d, 500*time.Millisecond)
		require.LessOrEqual(t, d, time.Second)
	}
}
