package thresholds

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/jsonscan"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// Counting model, shared by the Redis store and the in-memory store of
// `rules test`:
//
// Each rule cuts event time into buckets of Rule.Bucket (window/30, at least
// 1 s). Bucket i holds events with date in [i·b, (i+1)·b). Per rule and
// bucket there are up to four keys:
//
//	c  sorted set group → count. For a count rule the number of events; for a
//	   distinct rule the number of distinct values in the bucket (the rank
//	   used for the cap); for a ratio rule the numerator.
//	d  distinct rules: sorted set of "group\x1fvalue" members (score 0, so one
//	   group's values are one lexicographic range).
//	o  ratio rules: sorted set group → events of ratio.of (the denominator).
//	x  hash: groups and events cut from this bucket by the cap.
//
// Memory bound: a bucket's c and o keep at most MaxGroups groups. When a new
// group arrives at a full bucket the group with the lowest count (never the
// newcomer) is dropped, with its distinct values, and counted in x and in
// authpipe_threshold_groups_cut_total: the top offenders stay, and what was
// cut is visible. A distinct rule keeps at most Rule.distinctCap values of
// one group per bucket: enough to decide a breach exactly. Every key
// expires one window after its bucket ends, so a rule holds at most
// BucketsPerWindow+2 buckets.
//
// At evaluation time T the window is the buckets from the one holding
// T−window to the one holding T: every event of (T−window, T] and at most one
// bucket more.

// Key kinds.
const (
	kindKeyCount    = "c"
	kindKeyDistinct = "d"
	kindKeyOf       = "o"
	kindKeyCut      = "x"
)

// keyGrace keeps bucket keys a little longer than strictly needed, so a
// check running late still finds them.
const keyGrace = time.Minute

// groupSep separates group and value in distinct members; control
// characters are removed from group values, so it cannot occur in them.
const groupSep = "\x1f"

// event is the part of a log a rule looks at.
type event struct {
	id     string // stream entry id (dedupe of redeliveries)
	date   time.Time
	typ    string
	fields [5]string // by rules.Fields
	raw    []byte    // the log while its fields are unread (eventHead); nil once read
}

// eventHead decodes the head of a buffered log (log_id, date, type) and
// leaves its fields to readFields: most events are of a type no rule
// counts (successful logins, when the rules count failures), and their
// fields are never needed. raw must stay unchanged while e is used.
func eventHead(id string, raw []byte) (event, error) {
	l, err := auth0log.DecodeShared(raw)
	if err != nil {
		return event{}, err
	}
	return event{id: id, date: l.Date, typ: l.Type, raw: l.Raw}, nil
}

