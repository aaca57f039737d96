package store

import (
	"strconv"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// Key kinds.
const (
	kindKeyCount    = "c"
	kindKeyDistinct = "d"
	kindKeyOf       = "o"
	kindKeyCut      = "x"
)

// KeyGrace keeps bucket keys a little longer than strictly needed, so a
// check running late still finds them.
const KeyGrace = time.Minute

// groupSep separates group and value in distinct members; control
// characters are removed from group values, so it cannot occur in them.
const groupSep = "\x1f"

// Event is the part of a log a rule looks at.
type Event struct {
	ID     string // stream entry id (dedupe of redeliveries)
	Date   time.Time
	Type   string
	Fields [len(rules.Fields)]string // group and distinct values, by rules.Fields
}

// NewEvent takes what the rules read from a log: its fields were parsed
// when the event entered authpipe (auth0log), so nothing here reads JSON.
// Values are cleaned (CleanValue).
func NewEvent(id string, l auth0log.Log) Event {
	e := Event{ID: id, Date: l.Date, Type: l.Type}
	for i, name := range rules.Fields {
		var v string
		switch name {
		case rules.FieldIP:
			v = l.IP
		case rules.FieldUserID:
			v = l.UserID
		case rules.FieldUserName:
			v = l.UserName
		case rules.FieldClientID:
			v = l.ClientID
		case rules.FieldConnection:
			v = l.Connection
		}
		e.Fields[i] = CleanValue(v)
	}
	return e
}

// CleanValue removes control characters and bounds the length of a group
// or distinct value (so a value never holds the separator of distinct
// members).
func CleanValue(s string) string {
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

// Op is one increment of a count: kind 'c' adds 1 to group in key c (cap by
// the store's max groups), kind 'd' adds value to the group's distinct set d
// and, if new and below dcap, 1 to group in c.
type Op struct {
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

// Group is the group the op counts for ("" for a rule without group_by).
func (o Op) Group() string { return o.group }

// CutKey names the bucket's record of groups cut by the cap: a key of
// CountResult.Cut.
func (o Op) CutKey() string { return o.x }

// Entry is one stream entry with the increments it causes.
type Entry struct {
	ID  string
	Ops []Op
}

// CountResult reports a count batch.
type CountResult struct {
	Counted    int            // entries counted now
	Duplicates int            // entries already counted (acknowledged) before
	Cut        map[string]int // cut key (Op.CutKey) → groups cut in this batch
}

// Keyspace names the keys of rules.
type Keyspace struct{ prefix string }

func (k Keyspace) bucketKey(r *rules.Rule, kind string, bucket int64) string {
	return k.prefix + "thr:" + r.Name + ":" + r.CountFingerprint() + ":" + kind + ":" + strconv.FormatInt(bucket, 10)
}

func (k Keyspace) tmpKey(r *rules.Rule, kind string) string {
	return k.prefix + "thr:tmp:" + r.Name + ":" + kind
}

// alertsKey is the hash of active alerts: field rule\x1fgroup → state.
func (k Keyspace) alertsKey() string { return k.prefix + "thr:alerts" }

func bucketOf(t time.Time, b time.Duration) int64 {
	ms, bm := t.UnixMilli(), b.Milliseconds()
	q := ms / bm
	if ms%bm < 0 {
		q--
	}
	return q
}

// WindowBuckets returns the first and last bucket of r's window at now.
func WindowBuckets(r *rules.Rule, now time.Time) (lo, hi int64) {
	return bucketOf(now.Add(-r.Window), r.Bucket()), bucketOf(now, r.Bucket())
}

// OpsFor returns the increments event e causes for rule r, counted at now.
// An event too old for any future window of r causes none.
func (k Keyspace) OpsFor(r *rules.Rule, e Event, now time.Time) []Op {
	inTypes, inOf := r.InTypes(e.Type), r.InRatioOf(e.Type)
	if !inTypes && !inOf {
		return nil
	}
	group := ""
	if r.GroupBy != "" {
		group = e.Fields[rules.FieldIndex(r.GroupBy)]
		if group == "" {
			return nil // cannot attribute the event to a group
		}
	}
	date := e.Date
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
	ttl := end.Add(r.Window + KeyGrace).Sub(now)
	if ttl <= 0 {
		return nil
	}
	ttl = max(ttl.Truncate(time.Millisecond), time.Millisecond)
	base := Op{x: k.bucketKey(r, kindKeyCut, bucket), group: group, ttl: ttl, rule: r.Name, bucket: bucket}
	var ops []Op
	if inTypes {
		o := base
		o.kind = 'c'
		o.c = k.bucketKey(r, kindKeyCount, bucket)
		if r.Distinct != "" {
			o.value = e.Fields[rules.FieldIndex(r.Distinct)]
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

// GroupValue is one group's value in a window.
type GroupValue struct {
	Group    string
	Value    float64
	Num, Den float64 // ratio rules
}

// Query asks a store for a rule's values in one window.
type Query struct {
	Rule      *rules.Rule
	Lo, Hi    int64   // the window's buckets (WindowBuckets)
	Threshold float64 // candidates: groups at or above it (count: the value; distinct: the upper bound)
	MaxCand   int     // how many candidates at most (0: none)
	Top       int     // also the top groups by count (0: none)
	Groups    []string
}

// Result is what a store returns for a Query: the values of the
// candidates, the top groups and the groups asked for (a group may appear
// more than once), and what the cap cut from the window's buckets.
type Result struct {
	Values    []GroupValue
	CutGroups int64
	CutEvents int64
}

// ActiveAlert is the shared state of one firing alert.
type ActiveAlert struct {
	Rule        string            `json:"rule"`
	Group       string            `json:"group"`
	Fingerprint string            `json:"fp"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	LastSent    time.Time         `json:"lastSent"`
	Value       float64           `json:"value"`
}

// AlertField is an active alert's key among a tenant's: its rule and group.
func AlertField(rule, group string) string { return rule + groupSep + group }
