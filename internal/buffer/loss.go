package buffer

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Data-loss detection (DESIGN.md, delivery contract 7): what a buffer
// remembers in process memory about the data it has seen stored, the signs
// of lost data it compares against that memory, and the one incident it
// makes of them. The Redis and Bolt backends each survey their store; this
// file is what they share.

// Kinds of lost data: the `what` label of authpipe_buffer_data_loss_found.
const (
	// LostCheckpoint: the stored checkpoint is gone, or older than one this
	// process saw stored.
	LostCheckpoint = "checkpoint"
	// LostStream: the stream is gone (Redis).
	LostStream = "stream"
	// LostGroup: a consumer group this process reads with is gone.
	LostGroup = "consumer_group"
	// LostDedupe: the dedupe record lacks the log_id of the newest entry
	// of the stream (of the highest log_id ever buffered, when the stream
	// holds no entry).
	LostDedupe = "dedupe_record"
	// LostFence: the poller lease's fencing-token counter went backwards.
	LostFence = "fencing_token"
	// LostFile: the embedded buffer's file is gone or older than the state
	// recorded beside it.
	LostFile = "buffer_file"
)

// LostKinds lists every kind of lost data, for series created at zero.
var LostKinds = []string{LostCheckpoint, LostStream, LostGroup, LostDedupe, LostFence, LostFile}

// ErrDataLoss is returned (wrapped) by an Append that found the buffer had
// lost data since this process last looked: nothing was written. The
// poller asks Resume where to continue.
var ErrDataLoss = errors.New("the buffer lost data")

// Finding is one sign of lost data.
type Finding struct {
	What   string // one of LostKinds
	Detail string // what was found, for the operator
}

// Incident is one occurrence of "the buffer lost data" as this process saw
// it: every sign found at once, or within foldWindow of the last one,
// counts as one incident.
type Incident struct {
	Number uint64 // 1 for the first incident of this process, and so on
	// Generation is the buffer's loss generation (LossGeneration) when the
	// incident last changed what the poller must do.
	Generation uint64
	At         time.Time
	Found      []Finding
	// Repoll says that what may have been lost is polled again from
	// Auth0: every log after RepollFrom up to RepollUntil (the checkpoint
	// known before the loss), and on from there. RepollFrom is the point
	// up to which every event was known to be acknowledged by every
	// consumer group; "" when nothing was known: the start of Auth0's
	// retention. Without Repoll the stream still held everything (only
	// consumer groups or the fencing counter were lost).
	Repoll                  bool
	RepollFrom, RepollUntil string
}

// Kinds returns the kinds of what was found, each once, in LostKinds order.
func (i Incident) Kinds() []string {
	var out []string
	for _, k := range LostKinds {
		if slices.ContainsFunc(i.Found, func(f Finding) bool { return f.What == k }) {
			out = append(out, k)
		}
	}
	return out
}

// Position is where the poller continues (Resume).
type Position struct {
	// From is the log_id to poll after; "" when nothing is known (first
	// start, or a loss with nothing known delivered): the start of Auth0's
	// retention.
	From string
	// Generation is the buffer's loss generation the answer is for
	// (LossGeneration); pass it to the next Resume.
	Generation uint64
	// Repoll is the incident From re-polls after, nil when From is the
	// stored checkpoint.
	Repoll *Incident
}

// observation is a sign of loss seen outside a survey: the fencing counter
// a lease or a fenced append found below a token this process held.
type observation struct {
	fence int64 // the counter as found
}

// survey is one reading of what a buffer holds, as far as loss detection
// and the delivered watermark need it.
type survey struct {
	checkpoint string
	stream     bool            // the stream exists (always on Bolt)
	groups     map[string]bool // consumer groups that exist
	// first is the first entry of the stream some group has not
	// acknowledged (every entry before it has been), firstLog its log_id;
	// "" when there is none.
	first, firstLog string
	// newest is the newest entry. dedupeRef is the log_id checked against
	// the dedupe record: the newest entry's, or when the stream holds none
	// (every entry acknowledged and trimmed), the highest ever added;
	// dedupeMissing: it is dated within the retention and not in the
	// record.
	newest, newestLog string
	dedupeRef         string
	dedupeMissing     bool
	// behindLow is the lowest from-position (auth0log.CheckpointAt of its
	// second) of entries added out of log_id order (backfill, dead
	// letters replayed) that may not be acknowledged yet; "" when none.
	behindLow string
	fence     int64 // the poller lease's fencing counter
	fenceRead bool  // fence was read (the buffer knows the key)
}