// readFields fills e.fields from the log eventHead kept, once; it does
// nothing for an event whose fields are read or were given.
func (e *event) readFields() error {
	raw := e.raw
	if raw == nil {
		return nil
	}
	e.raw = nil
	if fieldsFast(raw, e) {
		return nil
	}
	e.fields = [5]string{}
	var f struct {
		IP         json.RawMessage `json:"ip"`
		UserID     json.RawMessage `json:"user_id"`
		UserName   json.RawMessage `json:"user_name"`
		ClientID   json.RawMessage `json:"client_id"`
		Connection json.RawMessage `json:"connection"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return err
	}
	for i, v := range []json.RawMessage{f.IP, f.UserID, f.UserName, f.ClientID, f.Connection} {
		var s string
		if json.Unmarshal(v, &s) == nil {
			e.fields[i] = cleanValue(s)
		}
	}
	return nil
}

// eventFields are the members eventOf reads, in the order of event.fields.
var eventFields = [...]string{"ip", "user_id", "user_name", "client_id", "connection"}

// fieldsFast fills e.fields in one pass over the event (jsonscan), as the
// encoding/json path of eventOf would. It reports false, leaving e to that
// path, where encoding/json's rules matter: a key that is escaped, not
// ASCII, or one of the names in other letter case.
func fieldsFast(raw []byte, e *event) bool {
	ok := true
	valid := jsonscan.Members(raw, func(key []byte, plain bool, value []byte) bool {
		if !plain {
			ok = false
			return false
		}
		for i, name := range eventFields {
			if string(key) == name {
				e.fields[i] = ""
				if s, plainValue := jsonscan.PlainString(value); plainValue {
					e.fields[i] = cleanValue(string(s))
				} else {
					var str string
					if json.Unmarshal(value, &str) == nil {
						e.fields[i] = cleanValue(str)
					}
				}
				return true
			}
			if len(key) == len(name) && strings.EqualFold(string(key), name) {
				ok = false
				return false
			}
		}
		return true
	})
	return ok && valid
}

// cleanValue removes control characters and bounds the length of a group
// or distinct value.
func cleanValue(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// op is one increment of a count: kind 'c' adds 1 to group in key c (cap by
// MaxGroups), kind 'd' adds value to the group's distinct set d and, if new
// and below dcap, 1 to group in c.
type op struct {
	kind   byte
	c      string // count (or denominator) key
	x      string // cut key
	d      string // distinct key, kind 'd'
	group  string
	value  string
	dcap   int64
	ttl    time.Duration
	rule   string
	bucket int64
}

// countEntry is one stream entry with the increments it causes.
type countEntry struct {
	id  string
	ops []op
}

// countResult reports a count batch.
type countResult struct {
	counted    int            // entries counted now
	duplicates int            // entries already counted (acknowledged) before
	cut        map[string]int // cut key → groups cut in this batch
}

// keyspace names the keys of rules.
type keyspace struct{ prefix string }

func (k keyspace) bucketKey(r *rules.Rule, kind string, bucket int64) string {
	return k.prefix + "thr:" + r.Name + ":" + r.CountFingerprint() + ":" + kind + ":" + strconv.FormatInt(bucket, 10)
}

func (k keyspace) tmpKey(r *rules.Rule, kind string) string {
	return k.prefix + "thr:tmp:" + r.Name + ":" + kind
}

// alertsKey is the hash of active alerts: field rule\x1fgroup → state.
func (k keyspace) alertsKey() string { return k.prefix + "thr:alerts" }

func bucketOf(t time.Time, b time.Duration) int64 {
	ms, bm := t.UnixMilli(), b.Milliseconds()
	q := ms / bm
	if ms%bm < 0 {
		q--
	}
	return q
}

// windowBuckets returns the first and last bucket of r's window at now.
func windowBuckets(r *rules.Rule, now time.Time) (lo, hi int64) {
	return bucketOf(now.Add(-r.Window), r.Bucket()), bucketOf(now, r.Bucket())
}

// opsFor returns the increments event e causes for rule r, counted at now.
// An event too old for any future window of r causes none.
func (k keyspace) opsFor(r *rules.Rule, e event, now time.Time) []op {
	inTypes, inOf := r.InTypes(e.typ), r.InRatioOf(e.typ)
	if !inTypes && !inOf {
		return nil
	}
	group := ""
	if r.GroupBy != "" {
		group = e.fields[rules.FieldIndex(r.GroupBy)]
		if group == "" {
			return nil // cannot attribute the event to a group
		}
	}
	date := e.date
	if date.After(now) {
		// Dated ahead of this clock (clock skew between Auth0 and the
		// worker): counted as now. In its own, later bucket it would stay
		// outside every evaluation until this clock got there, and a burst
		// would wait for the next scheduled check instead of raising its
		// alert in real time.
		date = now
	}
	bucket := bucketOf(date, r.Bucket())
	end := time.UnixMilli((bucket + 1) * r.Bucket().Milliseconds())
	ttl := end.Add(r.Window + keyGrace).Sub(now)
	if ttl <= 0 {
		return nil
	}
	ttl = max(ttl.Truncate(time.Millisecond), time.Millisecond)
	base := op{x: k.bucketKey(r, kindKeyCut, bucket), group: group, ttl: ttl, rule: r.Name, bucket: bucket}
	var ops []op
	if inTypes {
		o := base
		o.kind = 'c'
		o.c = k.bucketKey(r, kindKeyCount, bucket)
		if r.Distinct != "" {
			o.value = e.fields[rules.FieldIndex(r.Distinct)]
			if o.value == "" {
				return nil
			}
			o.kind = 'd'
			o.d = k.bucketKey(r, kindKeyDistinct, bucket)
			o.dcap = r.DistinctCap()
		}
		ops = append(ops, o)
	}
	if inOf {
		o := base
		o.kind = 'c'
		o.c = k.bucketKey(r, kindKeyOf, bucket)
		ops = append(ops, o)
	}
	return ops
}

// groupValue is one group's value in a window.
type groupValue struct {
	group    string
	value    float64
	num, den float64 // ratio rules
}

// evalQuery asks a store for a rule's values in one window.
type evalQuery struct {
	rule      *rules.Rule
	lo, hi    int64
	threshold float64 // candidates: groups at or above it (count: the value; distinct: the upper bound)
	maxCand   int     // how many candidates at most (0: none)
	top       int     // also the top groups by count (0: none)
	groups    []string
}

// evalResult is what a store returns for an evalQuery.
type evalResult struct {
	values    []groupValue
	cutGroups int64
	cutEvents int64
}

// store keeps counts and alert state. redisStore is the real one; memStore
// mirrors it for `rules test` (the conformance test runs both).
type store interface {
	keys() keyspace
	count(ctx context.Context, entries []countEntry, maxGroups int) (countResult, error)
	eval(ctx context.Context, q evalQuery) (evalResult, error)

	// Active alert state, shared by replicas.
	activeAlerts(ctx context.Context) ([]activeAlert, error)
	// claimAlert stores a as active unless its rule/group already is.
	claimAlert(ctx context.Context, a activeAlert) (bool, error)
	// putAlert overwrites the state of an active alert (same start).
	putAlert(ctx context.Context, a activeAlert) error
	// dropAlert removes the alert of rule/group if it still started at startsAt.
	dropAlert(ctx context.Context, rule, group string, startsAt time.Time) (bool, error)
}

// activeAlert is the shared state of one firing alert.
type activeAlert struct {
	Rule        string            `json:"rule"`
	Group       string            `json:"group"`
	Fingerprint string            `json:"fp"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	LastSent    time.Time         `json:"lastSent"`
	Value       float64           `json:"value"`
}

func alertField(rule, group string) string { return rule + groupSep + group }
