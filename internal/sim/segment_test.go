package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/analytics-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
)

const writeKey = "wk_test_123"

func newSegment(t *testing.T) (*sim.Segment, *httptest.Server) {
	t.Helper()
	s := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

// callback collects analytics-go's per-message outcomes.
type callback struct {
	mu       sync.Mutex
	success  map[string]int
	failures map[string]error
}

// wait blocks until n messages have resolved (success or failure): Close
// would otherwise cut analytics-go's retries short.
func (c *callback) wait(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		got := len(c.failures)
		for _, k := range c.success {
			got += k
		}
		return got >= n
	}, 10*time.Second, 5*time.Millisecond)
}

func newCallback() *callback {
	return &callback{success: map[string]int{}, failures: map[string]error{}}
}

func (c *callback) Success(m analytics.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.success[m.(analytics.Track).MessageId]++
}

func (c *callback) Failure(m analytics.Message, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures[m.(analytics.Track).MessageId] = err
}

type quietLogger struct{}

func (quietLogger) Logf(string, ...any)   {}
func (quietLogger) Errorf(string, ...any) {}

func newAnalytics(t *testing.T, srv *httptest.Server, key string, cb *callback) analytics.Client {
	t.Helper()
	c, err := analytics.NewWithConfig(key, analytics.Config{
		Endpoint:   srv.URL,
		Interval:   20 * time.Millisecond,
		BatchSize:  250,
		Callback:   cb,
		Logger:     quietLogger{},
		RetryAfter: func(int) time.Duration { return 5 * time.Millisecond },
	})
	require.NoError(t, err)
	return c
}

func track(id string) analytics.Track {
	return analytics.Track{
		MessageId:  id,
		UserId:     "auth0|" + id,
		Event:      "Success Login",
		Timestamp:  time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC),
		Properties: analytics.NewProperties().Set("log_id", id),
	}
}

func TestSegmentAnalyticsGo(t *testing.T) {
	s, srv := newSegment(t)
	cb := newCallback()
	c := newAnalytics(t, srv, writeKey, cb)
	const n = 3000
	for i := range n {
		require.NoError(t, c.Enqueue(track(fmt.Sprintf("msg-%05d", i))))
	}
	cb.wait(t, n)
	require.NoError(t, c.Close())

	require.Len(t, cb.success, n)
	require.Empty(t, cb.failures)
	ids := s.MessageIDs()
	require.Len(t, ids, n)
	for i := range n {
		require.Equal(t, 1, ids[fmt.Sprintf("msg-%05d", i)])
	}
	msgs := s.Messages()
	require.Len(t, msgs, n)
	var first struct {
		Type, Event, UserID, MessageID string
		Properties                     map[string]any
	}
	// Batches travel concurrently: arrival order is not enqueue order.
	for _, m := range msgs {
		require.NoError(t, json.Unmarshal(m, &first))
		if first.MessageID == "msg-00000" {
			break
		}
	}
	require.Equal(t, "track", first.Type)
	require.Equal(t, "Success Login", first.Event)
	require.Equal(t, "msg-00000", first.MessageID)
	require.Equal(t, "msg-00000", first.Properties["log_id"])
	st := s.Stats()
	require.Equal(t, n, st.Accepted)
	require.Zero(t, st.Dropped)
	require.Equal(t, st.Batches, st.Status[http.StatusOK])
	_, ok := s.FirstSeen("msg-00042")
	require.True(t, ok)
}

