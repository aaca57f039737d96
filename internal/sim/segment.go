package sim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Limits of Segment's HTTP Tracking API.
const (
	MaxBatchBytes    = 500 * 1024
	MaxMessageBytes  = 32 * 1024
	MaxBatchMessages = 2500
)

// SegmentOptions configures the Segment simulator.
type SegmentOptions struct {
	// WriteKey is the only key accepted (HTTP Basic user, or "writeKey" in
	// the body as Segment also allows).
	WriteKey string
	// Clock stamps FirstSeen. Default: real clock. SetDelay always sleeps on
	// the real clock (it races real HTTP timeouts).
	Clock clockwork.Clock
	// AcceptBadKeys makes a wrong or missing write key answer 200 and drop
	// the batch, as the real API does (its edge does not validate keys). The
	// default answers 401 so tests can see a misconfigured key.
	AcceptBadKeys bool
	// OnAccept, when set, is called with the messageIds a batch is about to
	// add (first copies only) before the 200 is sent; an error answers 500 and
	// records nothing. The demo persists what "Segment" received with it, so
	// a restarted demo can prove nothing was lost.
	OnAccept func(messageIDs []string) error
	// IDsOnly records messageIds (and when each was first seen) but not the
	// messages themselves: Messages returns nothing. For benchmarks, where
	// keeping a million messages costs gigabytes and CPU beside the worker.
	IDsOnly bool
}

// SegmentStats counts what the Segment simulator saw.
type SegmentStats struct {
	Requests   int         // every request
	Status     map[int]int // responses by status code
	Batches    int         // batches answered 200 with their messages recorded
	Accepted   int         // messages recorded (redelivered copies included)
	Duplicates int         // accepted messages whose messageId was already recorded
	Dropped    int         // messages in 200 batches silently dropped as invalid
}

// Segment simulates POST /v1/batch of Segment's HTTP Tracking API. It is an
// http.Handler. Safe for concurrent use.
type Segment struct {
	writeKey      string
	acceptBadKeys bool
	onAccept      func([]string) error
	idsOnly       bool
	clock         clockwork.Clock

	mu        sync.Mutex
	ids       map[string]int
	firstSeen map[string]time.Time
	msgs      []json.RawMessage
	distinct  int // first copies accepted (len(msgs) unless IDsOnly)
	noID      int

	failN, failStatus int
	status            int
	rateN             int
	retryAfter        time.Duration
	delay             time.Duration
	reject            map[string]bool

	stats SegmentStats
}

var _ http.Handler = (*Segment)(nil)

// NewSegment returns a Segment simulator with nothing recorded.
func NewSegment(opts SegmentOptions) *Segment {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	return &Segment{
		writeKey:      opts.WriteKey,
		acceptBadKeys: opts.AcceptBadKeys,
		onAccept:      opts.OnAccept,
		idsOnly:       opts.IDsOnly,
		clock:         opts.Clock,
		ids:           map[string]int{},
		firstSeen:     map[string]time.Time{},
		reject:        map[string]bool{},
		stats:         SegmentStats{Status: map[int]int{}},
	}
}

// MessageIDs returns, for each messageId, how many times it arrived in
// accepted (200) batches. Dropped messages are not counted.
func (s *Segment) MessageIDs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.ids)
}

// Messages returns the accepted messages in arrival order, the first copy of
// each messageId only (what Segment keeps after its messageId dedupe).
func (s *Segment) Messages() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]json.RawMessage(nil), s.msgs...)
}

// Count returns the number of distinct messageIds accepted.
func (s *Segment) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.distinct
}

// FirstSeen returns when (Clock) a messageId was first accepted.
func (s *Segment) FirstSeen(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.firstSeen[id]
	return t, ok
}

// FailNext makes the next n authenticated batches answer status (without
// recording them).
func (s *Segment) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus = n, status
}

// SetStatus makes every authenticated batch answer status until SetStatus(0).
func (s *Segment) SetStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

// RateLimitNext makes the next n authenticated batches answer 429 with a
// Retry-After of retryAfter (whole seconds, rounded up).
func (s *Segment) RateLimitNext(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateN, s.retryAfter = n, retryAfter
}

// SetDelay makes every request wait d (real time) before it is handled; a
// request whose context ends first gets no answer.
func (s *Segment) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// RejectMessageID makes any batch containing the messageId answer 400.
func (s *Segment) RejectMessageID(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reject[id] = true
}

// Reset forgets everything recorded, the counters and the faults.
func (s *Segment) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids, s.firstSeen, s.msgs, s.distinct, s.noID = map[string]int{}, map[string]time.Time{}, nil, 0, 0
	s.failN, s.failStatus, s.status, s.rateN, s.retryAfter, s.delay = 0, 0, 0, 0, 0, 0
	s.reject = map[string]bool{}
	s.stats = SegmentStats{Status: map[int]int{}}
}

// Preload marks messageIds as already received (once each), as if accepted
// by an earlier run: later copies count as duplicates.
func (s *Segment) Preload(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	for _, id := range ids {
		if s.ids[id] == 0 {
			s.ids[id] = 1
			s.firstSeen[id] = now
		}
	}
}

// Stats returns a copy of the counters.
func (s *Segment) Stats() SegmentStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Status = maps.Clone(s.stats.Status)
	return st
}

// batchBody is the request body of POST /v1/batch.
type batchBody struct {
	Batch    []json.RawMessage `json:"batch"`
	WriteKey string            `json:"writeKey"`
}

