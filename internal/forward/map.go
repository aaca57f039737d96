package forward

import (
	"crypto/hmac"
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

// anonPrefix marks anonymousIds derived by AnonymousID.
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

// AnonymousID is the anonymousId of an event without user_id:
// "anon-" + the first 32 hex digits of HMAC-SHA256(hashKey,
// tenant NUL kind NUL value).
func AnonymousID(hashKey []byte, tenant, kind, value string) string {
	mac := hmac.New(sha256.New, hashKey)
	mac.Write([]byte(tenant))
	mac.Write([]byte{0})
	mac.Write([]byte(kind))
	mac.Write([]byte{0})
	mac.Write([]byte(value))
	return anonPrefix + hex.EncodeToString(mac.Sum(nil))[:32]
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
//     anonymousId = AnonymousID(hashKey, tenant, kind, value) for the first
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
	tenant  string
	hashKey []byte
	scrub   scrubber
}

func newMapper(tenant string, hashKey []byte, pii PIIPolicy) mapper {
	return mapper{tenant: tenant, hashKey: hashKey, scrub: newScrubber(hashKey, pii)}
}

// mapLog is Map, also reporting whether details were dropped.
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
	props, err := l.Object()
	if err != nil {
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

	if uid, ok := props["user_id"].(string); ok && uid != "" {
		t.UserId = uid
		delete(props, "user_id")
	} else {
		kind, value := "log_id", l.ID
		for _, k := range anonymousKinds {
			if s, ok := props[k].(string); ok && s != "" {
				kind, value = k, s
				break
			}
		}
		t.AnonymousId = AnonymousID(m.hashKey, tenant, kind, value)
	}

	var ctx analytics.Context
	if s, ok := props["ip"].(string); ok && m.scrub.policy.IP == PIIKeep {
		if ip := net.ParseIP(s); ip != nil {
			ctx.IP = ip
			delete(props, "ip")
		}
	}
	if s, ok := props["user_agent"].(string); ok && s != "" && m.scrub.policy.UserAgent == PIIKeep {
		ctx.UserAgent = s
		delete(props, "user_agent")
	}
	if ctx.IP != nil || ctx.UserAgent != "" {
		t.Context = &ctx
	}
	delete(props, "date")
	if loc, ok := props["location_info"]; ok {
		if loc, ok = m.scrub.location(loc); ok {
			props["location_info"] = loc
		} else {
			delete(props, "location_info")
		}
	}
	props = m.scrub.object(props)

	props["log_id"] = l.ID
	props["type"] = code
	props["tenant"] = tenant
	props["outcome"] = string(info.Outcome)
	props["group"] = info.Group
	t.Properties = props

	size, err := encodedSize(t)
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

// encodedSize is the size analytics-go's makeMessage measures (json.Marshal
// of the Track with Type, MessageId and Timestamp set), or, when sizeBound
// shows that the message is well within MaxMessageBytes, that bound: Map
// needs the exact size only near the limit, and marshalling every message
// costs about as much as analytics-go's own encoding of it.
func encodedSize(t analytics.Track) (int, error) {
	if n := sizeBound(t); n <= MaxMessageBytes {
		return n, nil
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
	n := headBound + 6*(len(t.MessageId)+len(t.AnonymousId)+len(t.UserId)+len(t.Event))
	if t.Context != nil {
		n += 6 * len(t.Context.UserAgent)
	}
	return n + valueBound(map[string]any(t.Properties))
}

// headBound bounds what sizeBound does not count by string length.
const headBound = 512

func valueBound(v any) int {
	switch x := v.(type) {
	case string:
		return 2 + 6*len(x)
	case json.Number:
		return len(x)
	case map[string]any:
		n := 2
		for k, e := range x {
			n += 4 + 6*len(k) + valueBound(e)
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
