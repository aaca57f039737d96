package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

type scripted struct {
	mu     sync.Mutex
	codes  []int // answered in turn; then 200
	bodies [][]byte
	paths  []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bodies = append(s.bodies, body)
	s.paths = append(s.paths, r.URL.Path)
	if len(s.codes) > 0 {
		c := s.codes[0]
		s.codes = s.codes[1:]
		w.WriteHeader(c)
	}
}

func (s *scripted) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

func TestReceiverRetries(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	alert := Alert{Labels: map[string]string{"alertname": "X"}, Annotations: map[string]string{}, StartsAt: now, EndsAt: now.Add(4 * time.Minute)}
	for _, tc := range []struct {
		name     string
		codes    []int
		requests int
		sent     float64
		errors   float64
	}{
		{"success", nil, 1, 1, 0},
		{"5xx and 429 are retried", []int{503, 429}, 3, 1, 0},
		{"4xx is permanent", []int{400}, 1, 0, 1},
		{"gives up after the retries", []int{500, 500, 500, 500}, 3, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &scripted{codes: tc.codes}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			m := NewMetrics(prometheus.NewPedanticRegistry())
			r := NewAlertmanager(ts.URL+"/", ts.Client(), clockwork.NewRealClock(), slog.New(slog.DiscardHandler), m, 2, time.Millisecond)
			r.deliver(context.Background(), []Alert{alert})
			require.Equal(t, tc.requests, srv.requests())
			require.Equal(t, tc.sent, testutil.ToFloat64(m.Sent.WithLabelValues(ReceiverAlertmanager)))
			require.Equal(t, tc.errors, testutil.ToFloat64(m.SendErrors.WithLabelValues(ReceiverAlertmanager)))
			require.Equal(t, "/api/v2/alerts", srv.paths[0])
			var got []Alert
			require.NoError(t, json.Unmarshal(srv.bodies[0], &got))
			require.Equal(t, []Alert{alert}, got)
		})
	}
}

func TestReceiverErrorsHideTheURL(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	r := NewWebhook("http://user:s3cret@127.0.0.1:1/hook?token=s3cret", &http.Client{Timeout: time.Second}, clockwork.NewRealClock(), slog.New(slog.DiscardHandler), m, 0, time.Millisecond)
	err := r.post(context.Background(), []Alert{{}})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
	require.Contains(t, err.Error(), "post alerts to webhook")
}

func TestWebhookPayload(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(now)
	srv := &scripted{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	m := NewMetrics(prometheus.NewRegistry())
	r := NewWebhook(ts.URL+"/hook", ts.Client(), clock, slog.New(slog.DiscardHandler), m, 0, time.Millisecond)
	firing := Alert{Labels: map[string]string{"alertname": "A", "ip": "1.2.3.4"}, Annotations: map[string]string{"value": "40"}, StartsAt: now, EndsAt: now.Add(time.Minute)}
	resolved := Alert{Labels: map[string]string{"alertname": "B"}, Annotations: map[string]string{}, StartsAt: now.Add(-time.Hour), EndsAt: now}
	r.deliver(context.Background(), []Alert{firing, resolved})
	r.deliver(context.Background(), []Alert{resolved})
	require.Equal(t, 2, srv.requests())
	var p WebhookPayload
	require.NoError(t, json.Unmarshal(srv.bodies[0], &p))
	require.Equal(t, "/hook", srv.paths[0])
	require.Equal(t, WebhookPayload{Version: "1", Receiver: "authpipe", Status: "firing", Alerts: []WebhookAlert{
		{Status: "firing", Labels: firing.Labels, Annotations: firing.Annotations, StartsAt: firing.StartsAt, EndsAt: firing.EndsAt},
		{Status: "resolved", Labels: resolved.Labels, Annotations: resolved.Annotations, StartsAt: resolved.StartsAt, EndsAt: resolved.EndsAt},
	}}, p)
	require.NoError(t, json.Unmarshal(srv.bodies[1], &p))
	require.Equal(t, "resolved", p.Status)
}

// A full queue drops (and counts) instead of blocking the check.
func TestReceiverQueueNeverBlocks(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	r := NewWebhook("http://127.0.0.1:1/", http.DefaultClient, clockwork.NewRealClock(), slog.New(slog.DiscardHandler), m, 0, time.Millisecond)
	for range receiverQueue + 3 {
		r.Notify([]Alert{{}})
	}
	require.Equal(t, 3.0, testutil.ToFloat64(m.SendErrors.WithLabelValues(ReceiverWebhook)))
}