// messageHead holds the fields Segment validates.
type messageHead struct {
	Type        string          `json:"type"`
	Event       string          `json:"event"`
	UserID      json.RawMessage `json:"userId"`
	AnonymousID json.RawMessage `json:"anonymousId"`
	MessageID   string          `json:"messageId"`
}

// ServeHTTP implements http.Handler.
func (s *Segment) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.Requests++
	delay := s.delay
	s.mu.Unlock()
	// Read the body first: only then does net/http notice a client that
	// hangs up, which ends r.Context() during the delay.
	raw, readErr := readBody(r)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	status, body, retryAfter := s.handle(r, raw, readErr)
	s.mu.Lock()
	s.stats.Status[status]++
	s.mu.Unlock()
	if retryAfter >= 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeJSON(w, status, body)
}

// segmentResult is the response body. Segment answers {"success": true};
// the error shape {"success": false, "message": …} is inferred (Segment
// does not document its error bodies).
type segmentResult struct {
	Success bool   `json:"success"`
	Message string `json:"message,omitempty"`
}

func fail(status int, format string, args ...any) (int, segmentResult, int) {
	return status, segmentResult{Message: fmt.Sprintf(format, args...)}, -1
}

// handle decides the answer: status, body and Retry-After seconds (-1: none).
func (s *Segment) handle(r *http.Request, raw []byte, err error) (int, segmentResult, int) {
	if r.URL.Path != "/v1/batch" {
		return fail(http.StatusNotFound, "not found")
	}
	if r.Method != http.MethodPost {
		return fail(http.StatusMethodNotAllowed, "method not allowed")
	}
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return fail(http.StatusBadRequest, "request body is larger than %d bytes", MaxBatchBytes)
		}
		return fail(http.StatusBadRequest, "read body: %v", err)
	}
	body, decodeErr := decodeBatch(raw)

	key, _, hasBasic := r.BasicAuth()
	if !hasBasic {
		key = body.WriteKey
	}
	if !(hasBasic || body.WriteKey != "") || key != s.writeKey {
		if s.acceptBadKeys {
			s.mu.Lock()
			s.stats.Dropped += len(body.Batch)
			s.mu.Unlock()
			return http.StatusOK, segmentResult{Success: true}, -1
		}
		return fail(http.StatusUnauthorized, "invalid write key")
	}

	s.mu.Lock()
	switch {
	case s.status != 0:
		st := s.status
		s.mu.Unlock()
		return fail(st, "simulated failure")
	case s.failN > 0:
		s.failN--
		st := s.failStatus
		s.mu.Unlock()
		return fail(st, "simulated failure")
	case s.rateN > 0:
		s.rateN--
		secs := int(math.Ceil(s.retryAfter.Seconds()))
		s.mu.Unlock()
		st, res, _ := fail(http.StatusTooManyRequests, "too many requests")
		return st, res, secs
	}
	s.mu.Unlock()

	if decodeErr != nil {
		return fail(http.StatusBadRequest, "invalid JSON")
	}
	if len(body.Batch) > MaxBatchMessages {
		return fail(http.StatusBadRequest, "batch has %d messages, more than %d", len(body.Batch), MaxBatchMessages)
	}
	heads := make([]messageHead, len(body.Batch))
	for i, m := range body.Batch {
		if len(m) > MaxMessageBytes {
			return fail(http.StatusBadRequest, "message %d is larger than %d bytes", i, MaxMessageBytes)
		}
		h, err := decodeHead(m)
		if err != nil {
			return fail(http.StatusBadRequest, "invalid JSON in message %d", i)
		}
		heads[i] = h
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range heads {
		if h.MessageID != "" && s.reject[h.MessageID] {
			return fail(http.StatusBadRequest, "message rejected")
		}
	}
	if s.onAccept != nil {
		var fresh []string
		for _, h := range heads {
			if valid(h) && h.MessageID != "" && s.ids[h.MessageID] == 0 {
				fresh = append(fresh, h.MessageID)
			}
		}
		if len(fresh) > 0 {
			if err := s.onAccept(fresh); err != nil {
				return fail(http.StatusInternalServerError, "record batch: %v", err)
			}
		}
	}
	now := s.clock.Now()
	s.stats.Batches++
	for i, h := range heads {
		if !valid(h) {
			s.stats.Dropped++
			continue
		}
		id := h.MessageID
		if id == "" {
			s.noID++
			id = "sim-generated-" + strconv.Itoa(s.noID)
		}
		s.stats.Accepted++
		s.ids[id]++
		if s.ids[id] > 1 {
			s.stats.Duplicates++
			continue
		}
		s.firstSeen[id] = now
		s.distinct++
		if !s.idsOnly {
			s.msgs = append(s.msgs, bytes.Clone(body.Batch[i]))
		}
	}
	return http.StatusOK, segmentResult{Success: true}, -1
}

// valid reports whether Segment would keep a message: a known type, an
// event name for track, and a userId or anonymousId.
func valid(h messageHead) bool {
	if !slices.Contains([]string{"track", "identify", "page", "screen", "group", "alias"}, h.Type) || h.Type == "track" && h.Event == "" {
		return false
	}
	return present(h.UserID) || present(h.AnonymousID)
}

func present(v json.RawMessage) bool {
	s := string(bytes.TrimSpace(v))
	return s != "" && s != "null" && s != `""`
}

var errTooLarge = errors.New("body too large")

// readBody reads at most MaxBatchBytes (after gzip decoding, if any).
func readBody(r *http.Request) ([]byte, error) {
	var src io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	b, err := io.ReadAll(io.LimitReader(src, MaxBatchBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBatchBytes {
		return nil, errTooLarge
	}
	return b, nil
}
