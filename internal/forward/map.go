package forward

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"

	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// MaxMessageBytes is analytics-go's (and Segment's) limit for one encoded
// message. analytics-go fails a bigger message with ErrMessageTooBig after
// Enqueue has already returned nil, so Map enforces it before.
const MaxMessageBytes = 32000

// MaxMessageIDLength bounds messageId: Segment dedupes only ids shorter
// than 100 characters.
const MaxMessageIDLength = 99

// anonPrefix marks anonymousIds derived from the attempted identity.
const anonPrefix = "anon-"

// InvalidError reports a log that cannot become a valid Segment message. Its
// Error is the dead-letter reason.
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return "invalid: " + e.Reason }

// OversizeError reports a message over MaxMessageBytes even after its
// details were dropped. Its Error is the dead-letter reason.
type OversizeError struct {
	Bytes          int  // encoded size of the smallest message Map could build
	Limit          int  // MaxMessageBytes
	DetailsDropped bool // whether properties.details had been dropped already
}

func (e *OversizeError) Error() string {
	if e.DetailsDropped {
		return fmt.Sprintf("oversize: %d bytes after dropping details; limit %d", e.Bytes, e.Limit)
	}
	return fmt.Sprintf("oversize: %d bytes (no details to drop); limit %d", e.Bytes, e.Limit)
}

// MessageID is the Segment messageId of a log: tenant + "-" + log_id. It
// depends on nothing but the tenant and the log_id, so every redelivery of an
// event carries the same id and Segment drops the copies. Auth0 log_ids have 56
// digits and production tenant names at most 32 characters, which stays under
// Segment's 100-character limit; for a longer tenant name the tenant part is
// replaced by a 16-hex-digit hash of it (still deterministic).
func MessageID(tenant, logID string) string {
	if len(tenant)+1+len(logID) <= MaxMessageIDLength {
		return tenant + "-" + logID
	}
	sum := sha256.Sum256([]byte(tenant))
	id := hex.EncodeToString(sum[:8]) + "-" + logID
	if len(id) <= MaxMessageIDLength {
		return id
	}
	all := sha256.Sum256([]byte(tenant + "\x00" + logID))
	return hex.EncodeToString(all[:])
}

// anonymousKinds are the fields that identify who attempted an event without
// user_id, best first.
var anonymousKinds = []string{"user_name", "ip", "client_id"}

// Map turns one Auth0 log into the Segment track message that is sent for it,
// with the personal data handled as pii says (see PIIPolicy; zero fields
// hash).
//
//   - event: Auth0's readable name of the log type ("Success Login", …; the
//     code itself for types the table does not know).
//   - userId: user_id when it is a non-empty string, unchanged by the PII
//     policy (Segment's deletion requests work by userId). Otherwise
//     anonymousId = "anon-" + the first 32 hex digits of HMAC-SHA256(hashKey,
//     tenant NUL kind NUL value) for the kind and value of the first
//     non-empty of user_name, ip, client_id, else log_id. Failed logins of
//     unknown users (fu) have no user_id; keying on the attempted identity
//     keeps every attempt against the same user name (or from the same IP,
//     or of the same application) under one stable anonymous profile in
//     Segment, across restarts and replicas, so the attempts can be analysed
//     together. The hash is keyed so that nobody without the key can map a
//     guessed e-mail or IP to its anonymousId. log_id is the last resort: an
//     identity of its own, because Segment drops messages without any.
//   - messageId: MessageID(tenant, log_id), nothing else, so redeliveries
//     are dropped by Segment.
//   - timestamp: the log's date.
//   - context.ip (when the IP policy is keep and ip parses as an IP address;
//     otherwise ip stays in properties, hashed, dropped or as it was) and
//     context.userAgent (when the user-agent policy is keep; otherwise
//     properties.user_agent, hashed or dropped).
//   - properties: every other field of the raw log, numbers kept exact,
//     except date, ip and user_agent (moved to timestamp and context) and
//     user_id when it became userId, after the PII policy; plus log_id,
//     type, tenant, and outcome and group from Auth0's type table (these
//     five overwrite raw fields of the same name).
//
// The encoded message is measured exactly as analytics-go measures it. Over
// MaxMessageBytes, properties.details is dropped and properties.details_trimmed
// set to true; if still over, Map returns an *OversizeError. A log that
// cannot be mapped gives an *InvalidError. Both errors' texts are dead-letter
// reasons.
func Map(tenant string, l auth0log.Log, hashKey []byte, pii PIIPolicy) (analytics.Track, error) {
	t, _, err := newMapper(tenant, hashKey, pii).mapLog(l)
	return t, err
}