func TestSegmentAnalyticsGoRetries(t *testing.T) {
	t.Run("503 then success", func(t *testing.T) {
		s, srv := newSegment(t)
		s.FailNext(2, http.StatusServiceUnavailable)
		cb := newCallback()
		c := newAnalytics(t, srv, writeKey, cb)
		require.NoError(t, c.Enqueue(track("a")))
		cb.wait(t, 1)
		require.NoError(t, c.Close())
		require.Equal(t, map[string]int{"a": 1}, cb.success)
		require.Equal(t, map[string]int{"a": 1}, s.MessageIDs(), "failed attempts are not recorded")
		require.Equal(t, 2, s.Stats().Status[http.StatusServiceUnavailable])
	})
	t.Run("429 then success", func(t *testing.T) {
		s, srv := newSegment(t)
		s.RateLimitNext(1, 1500*time.Millisecond)
		cb := newCallback()
		c := newAnalytics(t, srv, writeKey, cb)
		require.NoError(t, c.Enqueue(track("b")))
		cb.wait(t, 1)
		require.NoError(t, c.Close())
		require.Equal(t, map[string]int{"b": 1}, cb.success)
		require.Equal(t, 1, s.Stats().Status[http.StatusTooManyRequests])
	})
	t.Run("wrong key fails every attempt", func(t *testing.T) {
		s, srv := newSegment(t)
		cb := newCallback()
		c := newAnalytics(t, srv, "wrong", cb)
		require.NoError(t, c.Enqueue(track("c")))
		cb.wait(t, 1)
		require.NoError(t, c.Close())
		require.Contains(t, cb.failures, "c")
		require.Empty(t, s.MessageIDs())
		require.Equal(t, 10, s.Stats().Status[http.StatusUnauthorized], "analytics-go tries 10 times")
	})
	t.Run("redelivery counted", func(t *testing.T) {
		s, srv := newSegment(t)
		for range 2 {
			cb := newCallback()
			c := newAnalytics(t, srv, writeKey, cb)
			require.NoError(t, c.Enqueue(track("d")))
			cb.wait(t, 1)
			require.NoError(t, c.Close())
			require.Equal(t, 1, cb.success["d"])
		}
		require.Equal(t, map[string]int{"d": 2}, s.MessageIDs())
		require.Len(t, s.Messages(), 1)
		require.Equal(t, 1, s.Stats().Duplicates)
	})
}

type rawReq struct {
	key     *string // nil: no Basic auth
	body    string
	headers map[string]string
}

func post(t *testing.T, srv *httptest.Server, r rawReq) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/batch", strings.NewReader(r.body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if r.key != nil {
		req.SetBasicAuth(*r.key, "")
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

func batchOf(msgs ...string) string {
	return `{"batch":[` + strings.Join(msgs, ",") + `],"sentAt":"2025-03-10T12:00:00Z"}`
}

func msg(id string, extra string) string {
	return fmt.Sprintf(`{"type":"track","event":"Success Login","userId":"u1","messageId":%q%s}`, id, extra)
}