// foldWindow: signs found within it of the last sign of an incident are
// part of that incident. A loss is seldom one atomic step as authpipe sees
// it: an operator destroys the groups one XGROUP DESTROY at a time, a
// restarting Redis is met by one component and then another.
const foldWindow = 10 * time.Second

// Group states in a lossWatch's memory.
const (
	groupKnown     = 1 // used by a consumer of this process, seen to exist
	groupRestoring = 2 // found gone and counted; recreated without counting again
)

// memory is what a lossWatch remembers; snapshot copies it.
type memory struct {
	surveyed   bool
	checkpoint string // the highest stored checkpoint seen (read or written)
	stream     bool
	groups     map[string]int
	fence      int64
	fenceKey   string
	first      string // as the last survey found them (see survey)
	firstLog   string
	newest     string
	newestLog  string
	dedupeSeen string // log_id (dedupeRef) at which a missing dedupe record was counted
	// delivered is the watermark: every log up to it (as a from-position)
	// has been acknowledged by every consumer group. "" when unknown.
	delivered string
	writes    uint64 // appends that moved the checkpoint or the fence
}

func (m memory) clone() memory {
	m.groups = maps.Clone(m.groups)
	return m
}

// lossWatch is a buffer's data-loss memory, its incidents and their
// metrics. It is safe for concurrent use; checks (survey, compare, recover)
// are serialised by checkMu, which the backend holds.
type lossWatch struct {
	log   *slog.Logger
	clock clockwork.Clock
	m     lossMetrics

	checkMu sync.Mutex

	mu        sync.Mutex
	mem       memory
	behindLow string // lowest from-position appended behind since the last survey began
	gen       uint64 // loss generation: each incident, and each change to its recovery
	count     uint64 // incidents
	last      *Incident
	lastSnap  memory    // the memory before the last incident
	lastSign  time.Time // when the last incident last found a sign
	repoll    *Incident // the last incident that asked for a re-poll
	consumed  uint64    // generation up to which the poller has taken its Position
	obs       []observation
}

type lossMetrics struct {
	total      prometheus.Counter
	lastAt     prometheus.Gauge
	found      *prometheus.GaugeVec
	repollFrom prometheus.Gauge
	repollTo   prometheus.Gauge
	delivered  prometheus.Gauge
}

func newLossWatch(reg prometheus.Registerer, log *slog.Logger, clock clockwork.Clock) *lossWatch {
	f := promauto.With(reg)
	w := &lossWatch{
		log:   log,
		clock: clock,
		mem:   memory{groups: map[string]int{}},
		m: lossMetrics{
			total: f.NewCounter(prometheus.CounterOpts{
				Name: "authpipe_buffer_data_loss_total",
				Help: "Times the buffer was found to have lost data (a consumer group, the stream, the checkpoint, the dedupe record or the fencing counter gone or gone backwards; the embedded buffer's file replaced by an older copy). Each is recovered: groups recreated, the lost window polled again from Auth0.",
			}),
			lastAt: f.NewGauge(prometheus.GaugeOpts{
				Name: "authpipe_buffer_data_loss_last_timestamp_seconds",
				Help: "When this process last found the buffer had lost data (Unix time); 0 if it has not.",
			}),
			found: f.NewGaugeVec(prometheus.GaugeOpts{
				Name: "authpipe_buffer_data_loss_found",
				Help: "1 for each kind of data found missing or gone backwards in the last data-loss incident.",
			}, []string{"what"}),
			repollFrom: f.NewGauge(prometheus.GaugeOpts{
				Name: "authpipe_buffer_data_loss_repoll_from_timestamp_seconds",
				Help: "Start of the window polled again from Auth0 after the last data-loss incident (Unix time of the last point known delivered, or the start of Auth0's retention); 0 if none.",
			}),
			repollTo: f.NewGauge(prometheus.GaugeOpts{
				Name: "authpipe_buffer_data_loss_repoll_until_timestamp_seconds",
				Help: "End of the window polled again from Auth0 after the last data-loss incident (Unix time of the checkpoint known before the loss); 0 if none.",
			}),
			delivered: f.NewGauge(prometheus.GaugeOpts{
				Name: "authpipe_buffer_delivered_watermark_timestamp_seconds",
				Help: "The delivered watermark (Unix time): every Auth0 log up to it has been acknowledged by every consumer group, as this process last found. After lost data, polling starts again here. 0 while unknown.",
			}),
		},
	}
	for _, k := range LostKinds {
		w.m.found.WithLabelValues(k)
	}
	return w
}

