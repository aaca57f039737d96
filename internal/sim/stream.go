package sim

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// StreamFormat is a custom webhook stream's Content Format.
type StreamFormat string

// The content formats of Auth0's custom webhook streams.
const (
	StreamJSONLines  StreamFormat = "JSONLINES"  // one record per line
	StreamJSONArray  StreamFormat = "JSONARRAY"  // [record, …]
	StreamJSONObject StreamFormat = "JSONOBJECT" // {"logs": [record, …]}
)

// StreamFormats lists the content formats.
var StreamFormats = []StreamFormat{StreamJSONLines, StreamJSONArray, StreamJSONObject}

// Defaults of StreamOptions.
const (
	DefaultStreamBatchSize    = 100
	DefaultStreamTries        = 3
	DefaultStreamRetryDelay   = time.Second
	DefaultStreamErroredRetry = time.Minute
	DefaultStreamPauseAfter   = 7 * 24 * time.Hour
	DefaultStreamTimeout      = 10 * time.Second
)

// RawLog is one log event as the Auth0 simulator stores it: its log_id and
// its JSON as GET /api/v2/logs returns it (read-only: it may be shared).
type RawLog struct {
	ID   string
	JSON []byte
}

// StreamBody encodes logs as the body of one Log Streams request in
// format: each log becomes the record {"log_id": ID, "data": JSON}.
func StreamBody(format StreamFormat, logs []RawLog) []byte {
	n := 16
	for _, l := range logs {
		n += len(l.JSON) + len(l.ID) + 24
	}
	head, sep, tail, term := "", ",", "", ""
	switch format {
	case StreamJSONLines:
		sep, term = "", "\n"
	case StreamJSONArray:
		head, tail = "[", "]"
	case StreamJSONObject:
		head, tail = `{"logs":[`, "]}"
	}
	b := append(make([]byte, 0, n), head...)
	for i, l := range logs {
		if i > 0 {
			b = append(b, sep...)
		}
		b = append(b, `{"log_id":`...)
		b = appendString(b, l.ID)
		b = append(b, `,"data":`...)
		b = append(b, l.JSON...)
		b = append(b, '}')
		b = append(b, term...)
	}
	return append(b, tail...)
}

// StreamOptions configures a Stream. Zero fields get the defaults.
type StreamOptions struct {
	// URL is the Payload URL the stream POSTs to. Required.
	URL string
	// Authorization is sent verbatim as the Authorization header (Auth0's
	// Authorization Token, e.g. "Bearer …"); empty sends none.
	Authorization string
	// Format is the Content Format. Default StreamJSONLines.
	Format StreamFormat
	// BatchSize is the most logs in one delivery. Default 100.
	BatchSize int
	// Tries is how often one delivery is tried before it errors. Default 3.
	Tries int
	// RetryDelay is the wait between the tries of a delivery. Default 1s.
	RetryDelay time.Duration
	// ErroredRetry is how long an errored delivery (all its tries failed)
	// waits before the process starts again. Default 1m.
	ErroredRetry time.Duration
	// PauseAfter pauses the stream when no delivery succeeded for this
	// long while some failed (Auth0: 7 days); Resume restarts it.
	PauseAfter time.Duration
	// DropRate is the share of deliveries dropped for good, in [0, 1]: a
	// dropped delivery is never sent, its log_ids are in Dropped.
	DropRate float64
	// Seed seeds the drop decisions: the same seed drops the same deliveries.
	Seed uint64
	// KeepFirst deliveries are never dropped: a stream seen working before
	// it loses any (authpipe counts as missed only logs dated after the
	// stream's first delivery).
	KeepFirst int
	// Timeout bounds each HTTP request. Default 10s.
	Timeout time.Duration
	// Client sends the requests. Default: an http.Client with Timeout.
	Client *http.Client
	// Clock times the waits between tries, errored retries and the pause.
	// Default: the real clock.
	Clock clockwork.Clock
}

