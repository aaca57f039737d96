package forward

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/buffer"
)

// callback receives analytics-go's per-message outcome on its sender
// goroutines and only hands it on.
type callback struct {
	f   *Forwarder
	iso bool
}

func (c callback) Success(m analytics.Message) {
	c.f.results <- result{id: messageIDOf(m), iso: c.iso}
}

func (c callback) Failure(m analytics.Message, err error) {
	if err == nil {
		err = errors.New("segment client reported failure without error")
	}
	c.f.results <- result{id: messageIDOf(m), iso: c.iso, err: err}
}

func messageIDOf(m analytics.Message) string {
	switch t := m.(type) {
	case analytics.Track:
		return t.MessageId
	case *analytics.Track:
		if t != nil {
			return t.MessageId
		}
	}
	return ""
}

// resolveLoop applies callback results and acknowledges accepted messages in
// batches, until results is closed; then it flushes the last acks.
func (f *Forwarder) resolveLoop(bg context.Context) {
	tick := f.clock.NewTicker(ackEvery)
	defer tick.Stop()
	var acks []*item
	for {
		select {
		case r, ok := <-f.results:
			if !ok {
				f.ack(bg, acks)
				return
			}
			if r.iso {
				select { // the slot its isolation sender took
				case <-f.isoSlots:
				default:
				}
			}
			if it := f.resolve(bg, r); it != nil {
				acks = append(acks, it)
				if len(acks) >= ackBatch {
					f.ack(bg, acks)
					acks = nil
				}
			}
		case <-tick.Chan():
			if len(acks) > 0 {
				f.ack(bg, acks)
				acks = nil
			}
		}
	}
}

// resolve applies one result. It returns the item when it is to be acked.
func (f *Forwarder) resolve(bg context.Context, r result) *item {
	f.mu.Lock()
	it := f.items[r.id]
	if it == nil || !it.active {
		f.mu.Unlock()
		return nil
	}
	f.deactivate(it)
	ph := f.phase
	f.mu.Unlock()

	if r.err == nil {
		f.stage.Acked.Inc()
		return it
	}
	f.stage.Failed.Inc()

	var se *StatusError
	switch {
	case errors.Is(r.err, analytics.ErrMessageTooBig):
		f.deadLetter(bg, it.entries, fmt.Sprintf("oversize: analytics-go rejected the message as over %d bytes", MaxMessageBytes))
		f.forget(it)
	case errors.As(r.err, &se) && se.Permanent:
		switch {
		case it.isolated:
			f.deadLetter(bg, it.entries, buffer.ReasonSegmentRejected+": "+se.Status)
			f.forget(it)
		case ph == closed:
			// Stays pending; isolated after restart.
		default:
			// A batch-mate may be the bad one: re-send this message alone.
			f.mu.Lock()
			it.isolated = true
			it.active = true
			f.active++
			f.mu.Unlock()
			f.isoQ.push(it)
		}
	default:
		reason := transientReason(r.err)
		for _, e := range it.entries {
			ctx, cancel := context.WithTimeout(bg, redisTimeout)
			if err := f.buf.NoteFailure(ctx, e.ID, reason); err != nil {
				f.log.Warn("note failure reason", "entry", e.ID, "err", err)
			}
			cancel()
		}
		if ph != running {
			return nil // parked: stays pending
		}
		f.scheduleRetry(it)
	}
	return nil
}

// scheduleRetry re-sends an item after a backoff that grows with its
// transient failures and respects Segment's rate-limit pause.
func (f *Forwarder) scheduleRetry(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.phase != running {
		return
	}
	it.attempts++
	d := jitter(backoff(f.cfg.MinBackoff, f.cfg.MaxBackoff, it.attempts))
	if pause := f.tr.pausedUntil().Sub(f.clock.Now()); pause > d {
		d = pause
	}
	f.m.retries.Inc()
	it.retry = f.clock.AfterFunc(d, func() { f.retryNow(it) })
}

func (f *Forwarder) retryNow(it *item) {
	f.mu.Lock()
	if f.phase != running || f.items[it.id] != it || it.active {
		f.mu.Unlock()
		return
	}
	it.retry = nil
	it.active = true
	f.active++
	iso := it.isolated
	f.mu.Unlock()
	if iso {
		f.isoQ.push(it)
	} else {
		f.mainQ.push(it)
	}
}

// transientReason is the failure reason noted on an entry (and used by the
// buffer if the entry is dead-lettered after too many deliveries).
func transientReason(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return "segment_transient: " + se.Status
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return "segment_transient: " + ue.Err.Error()
	}
	return "segment_transient: " + err.Error()
}