func TestSegmentBatchRules(t *testing.T) {
	key, bad := writeKey, "nope"
	big := strings.Repeat("x", 32*1024)
	many := make([]string, 2501)
	for i := range many {
		many[i] = msg(fmt.Sprintf("m%d", i), "")
	}
	huge := make([]string, 30) // 30 × ~20 KB > 500 KB, each message < 32 KB
	for i := range huge {
		huge[i] = msg(fmt.Sprintf("h%d", i), `,"properties":{"p":"`+strings.Repeat("y", 20*1024)+`"}`)
	}
	tests := []struct {
		name         string
		req          rawReq
		wantCode     int
		wantBody     string
		wantIDs      map[string]int
		wantDropped  int
		wantAccepted int
	}{
		{"ok", rawReq{key: &key, body: batchOf(msg("a", ""), msg("b", `,"anonymousId":"x"`))}, 200, `{"success":true}`, map[string]int{"a": 1, "b": 1}, 0, 2},
		{"write key in body", rawReq{body: `{"writeKey":"` + writeKey + `","batch":[` + msg("a", "") + `]}`}, 200, `{"success":true}`, map[string]int{"a": 1}, 0, 1},
		{"no auth", rawReq{body: batchOf(msg("a", ""))}, 401, "", map[string]int{}, 0, 0},
		{"wrong key", rawReq{key: &bad, body: batchOf(msg("a", ""))}, 401, "", map[string]int{}, 0, 0},
		{"invalid JSON", rawReq{key: &key, body: `{"batch":[{"type":`}, 400, "", map[string]int{}, 0, 0},
		{"message not an object", rawReq{key: &key, body: `{"batch":[42]}`}, 400, "", map[string]int{}, 0, 0},
		{"message too big", rawReq{key: &key, body: batchOf(msg("a", ""), msg("b", `,"properties":{"p":"`+big+`"}`))}, 400, "", map[string]int{}, 0, 0},
		{"message at limit", rawReq{key: &key, body: batchOf(msg("a", `,"properties":{"p":"`+big[:32*1024-100]+`"}`))}, 200, "", map[string]int{"a": 1}, 0, 1},
		{"body too big", rawReq{key: &key, body: batchOf(huge...)}, 400, "", map[string]int{}, 0, 0},
		{"too many messages", rawReq{key: &key, body: batchOf(many...)}, 400, "", map[string]int{}, 0, 0},
		{"2500 messages", rawReq{key: &key, body: batchOf(many[:2500]...)}, 200, "", nil, 0, 2500},
		{"no user dropped", rawReq{key: &key, body: batchOf(msg("a", ""), `{"type":"track","event":"E","messageId":"nouser"}`)}, 200, `{"success":true}`, map[string]int{"a": 1}, 1, 1},
		{"empty ids dropped", rawReq{key: &key, body: batchOf(`{"type":"track","event":"E","userId":"","anonymousId":null,"messageId":"empty"}`)}, 200, "", map[string]int{}, 1, 0},
		{"track without event dropped", rawReq{key: &key, body: batchOf(`{"type":"track","userId":"u","messageId":"noevent"}`)}, 200, "", map[string]int{}, 1, 0},
		{"identify without event kept", rawReq{key: &key, body: batchOf(`{"type":"identify","userId":"u","messageId":"id1"}`)}, 200, "", map[string]int{"id1": 1}, 0, 1},
		{"unknown type dropped", rawReq{key: &key, body: batchOf(`{"type":"bogus","userId":"u","messageId":"x"}`)}, 200, "", map[string]int{}, 1, 0},
		{"duplicate in batch", rawReq{key: &key, body: batchOf(msg("a", ""), msg("a", ""))}, 200, "", map[string]int{"a": 2}, 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, srv := newSegment(t)
			res, body := post(t, srv, tc.req)
			require.Equal(t, tc.wantCode, res.StatusCode, body)
			if tc.wantBody != "" {
				require.JSONEq(t, tc.wantBody, body)
			}
			var parsed struct {
				Success bool   `json:"success"`
				Message string `json:"message"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &parsed))
			require.Equal(t, tc.wantCode == 200, parsed.Success)
			if tc.wantCode != 200 {
				require.NotEmpty(t, parsed.Message)
			}
			if tc.wantIDs != nil {
				require.Equal(t, tc.wantIDs, s.MessageIDs())
			}
			st := s.Stats()
			require.Equal(t, tc.wantDropped, st.Dropped)
			require.Equal(t, tc.wantAccepted, st.Accepted)
			require.Equal(t, 1, st.Status[tc.wantCode])
		})
	}
}

func TestSegmentFaults(t *testing.T) {
	key := writeKey
	send := func(t *testing.T, srv *httptest.Server, id string) *http.Response {
		res, _ := post(t, srv, rawReq{key: &key, body: batchOf(msg(id, ""))})
		return res
	}
	t.Run("fail next", func(t *testing.T) {
		s, srv := newSegment(t)
		s.FailNext(2, http.StatusBadGateway)
		require.Equal(t, 502, send(t, srv, "a").StatusCode)
		require.Equal(t, 502, send(t, srv, "a").StatusCode)
		require.Equal(t, 200, send(t, srv, "a").StatusCode)
		require.Equal(t, map[string]int{"a": 1}, s.MessageIDs())
	})
	t.Run("set status", func(t *testing.T) {
		s, srv := newSegment(t)
		s.SetStatus(http.StatusServiceUnavailable)
		for range 3 {
			require.Equal(t, 503, send(t, srv, "a").StatusCode)
		}
		s.SetStatus(0)
		require.Equal(t, 200, send(t, srv, "a").StatusCode)
		require.Equal(t, 3, s.Stats().Status[503])
	})
	t.Run("rate limit", func(t *testing.T) {
		s, srv := newSegment(t)
		s.RateLimitNext(1, 1500*time.Millisecond)
		res := send(t, srv, "a")
		require.Equal(t, 429, res.StatusCode)
		require.Equal(t, "2", res.Header.Get("Retry-After"))
		res = send(t, srv, "a")
		require.Equal(t, 200, res.StatusCode)
		require.Empty(t, res.Header.Get("Retry-After"))
	})
	t.Run("reject message id", func(t *testing.T) {
		s, srv := newSegment(t)
		s.RejectMessageID("poison")
		res, _ := post(t, srv, rawReq{key: &key, body: batchOf(msg("a", ""), msg("poison", ""))})
		require.Equal(t, 400, res.StatusCode)
		require.Empty(t, s.MessageIDs(), "the whole batch is rejected")
		require.Equal(t, 200, send(t, srv, "a").StatusCode)
	})
	t.Run("delay respects the client's deadline", func(t *testing.T) {
		s := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey})
		srv := httptest.NewServer(s)
		s.SetDelay(2 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/batch", bytes.NewReader([]byte(batchOf(msg("a", "")))))
		req.SetBasicAuth(writeKey, "")
		start := time.Now()
		_, err := srv.Client().Do(req)
		require.Error(t, err)
		require.Less(t, time.Since(start), 2*time.Second)
		s.SetDelay(10 * time.Millisecond)
		require.Equal(t, 200, send(t, srv, "b").StatusCode)
		srv.Close() // waits for handlers: the abandoned one must have returned
		require.Less(t, time.Since(start), time.Second)
		require.Equal(t, map[string]int{"b": 1}, s.MessageIDs())
		require.Equal(t, map[int]int{200: 1}, s.Stats().Status)
	})
	t.Run("accept bad keys like the real API", func(t *testing.T) {
		s := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey, AcceptBadKeys: true})
		srv := httptest.NewServer(s)
		defer srv.Close()
		bad := "nope"
		res, body := post(t, srv, rawReq{key: &bad, body: batchOf(msg("a", ""))})
		require.Equal(t, 200, res.StatusCode)
		require.JSONEq(t, `{"success":true}`, body)
		require.Empty(t, s.MessageIDs())
		require.Equal(t, 1, s.Stats().Dropped)
	})
	t.Run("reset", func(t *testing.T) {
		s, srv := newSegment(t)
		s.SetStatus(500)
		s.Reset()
		require.Equal(t, 200, send(t, srv, "a").StatusCode)
		s.Reset()
		require.Empty(t, s.MessageIDs())
		require.Zero(t, s.Stats().Requests)
	})
}

func TestSegmentConcurrent(t *testing.T) {
	s, srv := newSegment(t)
	key := writeKey
	var wg sync.WaitGroup
	codes := make(chan int, 80)
	for w := range 8 {
		wg.Go(func() {
			for b := range 10 {
				msgs := make([]string, 50)
				for i := range msgs {
					msgs[i] = msg(fmt.Sprintf("w%d-b%d-%d", w, b, i), "")
				}
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/batch", strings.NewReader(batchOf(msgs...)))
				req.SetBasicAuth(key, "")
				res, err := srv.Client().Do(req)
				if err != nil {
					codes <- -1
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				codes <- res.StatusCode
			}
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, 200, c)
	}
	require.Len(t, s.MessageIDs(), 8*10*50)
	require.Len(t, s.Messages(), 8*10*50)
	require.Equal(t, 8*10*50, s.Count())
}

func BenchmarkSegmentBatch(b *testing.B) {
	s := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey})
	srv := httptest.NewServer(s)
	defer srv.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msgs := make([]string, 100)
		for j := range msgs {
			msgs[j] = msg(fmt.Sprintf("%d-%d", i, j), "")
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/batch", strings.NewReader(batchOf(msgs...)))
		req.SetBasicAuth(writeKey, "")
		res, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}

func TestSegmentOnAcceptAndPreload(t *testing.T) {
	var recorded []string
	fail := false
	seg := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey, OnAccept: func(ids []string) error {
		if fail {
			return fmt.Errorf("disk full")
		}
		recorded = append(recorded, ids...)
		return nil
	}})
	srv := httptest.NewServer(seg)
	t.Cleanup(srv.Close)
	key := writeKey
	seg.Preload([]string{"old"})

	res, _ := post(t, srv, rawReq{key: &key, body: batchOf(msg("old", ""), msg("a", ""), msg("b", ""))})
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, []string{"a", "b"}, recorded, "only first copies are handed over")
	require.Equal(t, map[string]int{"old": 2, "a": 1, "b": 1}, seg.MessageIDs())

	fail = true
	res, body := post(t, srv, rawReq{key: &key, body: batchOf(msg("c", ""))})
	require.Equal(t, http.StatusInternalServerError, res.StatusCode, body)
	require.NotContains(t, seg.MessageIDs(), "c", "a batch that could not be recorded is not accepted")
}

// IDsOnly records messageIds, first-seen times, counts and duplicates as
// usual, but not the messages.
func TestSegmentIDsOnly(t *testing.T) {
	s := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey, IDsOnly: true})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cb := newCallback()
	c := newAnalytics(t, srv, writeKey, cb)
	for i := range 300 {
		require.NoError(t, c.Enqueue(track(fmt.Sprintf("msg-%05d", i%200))))
	}
	cb.wait(t, 300)
	require.NoError(t, c.Close())

	require.Equal(t, 200, s.Count())
	require.Empty(t, s.Messages())
	require.Len(t, s.MessageIDs(), 200)
	require.Equal(t, 100, s.Stats().Duplicates)
	_, seen := s.FirstSeen("msg-00007")
	require.True(t, seen)
	s.Reset()
	require.Zero(t, s.Count())
}