// StreamStats counts what a Stream did.
type StreamStats struct {
	Offered    int         // logs offered
	Delivered  int         // logs in deliveries answered 2xx
	Deliveries int         // deliveries answered 2xx
	Requests   int         // HTTP requests (every try)
	Retries    int         // tries after the first of each delivery, errored restarts included
	Errored    int         // times a delivery failed all its tries and was kept for later
	Dropped    int         // logs dropped for good
	Pending    int         // logs neither delivered nor dropped: queued, in flight or errored
	Status     map[int]int // answers by status code; 0 counts requests without an answer
	Paused     bool        // paused after PauseAfter of failures
}

// delivery is one batch of logs and its retry state.
type delivery struct {
	logs []RawLog
	body []byte
	due  time.Time // errored: when to start again
}

// Stream pushes logs to a webhook as an Auth0 custom webhook Log Stream
// does (see the package doc for what is faithful). Feed it with Offer (or
// Follow an Auth0 simulator) and run it with Run. Safe for concurrent use.
type Stream struct {
	opts   StreamOptions
	client *http.Client
	clock  clockwork.Clock

	mu           sync.Mutex
	rng          *rand.Rand
	queue        []RawLog    // offered, not yet in a delivery, in offer order
	errored      []*delivery // by due time
	dropped      []string
	failingSince time.Time // first failure since the last success; zero when none
	batches      int       // deliveries made from the queue, dropped ones included
	stats        StreamStats
	wake         chan struct{} // capacity 1: new logs, or resumed
}

// NewStream returns a stream pushing to opts.URL.
func NewStream(opts StreamOptions) (*Stream, error) {
	switch {
	case opts.URL == "":
		return nil, errors.New("sim stream: no URL")
	case opts.DropRate < 0 || opts.DropRate > 1:
		return nil, fmt.Errorf("sim stream: drop rate %v: want 0 to 1", opts.DropRate)
	case opts.Format != "" && !slices.Contains(StreamFormats, opts.Format):
		return nil, fmt.Errorf("sim stream: format %q: want one of %v", opts.Format, StreamFormats)
	}
	opts.Format = cmp.Or(opts.Format, StreamJSONLines)
	orDefault(&opts.BatchSize, DefaultStreamBatchSize)
	orDefault(&opts.Tries, DefaultStreamTries)
	orDefault(&opts.RetryDelay, DefaultStreamRetryDelay)
	orDefault(&opts.ErroredRetry, DefaultStreamErroredRetry)
	orDefault(&opts.PauseAfter, DefaultStreamPauseAfter)
	orDefault(&opts.Timeout, DefaultStreamTimeout)
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	client := opts.Client
	if client == nil {
		client = &http.Client{Timeout: opts.Timeout}
	}
	return &Stream{
		opts:   opts,
		client: client,
		clock:  opts.Clock,
		rng:    rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9E3779B97F4A7C15)),
		stats:  StreamStats{Status: map[int]int{}},
		wake:   make(chan struct{}, 1),
	}, nil
}

// Offer queues logs for delivery, after those offered before.
func (s *Stream) Offer(logs ...RawLog) {
	if len(logs) == 0 {
		return
	}
	s.mu.Lock()
	s.queue = append(s.queue, logs...)
	s.stats.Offered += len(logs)
	s.stats.Pending += len(logs)
	s.mu.Unlock()
	s.signal()
}

// Follow offers the stream every log the Auth0 simulator stores from now
// on, in ingest order (log_id order): the stream sees what the logs API
// serves.
func (s *Stream) Follow(a *Auth0) {
	a.Subscribe(func(logs []RawLog) { s.Offer(logs...) })
}

func (s *Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns a copy of the counters.
func (s *Stream) Stats() StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Status = maps.Clone(s.stats.Status)
	return st
}

// Dropped returns the log_ids of the deliveries dropped for good, in the
// order they were dropped.
func (s *Stream) Dropped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dropped)
}