// record keeps an observation for the next check.
func (w *lossWatch) record(o observation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.obs = append(w.obs, o)
}

// takeObservations hands the recorded observations to a check.
func (w *lossWatch) takeObservations() []observation {
	w.mu.Lock()
	defer w.mu.Unlock()
	obs := w.obs
	w.obs = nil
	return obs
}

// putBack returns observations a failed check could not use.
func (w *lossWatch) putBack(obs []observation) {
	if len(obs) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.obs = append(obs, w.obs...)
}

// snapshot copies the memory, for comparison with a survey taken after it.
func (w *lossWatch) snapshot() memory {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.behindLow = ""
	return w.mem.clone()
}

// observe lists the signs of loss in sv (taken after snap) and obs.
func observe(snap memory, sv survey, obs []observation) []Finding {
	var found []Finding
	if snap.checkpoint != "" {
		switch {
		case sv.checkpoint == "":
			found = append(found, Finding{LostCheckpoint, "checkpoint gone (was " + snap.checkpoint + ")"})
		case sv.checkpoint < snap.checkpoint: // equal-length digit strings
			found = append(found, Finding{LostCheckpoint, "checkpoint went back from " + snap.checkpoint + " to " + sv.checkpoint})
		}
	}
	if snap.stream && !sv.stream {
		found = append(found, Finding{LostStream, "stream gone"})
	}
	for _, g := range slices.Sorted(maps.Keys(snap.groups)) {
		if snap.groups[g] == groupKnown && !sv.groups[g] {
			found = append(found, Finding{LostGroup, "consumer group " + g + " gone"})
		}
	}
	if sv.dedupeMissing && sv.dedupeRef != snap.dedupeSeen {
		what := "of the newest stream entry " + sv.newest
		if sv.dedupeRef != sv.newestLog {
			what = "(the highest ever buffered; the stream holds no entry)"
		}
		found = append(found, Finding{LostDedupe, "dedupe record lacks log_id " + sv.dedupeRef + " " + what})
	}
	fence, fenceFound := int64(0), false
	if sv.fenceRead && snap.fence > 0 && sv.fence < snap.fence {
		fence, fenceFound = sv.fence, true
	}
	for _, o := range obs {
		if snap.fence > 0 && o.fence < snap.fence && (!fenceFound || o.fence < fence) {
			fence, fenceFound = o.fence, true
		}
	}
	if fenceFound {
		found = append(found, Finding{LostFence, fmt.Sprintf("poller lease fencing counter went back from %d to %d", snap.fence, fence)})
	}
	return found
}

// needsRepoll: anything but consumer groups and the fencing counter lost
// means events may be gone from the buffer.
func needsRepoll(found []Finding) bool {
	return slices.ContainsFunc(found, func(f Finding) bool { return f.What != LostGroup && f.What != LostFence })
}

// absorb makes sv (taken after snap) the memory: what the store holds now.
// Appends that completed meanwhile are kept.
func (w *lossWatch) absorb(snap memory, sv survey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := &w.mem
	m.surveyed = true
	if m.writes == snap.writes || sv.checkpoint > m.checkpoint {
		m.checkpoint = sv.checkpoint
	}
	if sv.fenceRead && (m.writes == snap.writes || sv.fence > m.fence) {
		m.fence = sv.fence
	}
	m.stream = sv.stream || (m.stream && !snap.stream) // an append may have created it meanwhile
	for g, st := range m.groups {
		if sv.groups[g] {
			m.groups[g] = groupKnown
		} else if st == groupKnown && snap.groups[g] == groupKnown {
			m.groups[g] = groupRestoring
		}
	}
	m.first, m.firstLog, m.newest, m.newestLog = sv.first, sv.firstLog, sv.newest, sv.newestLog
	if sv.dedupeMissing {
		m.dedupeSeen = sv.dedupeRef
	}
	m.delivered = w.watermark(sv)
	if t, err := auth0log.IDTime(m.delivered); err == nil {
		w.m.delivered.Set(float64(t.Unix()))
	}
}

