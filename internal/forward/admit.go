package forward

import (
	"context"
	"sync"
	"time"

	"github.com/authpipe/authpipe/internal/buffer"
)

func (f *Forwarder) freeSlots() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg.MaxInFlight - len(f.byEntry) - f.reserved
}

// reserve counts n entries read and not yet admitted against MaxInFlight.
func (f *Forwarder) reserve(n int) {
	f.mu.Lock()
	f.reserved += n
	f.mu.Unlock()
}

// unreserve releases what reserve counted, once admit has taken the
// entries in (or resolved them), and wakes a waitSpace.
func (f *Forwarder) unreserve(n int) {
	f.mu.Lock()
	f.reserved -= n
	f.mu.Unlock()
	select {
	case f.space <- struct{}{}:
	default:
	}
}

// waitSpace blocks until fewer than MaxInFlight entries are held and returns
// the free room, or 0 when ctx is done.
func (f *Forwarder) waitSpace(ctx context.Context) int {
	for {
		if free := f.freeSlots(); free > 0 {
			return free
		}
		select {
		case <-ctx.Done():
			return 0
		case <-f.space:
		}
	}
}

// admit maps each entry and hands it to the Segment client, dead-letters it
// when it can never become a valid message, or acknowledges it unsent when
// the filter leaves its type out.
func (f *Forwarder) admit(bg context.Context, entries []buffer.Entry, now time.Time) {
	var filtered map[string][]string // by reason: entry ids
	defer func() { f.ackFiltered(bg, filtered) }()
	for _, e := range entries {
		f.stage.Received.Inc()
		f.mu.Lock()
		_, held := f.byEntry[e.ID]
		f.mu.Unlock()
		if held {
			continue
		}
		if len(e.Raw) == 0 {
			f.stage.Failed.Inc()
			f.deadLetter(bg, []buffer.Entry{e}, (&InvalidError{Reason: "entry has no data (deleted from the stream while pending)"}).Error())
			continue
		}
		l, err := e.Log() // the fields parsed when the event was buffered
		if err != nil {
			f.stage.Failed.Inc()
			f.deadLetter(bg, []buffer.Entry{e}, (&InvalidError{Reason: err.Error()}).Error())
			continue
		}
		if reason, drop := f.cfg.Filter.Drop(l.Type); drop {
			if filtered == nil {
				filtered = map[string][]string{}
			}
			filtered[reason] = append(filtered[reason], e.ID)
			continue
		}
		track, trimmed, err := f.mp.mapLog(l)
		if err != nil {
			f.stage.Failed.Inc()
			f.deadLetter(bg, []buffer.Entry{e}, err.Error())
			continue
		}
		if trimmed {
			f.m.trimmed.Inc()
		}

		f.mu.Lock()
		if it := f.items[track.MessageId]; it != nil {
			// The same log_id buffered twice: one message, acked together.
			it.entries = append(it.entries, e)
			f.byEntry[e.ID] = it
			f.m.inFlight.Set(float64(len(f.byEntry)))
			f.mu.Unlock()
			continue
		}
		it := &item{id: track.MessageId, entries: []buffer.Entry{e}, track: track, touched: now, active: true}
		f.items[it.id] = it
		f.byEntry[e.ID] = it
		f.active++
		f.m.inFlight.Set(float64(len(f.byEntry)))
		f.mu.Unlock()
		f.enqueue(it)
	}
}

// enqueue hands an active item to its client. It reports false when Enqueue
// is stopped (the item is parked: it stays pending).
func (f *Forwarder) enqueue(it *item) bool {
	f.enqMu.RLock()
	defer f.enqMu.RUnlock()
	if f.enqClosed {
		f.park(it)
		return false
	}
	c := f.main
	if it.isolated {
		c = f.iso
	}
	if err := c.Enqueue(it.track); err != nil {
		// Resolved like a failed send; results has room for every item.
		f.results <- result{id: it.id, iso: it.isolated, err: err}
		return true
	}
	f.stage.Written.Inc()
	return true
}

// sendLoop hands queued items (retries, isolated re-sends) to a client. The
// isolation loop keeps at most IsolationInFlight messages in its client.
func (f *Forwarder) sendLoop(q *queue, iso bool, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			f.parkAll(q.popAll())
			return
		case <-q.notify:
		}
		items := q.popAll()
		for i, it := range items {
			if iso {
				select {
				case f.isoSlots <- struct{}{}:
				case <-stop:
					f.parkAll(items[i:])
					f.parkAll(q.popAll())
					return
				}
			}
			if !f.enqueue(it) && iso {
				<-f.isoSlots
			}
		}
	}
}

// park marks an item inactive without resolving it: its entries stay
// pending in the buffer (and held, so they are counted at shutdown).
func (f *Forwarder) park(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deactivate(it)
}

func (f *Forwarder) parkAll(items []*item) {
	for _, it := range items {
		f.park(it)
	}
}

// deactivate requires mu.
func (f *Forwarder) deactivate(it *item) {
	if !it.active {
		return
	}
	it.active = false
	f.active--
	select {
	case f.idle <- struct{}{}:
	default:
	}
}

// forget drops an item and its entries from memory (after ack or dead
// letter, or after a Redis failure that leaves them pending for reclaim).
func (f *Forwarder) forget(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deactivate(it)
	if f.items[it.id] == it {
		delete(f.items, it.id)
	}
	for _, e := range it.entries {
		if f.byEntry[e.ID] == it {
			delete(f.byEntry, e.ID)
		}
	}
	f.m.inFlight.Set(float64(len(f.byEntry)))
	select {
	case f.space <- struct{}{}:
	default:
	}
}

// queue is an unbounded FIFO of items with a wake-up signal.
type queue struct {
	mu     sync.Mutex
	items  []*item
	notify chan struct{}
}

func newQueue() *queue { return &queue{notify: make(chan struct{}, 1)} }

func (q *queue) push(it *item) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *queue) popAll() []*item {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}