// Run delivers until ctx ends: errored deliveries when due, else the next
// batch of offered logs, one delivery at a time. It returns nil when ctx
// ends; a delivery cut short is kept and tried again by the next Run.
func (s *Stream) Run(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			// A delivery cut short by the end is kept due now: without
			// this check it would be tried again at once, for ever.
			return nil
		}
		d, wait := s.next()
		if d != nil {
			s.deliver(ctx, d)
			continue
		}
		var timer clockwork.Timer
		var due <-chan time.Time
		if wait > 0 {
			timer = s.clock.NewTimer(wait)
			due = timer.Chan()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-s.wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// next returns the next delivery to try, or nil and how long until an
// errored one is due (0: none; wait for offers).
func (s *Stream) next() (*delivery, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stats.Paused {
		return nil, 0
	}
	now := s.clock.Now()
	if len(s.errored) > 0 && !s.errored[0].due.After(now) {
		d := s.errored[0]
		s.errored = s.errored[1:]
		return d, 0
	}
	for len(s.queue) > 0 {
		n := min(len(s.queue), s.opts.BatchSize)
		logs := slices.Clone(s.queue[:n])
		s.queue = s.queue[n:]
		s.batches++
		if s.batches > s.opts.KeepFirst && s.opts.DropRate > 0 && s.rng.Float64() < s.opts.DropRate {
			for _, l := range logs {
				s.dropped = append(s.dropped, l.ID)
			}
			s.stats.Dropped += n
			s.stats.Pending -= n
			continue
		}
		return &delivery{logs: logs, body: StreamBody(s.opts.Format, logs)}, 0
	}
	if len(s.errored) > 0 {
		return nil, s.errored[0].due.Sub(now)
	}
	return nil, 0
}

// deliver tries d up to Tries times; if every try fails, d is kept as
// errored and tried again after ErroredRetry.
func (s *Stream) deliver(ctx context.Context, d *delivery) {
	for try := 1; try <= s.opts.Tries; try++ {
		if try > 1 {
			s.mu.Lock()
			s.stats.Retries++
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				s.keep(d, s.clock.Now())
				return
			case <-s.clock.After(s.opts.RetryDelay):
			}
		}
		if ok := s.post(ctx, d); ok {
			return
		}
		if ctx.Err() != nil {
			s.keep(d, s.clock.Now())
			return
		}
	}
	now := s.clock.Now()
	s.mu.Lock()
	s.stats.Errored++
	if s.failingSince.IsZero() {
		s.failingSince = now
	}
	if now.Sub(s.failingSince) >= s.opts.PauseAfter {
		s.stats.Paused = true
	}
	s.mu.Unlock()
	s.keep(d, now.Add(s.opts.ErroredRetry))
}

// keep puts d among the errored deliveries, due at due.
func (s *Stream) keep(d *delivery, due time.Time) {
	d.due = due
	s.mu.Lock()
	i, _ := slices.BinarySearchFunc(s.errored, due, func(e *delivery, t time.Time) int {
		if e.due.After(t) {
			return 1
		}
		return -1 // after every equal one: first in, first out
	})
	s.errored = slices.Insert(s.errored, i, d)
	s.mu.Unlock()
}

// post sends d once and reports whether it was answered 2xx.
func (s *Stream) post(ctx context.Context, d *delivery) bool {
	status := 0
	defer func() {
		s.mu.Lock()
		s.stats.Requests++
		s.stats.Status[status]++
		if status >= 200 && status < 300 {
			s.stats.Deliveries++
			s.stats.Delivered += len(d.logs)
			s.stats.Pending -= len(d.logs)
			s.failingSince = time.Time{}
		}
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.URL, bytes.NewReader(d.body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	if s.opts.Authorization != "" {
		req.Header.Set("Authorization", s.opts.Authorization)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	status = resp.StatusCode
	return status >= 200 && status < 300
}