// watermark is the delivered watermark after sv (mu held): the from-position
// up to which every log has been acknowledged by every group.
func (w *lossWatch) watermark(sv survey) string {
	d := ""
	switch {
	case sv.firstLog != "":
		if t, err := auth0log.IDTime(sv.firstLog); err == nil {
			d = auth0log.CheckpointAt(t) // its whole second: a few logs more, never one less
		}
	case sv.first == "" && sv.checkpoint != "":
		d = sv.checkpoint // everything buffered was acknowledged
	}
	if d == "" {
		d = w.mem.delivered // the store tells nothing (empty): keep what was known
	}
	for _, low := range []string{sv.behindLow, w.behindLow} {
		if low != "" && (d == "" || low < d) {
			d = low
		}
	}
	// An unfinished re-poll: nothing after its start is known delivered
	// until the checkpoint has passed the window.
	if r := w.repoll; r != nil && !repollDone(r, sv.checkpoint) && (d == "" || r.RepollFrom < d) {
		d = r.RepollFrom
	}
	if sv.checkpoint != "" && d > sv.checkpoint {
		d = sv.checkpoint
	}
	return d
}

func repollDone(r *Incident, stored string) bool {
	return r.RepollUntil != "" && stored >= r.RepollUntil
}

// open counts and logs an incident; snap is the memory before the loss.
// Signs found within foldWindow of the last incident's are folded into it.
func (w *lossWatch) open(snap memory, found []Finding) *Incident {
	now := w.clock.Now()
	w.mu.Lock()
	if inc := w.last; inc != nil && now.Sub(w.lastSign) < foldWindow {
		inc.Found = append(inc.Found, found...)
		w.lastSign = now
		rearmed := false
		if needsRepoll(found) && !inc.Repoll {
			w.gen++ // the poller must look again
			w.arm(inc, w.lastSnap)
			rearmed = true
		}
		w.mu.Unlock()
		w.log.Warn("more lost buffer data found: part of the same incident", append(describe(found),
			"incident", inc.Number, "repoll_now", rearmed)...)
		w.setFound(inc)
		return inc
	}
	w.count++
	w.gen++
	inc := &Incident{Number: w.count, Generation: w.gen, At: now, Found: found}
	w.last, w.lastSnap, w.lastSign = inc, snap, now
	if needsRepoll(found) {
		w.arm(inc, snap)
	}
	w.mu.Unlock()

	args := append(describe(found), "incident", inc.Number)
	action := "consumer groups recreated; nothing to poll again: the stream still holds every event"
	if inc.Repoll {
		action = "consumer groups recreated; the window that may be lost is polled again from Auth0"
		args = append(args, repollArgs(inc)...)
	}
	args = append(args, "action", action)
	// Log before counting: whoever sees the counter move finds the incident logged.
	w.log.Error("buffer lost data", args...)
	w.m.total.Inc()
	w.m.lastAt.Set(float64(inc.At.UnixNano()) / 1e9)
	w.setFound(inc)
	return inc
}

// arm makes inc ask for a re-poll from what snap (the memory before the
// loss) knew delivered (mu held), in the current generation.
func (w *lossWatch) arm(inc *Incident, snap memory) {
	inc.Generation = w.gen
	inc.Repoll = true
	inc.RepollFrom, inc.RepollUntil = snap.delivered, snap.checkpoint
	if r := w.repoll; r != nil && r != inc && !repollDone(r, snap.checkpoint) && r.RepollFrom < inc.RepollFrom {
		inc.RepollFrom = r.RepollFrom // the last re-poll had not got through yet
	}
	w.repoll = inc
}

func describe(found []Finding) []any {
	details := make([]string, len(found))
	for i, f := range found {
		details[i] = f.Detail
	}
	return []any{"found", details}
}

func repollArgs(inc *Incident) []any {
	from := "the start of Auth0's retention (nothing was known delivered)"
	if t, err := auth0log.IDTime(inc.RepollFrom); err == nil {
		from = t.UTC().Format(time.RFC3339)
	}
	until := "now"
	if t, err := auth0log.IDTime(inc.RepollUntil); err == nil {
		until = t.UTC().Format(time.RFC3339)
	}
	return []any{"repoll_from", from, "repoll_until", until,
		"repoll_from_log_id", inc.RepollFrom, "repoll_until_log_id", inc.RepollUntil}
}