// mapper maps the logs of one tenant; build it once per forwarder.
type mapper struct {
	tenant string
	scrub  scrubber
	anon   macPool // keyed with the hash key, for anonymousIds
}

func newMapper(tenant string, hashKey []byte, pii PIIPolicy) mapper {
	return mapper{tenant: tenant, scrub: newScrubber(hashKey, pii), anon: newMACPool(hashKey)}
}

// mapLog is Map, also reporting whether details were dropped.
//
// It builds the properties in one pass over the event's members, applying
// the PII policy to each as it is decoded, rather than decoding the whole
// event into a map and walking it again: mapping was a quarter of the
// worker's CPU. TestMapMatchesReference holds the result to the mapping
// as first written, message for message.
func (m mapper) mapLog(l auth0log.Log) (analytics.Track, bool, error) {
	tenant := m.tenant
	if tenant == "" {
		return analytics.Track{}, false, &InvalidError{Reason: "empty tenant"}
	}
	if l.Type == "" {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": missing type"}
	}
	if l.Date.IsZero() {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": missing date"}
	}
	b := builder{scrub: m.scrub, props: make(analytics.Properties, propsHint)}
	if err := l.Members(b.member); err != nil {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": " + err.Error()}
	}

	info, known := auth0log.LookupType(l.Type)
	code := l.Type
	if !known {
		// Only a code from the table is known not to be personal data.
		code = m.scrub.label(l.Type)
		info.Name = code
	}
	t := analytics.Track{
		Type:      "track",
		MessageId: MessageID(tenant, l.ID),
		Event:     info.Name,
		Timestamp: l.Date.UTC(),
	}
	if t.Event == "" { // unreachable with auth0log's table; checked anyway
		t.Event = code
	}

	if uid, ok := b.userID.v.(string); ok && uid != "" {
		t.UserId = uid
	} else {
		b.putHeld("user_id", b.userID)
		kind, value := "log_id", l.ID
		for i, k := range anonymousKinds {
			if s := b.anon[i]; s != "" {
				kind, value = k, s
				break
			}
		}
		t.AnonymousId = m.anon.hexSum(anonPrefix, tenant, kind, value)
	}

	var ctx analytics.Context
	if s, ok := b.ip.v.(string); ok && m.scrub.policy.IP == PIIKeep {
		if ip := net.ParseIP(s); ip != nil {
			ctx.IP = ip
			b.ip.ok = false
		}
	}
	if s, ok := b.userAgent.v.(string); ok && s != "" && m.scrub.policy.UserAgent == PIIKeep {
		ctx.UserAgent = s
		b.userAgent.ok = false
	}
	if ctx.IP != nil || ctx.UserAgent != "" {
		t.Context = new(ctx)
	}
	b.putHeld("ip", b.ip)
	b.putHeld("user_agent", b.userAgent)
	if b.location.ok {
		b.location.v, b.location.ok = m.scrub.location(b.location.v)
		b.putHeld("location_info", b.location)
	}
	props := b.props
	if b.renamed {
		props = m.scrub.rekey(props)
	}

	props["log_id"] = l.ID
	props["type"] = code
	props["tenant"] = tenant
	props["outcome"] = string(info.Outcome)
	props["group"] = info.Group
	t.Properties = props

	bound := headSize(t) + 2 + b.bound
	if b.renamed {
		bound = sizeBound(t)
	} else {
		bound += memberBound("log_id", l.ID) + memberBound("type", code) + memberBound("tenant", tenant) +
			memberBound("outcome", string(info.Outcome)) + memberBound("group", info.Group)
	}
	size, err := boundedSize(t, bound)
	if err != nil {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": encode message: " + err.Error()}
	}
	if size <= MaxMessageBytes {
		return t, false, nil
	}
	if _, ok := props["details"]; !ok {
		return analytics.Track{}, false, &OversizeError{Bytes: size, Limit: MaxMessageBytes}
	}
	delete(props, "details")
	props["details_trimmed"] = true
	if size, err = encodedSize(t); err != nil {
		return analytics.Track{}, false, &InvalidError{Reason: "log " + l.ID + ": encode message: " + err.Error()}
	}
	if size > MaxMessageBytes {
		return analytics.Track{}, false, &OversizeError{Bytes: size, Limit: MaxMessageBytes, DetailsDropped: true}
	}
	return t, true, nil
}

// propsHint sizes a message's properties: Auth0's events have about twenty
// members, and growing the map as they were added cost a fifth of the
// mapping.
const propsHint = 28

