// Package notify delivers threshold alerts to Alertmanager (API v2, POST
// /api/v2/alerts) and to a generic webhook (WebhookPayload, the shape of
// Alertmanager's own webhook notifications).
//
// Notify never blocks the caller: it queues a batch (a full queue drops it,
// counted). Run delivers the batches in order and retries 429, 5xx and
// network errors with exponential backoff; any other status is permanent. A
// batch that still fails is dropped and counted in
// authpipe_alerts_send_errors_total: the engine re-sends active alerts every
// re-send interval, so the next round makes it good. At shutdown what is
// still queued gets one attempt. Errors and logs never include a receiver's
// URL (it may carry credentials).
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/logrepeat"
)

// Receiver names: the receiver label of authpipe_alerts_sent_total and
// authpipe_alerts_send_errors_total.
const (
	ReceiverAlertmanager = "alertmanager"
	ReceiverWebhook      = "webhook"
)

var receivers = []string{ReceiverAlertmanager, ReceiverWebhook}

// Metrics are the receivers' metrics, series of both receivers created at 0.
type Metrics struct {
	Sent       *prometheus.CounterVec // authpipe_alerts_sent_total{receiver}
	SendErrors *prometheus.CounterVec // authpipe_alerts_send_errors_total{receiver}
	Configured *prometheus.GaugeVec   // authpipe_alerts_receiver_configured{receiver}
}

// NewMetrics registers the receivers' metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		Sent: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_alerts_sent_total",
			Help: "Alerts (firing, re-sent or resolved) delivered to a receiver."}, []string{"receiver"}),
		SendErrors: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_alerts_send_errors_total",
			Help: "Alert batches a receiver did not take after all retries, or that were dropped."}, []string{"receiver"}),
		Configured: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_alerts_receiver_configured",
			Help: "1 if alerts go to this receiver (ALERTMANAGER_URL, AUTHPIPE_ALERT_WEBHOOK_URL), else 0: with neither, breaches show only in metrics."},
			[]string{"receiver"}),
	}
	for _, r := range receivers {
		m.Sent.WithLabelValues(r)
		m.SendErrors.WithLabelValues(r)
		m.Configured.WithLabelValues(r)
	}
	return m
}

// Alert is one alert as Alertmanager's API v2 takes it (POST /api/v2/alerts).
// A firing alert carries an EndsAt in the future (Alertmanager resolves it by
// itself if authpipe stops re-sending it); a resolved one an EndsAt that
// has passed.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Resolved reports whether the alert is resolved at now.
func (a Alert) Resolved(now time.Time) bool { return !a.EndsAt.After(now) }