// setFound sets the gauges that describe the last incident.
func (w *lossWatch) setFound(inc *Incident) {
	w.mu.Lock()
	kinds := inc.Kinds()
	repoll, from, until, at := inc.Repoll, inc.RepollFrom, inc.RepollUntil, inc.At
	w.mu.Unlock()
	for _, k := range LostKinds {
		w.m.found.WithLabelValues(k).Set(0)
	}
	for _, k := range kinds {
		w.m.found.WithLabelValues(k).Set(1)
	}
	fromTS, untilTS := 0.0, 0.0
	if repoll {
		untilTS = float64(at.Unix())
		if t, err := auth0log.IDTime(until); err == nil {
			untilTS = float64(t.Unix())
		}
		if t, err := auth0log.IDTime(from); err == nil {
			fromTS = float64(t.Unix())
		}
	}
	w.m.repollFrom.Set(fromTS)
	w.m.repollTo.Set(untilTS)
}

// position answers Resume: the stored checkpoint, or the start of a re-poll
// the poller has not taken yet (or that has nothing stored yet).
func (w *lossWatch) position(stored string, since uint64) Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	pos := Position{From: stored, Generation: w.gen}
	if r := w.repoll; r != nil && !repollDone(r, stored) && (since < r.Generation || stored == "") {
		pos.From, pos.Repoll = r.RepollFrom, r
	}
	w.consumed = w.gen
	return pos
}

// mayAdvance reports whether an append may move the checkpoint: not while
// a re-poll waits for the poller to take it (its page would skip the lost
// window).
func (w *lossWatch) mayAdvance() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.repoll == nil || w.consumed >= w.repoll.Generation
}

// generation is the number of incidents so far.
func (w *lossWatch) generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

// lastIncident returns the last incident, if any.
func (w *lossWatch) lastIncident() (Incident, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		return Incident{}, false
	}
	return *w.last, true
}

// expected is the checkpoint an append expects stored: the highest seen.
func (w *lossWatch) expected() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mem.checkpoint
}

// noteCheckpoint remembers a checkpoint seen stored.
func (w *lossWatch) noteCheckpoint(cp string) {
	if cp == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if cp > w.mem.checkpoint {
		w.mem.checkpoint = cp
		w.mem.writes++
	}
}

// noteStream remembers that the stream exists (an append added to it).
func (w *lossWatch) noteStream() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mem.stream = true
}

// noteBehind lowers the watermark for logs appended without a
// checkpoint (from is the from-position of the oldest), at once: a loss
// before the next survey must poll them again.
func (w *lossWatch) noteBehind(from string) {
	if from == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.behindLow == "" || from < w.behindLow {
		w.behindLow = from
	}
	if w.mem.delivered == "" || from < w.mem.delivered {
		w.mem.delivered = from
	}
}

// noteFence remembers a fencing token this process wrote with.
func (w *lossWatch) noteFence(key string, token int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mem.fenceKey = key
	if token > w.mem.fence {
		w.mem.fence = token
		w.mem.writes++
	}
}

// noteGroup remembers a group a consumer of this process reads with.
func (w *lossWatch) noteGroup(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mem.groups[name] = groupKnown
	w.mem.stream = true
}

// knowsGroup reports whether a consumer of this process reads with group.
func (w *lossWatch) knowsGroup(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mem.groups[name] != 0
}

// behindFrom is the from-position (auth0log.CheckpointAt of its second)
// of the oldest of logIDs.
func behindFrom(logIDs []string) string {
	low := ""
	for _, id := range logIDs {
		if len(id) == auth0log.IDLength && (low == "" || id < low) {
			low = id
		}
	}
	if low == "" {
		return ""
	}
	return secondFrom(low[3:17])
}

// secondFrom is the from-position of a 14-digit UTC second (YYYYMMDDhhmmss,
// as a log_id embeds it after its "900"): before every log_id of that
// second.
func secondFrom(second string) string {
	return "900" + second + strings.Repeat("0", auth0log.IDLength-3-len(second))
}