// builder collects a message's properties from the members of its event.
type builder struct {
	scrub scrubber
	props analytics.Properties // the members scrubbed, but for the held ones
	bound int                  // at least the JSON length of props' members, commas included

	// Members Map places itself once it has seen them all (the last of a
	// member given twice counts, as in a decoded object).
	userID, ip, userAgent, location held
	anon                            [3]string // the clear text of user_name, ip, client_id (anonymousKinds), if strings
	renamed                         bool      // a member's name holds personal data (see scrubber.rekey)
}

// held is the decoded value of a member held back; ok false: absent.
type held struct {
	v  any
	ok bool
}

// member takes one member of the event (auth0log.Log.Members).
func (b *builder) member(mb auth0log.Member) bool {
	switch mb.Key {
	case "date", "log_id", "type", "tenant", "outcome", "group":
		return true // replaced: date by the timestamp, the others by Map's own
	case "user_id":
		b.userID = held{mb.Value(), true}
		return true
	case "ip":
		b.ip = held{mb.Value(), true}
		b.anon[1], _ = b.ip.v.(string)
		return true
	case "user_agent":
		b.userAgent = held{mb.Value(), true}
		return true
	case "location_info":
		b.location = held{mb.Value(), true}
		return true
	case "user_name":
		b.anon[0], _ = mb.Text()
	case "client_id":
		b.anon[2], _ = mb.Text()
	}
	if nk, keep := b.scrub.text(mb.Key); !keep || nk != mb.Key {
		b.renamed = true
	}
	kind := kindOf(mb.Key)
	if s, ok := mb.Text(); ok && kind == freeField {
		// The common case, without boxing the clear text.
		if s, ok = b.scrub.text(s); ok {
			b.props[mb.Key] = s
			b.bound += memberBound(mb.Key, s)
		} else {
			delete(b.props, mb.Key)
		}
		return true
	}
	b.put(mb.Key, kind, mb.Value())
	return true
}

// putHeld adds a held member, if present, as any other.
func (b *builder) putHeld(key string, h held) {
	if h.ok {
		b.put(key, kindOf(key), h.v)
	}
}

func (b *builder) put(key string, kind fieldKind, v any) {
	if v, ok := b.scrub.fieldValue(kind, v); ok {
		b.props[key] = v
		b.bound += 2 + textBound(key) + valueBound(v)
	} else {
		delete(b.props, key)
	}
}

// encodedSize is the size analytics-go's makeMessage measures (json.Marshal
// of the Track with Type, MessageId and Timestamp set), or, when sizeBound
// shows that the message is well within MaxMessageBytes, that bound: Map
// needs the exact size only near the limit, and marshalling every message
// costs about as much as analytics-go's own encoding of it.
func encodedSize(t analytics.Track) (int, error) {
	return boundedSize(t, sizeBound(t))
}

// boundedSize is encodedSize with the bound given (at least what
// sizeBound counts).
func boundedSize(t analytics.Track, bound int) (int, error) {
	if bound <= MaxMessageBytes {
		return bound, nil
	}
	b, err := json.Marshal(t)
	return len(b), err
}

// sizeBound is at least len(json.Marshal(t)) for a Track as Map builds it
// (no integrations): encoding/json writes a string's byte as at most six
// bytes (\u00XX) and a json.Number as its text, and everything else of the
// message (member names, punctuation, the timestamp, an IP address) fits in
// headBound.
func sizeBound(t analytics.Track) int {
	return headSize(t) + valueBound(map[string]any(t.Properties))
}

// headSize bounds the message but its properties.
func headSize(t analytics.Track) int {
	n := headBound + 6*(len(t.MessageId)+len(t.AnonymousId)+len(t.UserId)+len(t.Event))
	if t.Context != nil {
		n += 6 * len(t.Context.UserAgent)
	}
	return n
}

// textBound bounds a JSON string: quotes and each byte as at most \u00XX.
func textBound(s string) int { return 2 + 6*len(s) }

// memberBound bounds a member of an object with a string value, its colon
// and comma included.
func memberBound(key, value string) int { return 2 + textBound(key) + textBound(value) }

// headBound bounds what sizeBound does not count by string length.
const headBound = 512

func valueBound(v any) int {
	switch x := v.(type) {
	case string:
		return textBound(x)
	case json.Number:
		return len(x)
	case map[string]any:
		n := 2
		for k, e := range x {
			n += 2 + textBound(k) + valueBound(e)
		}
		return n
	case []any:
		n := 2
		for _, e := range x {
			n += 1 + valueBound(e)
		}
		return n
	case bool:
		return 5
	case nil:
		return 4
	}
	b, _ := json.Marshal(v) // no other type is built by Map; exact anyway
	return len(b)
}