// WebhookPayload is the JSON body the generic webhook receiver gets: the
// shape of Alertmanager's own webhook notifications, so tools that read
// those read it too.
type WebhookPayload struct {
	Version  string         `json:"version"`  // "1"
	Receiver string         `json:"receiver"` // "authpipe"
	Status   string         `json:"status"`   // "firing" if any alert fires, else "resolved"
	Alerts   []WebhookAlert `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookPayload.
type WebhookAlert struct {
	Status      string            `json:"status"` // "firing" or "resolved"
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

// Receiver posts alert batches to one endpoint, in order, retrying with
// backoff: 2xx is success, 429, 5xx and network errors are retried, any
// other status is permanent. A batch that still fails is dropped (and
// counted): alerts are re-sent while active anyway.
type Receiver struct {
	name    string
	url     string
	client  *http.Client
	clock   clockwork.Clock
	log     *slog.Logger
	rep     *logrepeat.Summarizer // failed sends while the endpoint is down
	m       *Metrics
	retries int
	backoff time.Duration
	encode  func(alerts []Alert, now time.Time) ([]byte, error)
	queue   chan []Alert
}

const receiverQueue = 256

// NewAlertmanager returns the receiver of the Alertmanager at base (its base
// URL; /api/v2/alerts is appended), retrying a batch retries times after the
// first attempt, the first wait backoff (doubling, at most 30 s).
func NewAlertmanager(base string, client *http.Client, clock clockwork.Clock, log *slog.Logger, m *Metrics, retries int, backoff time.Duration) *Receiver {
	u := strings.TrimRight(base, "/")
	if !strings.HasSuffix(u, "/api/v2/alerts") {
		u += "/api/v2/alerts"
	}
	return newReceiver(ReceiverAlertmanager, u, client, clock, log, m, retries, backoff,
		func(alerts []Alert, _ time.Time) ([]byte, error) { return json.Marshal(alerts) })
}

// NewWebhook returns the receiver that posts WebhookPayload to u, retrying
// as NewAlertmanager's does.
func NewWebhook(u string, client *http.Client, clock clockwork.Clock, log *slog.Logger, m *Metrics, retries int, backoff time.Duration) *Receiver {
	return newReceiver(ReceiverWebhook, u, client, clock, log, m, retries, backoff,
		func(alerts []Alert, now time.Time) ([]byte, error) {
			p := WebhookPayload{Version: "1", Receiver: "authpipe", Status: "resolved"}
			for _, a := range alerts {
				st := "firing"
				if a.Resolved(now) {
					st = "resolved"
				} else {
					p.Status = "firing"
				}
				p.Alerts = append(p.Alerts, WebhookAlert{Status: st, Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: a.EndsAt})
			}
			return json.Marshal(p)
		})
}

func newReceiver(name, u string, client *http.Client, clock clockwork.Clock, log *slog.Logger, m *Metrics, retries int, backoff time.Duration,
	encode func([]Alert, time.Time) ([]byte, error)) *Receiver {
	m.Configured.WithLabelValues(name).Set(1)
	return &Receiver{name: name, url: u, client: client, clock: clock, log: log, m: m, rep: logrepeat.New(log, clock, 0),
		retries: retries, backoff: backoff, queue: make(chan []Alert, receiverQueue), encode: encode}
}

// Notify queues alerts to send; it never blocks: a full queue drops them
// (counted), as they are re-sent while active anyway.
func (r *Receiver) Notify(alerts []Alert) {
	select {
	case r.queue <- alerts:
	default:
		r.m.SendErrors.WithLabelValues(r.name).Inc()
		r.log.Error("alert queue full, alerts dropped until re-sent", "receiver", r.name, "alerts", len(alerts))
	}
}

// Run sends queued batches until ctx ends, then gives what is still queued
// one attempt each within drain.
func (r *Receiver) Run(ctx context.Context, drain time.Duration) {
	for {
		select {
		case batch := <-r.queue:
			r.deliver(ctx, batch)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
			defer cancel()
			for {
				select {
				case batch := <-r.queue:
					if err := r.post(dctx, batch); err != nil {
						r.m.SendErrors.WithLabelValues(r.name).Inc()
						r.log.Warn("send alerts at shutdown", "receiver", r.name, "err", err)
					} else {
						r.m.Sent.WithLabelValues(r.name).Add(float64(len(batch)))
					}
				default:
					return
				}
			}
		}
	}
}

func (r *Receiver) deliver(ctx context.Context, batch []Alert) {
	wait := r.backoff
	for attempt := 1; ; attempt++ {
		err := r.post(ctx, batch)
		if err == nil {
			r.m.Sent.WithLabelValues(r.name).Add(float64(len(batch)))
			r.rep.OK(ctx, "send alerts, will retry")
			r.rep.OK(ctx, "send alerts")
			return
		}
		var perm permanentError
		if errors.As(err, &perm) || attempt > r.retries || ctx.Err() != nil {
			r.m.SendErrors.WithLabelValues(r.name).Inc()
			r.rep.Fail(ctx, "send alerts", slog.LevelError, "send alerts", err, "receiver", r.name, "attempts", attempt, "alerts", len(batch))
			return
		}
		r.rep.Fail(ctx, "send alerts, will retry", slog.LevelWarn, "send alerts, will retry", err, "receiver", r.name, "attempt", attempt)
		select {
		case <-ctx.Done():
		case <-r.clock.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

type permanentError struct{ error }

// post sends one batch once. Errors never include the URL (it may carry
// credentials).
func (r *Receiver) post(ctx context.Context, batch []Alert) error {
	body, err := r.encode(batch, r.clock.Now())
	if err != nil {
		return permanentError{fmt.Errorf("encode alerts: %w", err)}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return permanentError{errors.New("build alert request: invalid URL")}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "authpipe")
	resp, err := r.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post alerts to %s: %w", r.name, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("post alerts to %s: status %d", r.name, resp.StatusCode)
	default:
		return permanentError{fmt.Errorf("post alerts to %s: status %d (not retried)", r.name, resp.StatusCode)}
	}
}

// Fanout sends to every configured receiver.
type Fanout []*Receiver

// Notify queues alerts at every receiver.
func (f Fanout) Notify(alerts []Alert) {
	if len(alerts) == 0 {
		return
	}
	for _, r := range f {
		r.Notify(alerts)
	}
}
