// Package auth0log is one Auth0 log event as every stage of authpipe sees
// it: parsed once, where it enters (the poller, the Log Streams receiver),
// into the fields the stages read, and carried with its raw JSON through the
// buffer (Pack, Unpack), so that the forwarder and the threshold engine read
// fields, not JSON. It also knows Auth0's log_id format and log type table.
//
// Guarantee: Decode never drops a field. A Log carries the event's raw JSON
// verbatim; the fields authpipe reads are parsed alongside, and an event
// that is not valid JSON or lacks a valid log_id, date or type is an error,
// never silently accepted, because the checkpoint, the dedupe and every
// window are built on them. A log_id is validated here, where the event
// enters; later stages take it as decoded (the buffer's append checks its
// format once more, for the sake of its own keys and order, not as input
// validation).
//
// JSON is read with github.com/tidwall/gjson. A field is read as
// encoding/json reads it into a map[string]any: member names match
// exactly (Auth0 sends them in lower case), of a member given twice the
// last counts, null is absent, and invalid UTF-8 becomes U+FFFD.
package auth0log

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// IDLength is the length of every Auth0 log_id: "900", a UTC timestamp
// YYYYMMDDhhmmss, and 39 more digits.
const IDLength = 56

const (
	idPrefix     = "900"
	idTimeStart  = len(idPrefix)
	idTimeEnd    = idTimeStart + len(idTimeLayout)
	idTimeLayout = "20060102150405"
)

// Log is one Auth0 log event.
type Log struct {
	ID   string    // log_id, 56 digits; sorts like the event stream
	Date time.Time // the event's date (event time), UTC
	Type string    // the log type code, e.g. "fp"

	// The members the forwarder's identity and the threshold rules'
	// group_by and distinct read: the value when it is a JSON string, ""
	// when it is absent, null or of another type.
	UserID     string // user_id
	UserName   string // user_name
	IP         string // ip
	ClientID   string // client_id
	Connection string // connection

	Raw json.RawMessage // the whole event as Auth0 sent it

	spans [numFields]span // where each field's text lies in Raw (Pack)
}

// The parsed fields, in the order of Log.spans and of the stored form.
const (
	fID = iota
	fDate
	fType
	fUserID
	fUserName
	fIP
	fClientID
	fConnection
	numFields
)

var fieldNames = [numFields]string{"log_id", "date", "type", "user_id", "user_name", "ip", "client_id", "connection"}

// span is where a field's text lies in Raw: Raw[off:off+n], the inside of
// a JSON string without escapes. off 0: the field is absent (or not a
// string); n < 0: its text is not its bytes in Raw (escapes, invalid
// UTF-8), so it cannot be pointed at.
type span struct{ off, n int }

// Decode parses one event. The returned Log keeps raw (copied) as its Raw.
func Decode(raw []byte) (Log, error) {
	l, err := DecodeShared(raw)
	if err != nil {
		return Log{}, err
	}
	l.Raw = bytes.Clone(l.Raw)
	return l, nil
}

// DecodeShared is Decode without the copy: the returned Log's Raw is raw
// (trimmed of white space), for a caller that owns raw and leaves it
// unchanged while it uses the Log.
func DecodeShared(raw []byte) (Log, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Log{}, errors.New("log event is not a JSON object")
	}
	if !ValidJSON(trimmed) {
		return Log{}, errors.New("decode log event: not valid JSON")
	}
	return decodeValid(gjson.Parse(string(trimmed)), trimmed)
}

// decodeValid reads the fields of obj, a valid JSON object whose text is
// raw.
func decodeValid(obj gjson.Result, raw []byte) (Log, error) {
	l := Log{Raw: raw}
	var vals [numFields]string
	var bad error
	obj.ForEach(func(k, v gjson.Result) bool {
		f := fieldOf(k.Str)
		switch {
		case f < 0:
			return true
		case v.Type == gjson.String:
			s, same := validUTF8(v.Str)
			vals[f], l.spans[f] = s, span{off: v.Index - obj.Index + 1, n: len(s)}
			if !same || strings.IndexByte(v.Raw, '\\') >= 0 {
				l.spans[f].n = -1
			}
		case v.Type != gjson.Null && f <= fType:
			bad = fmt.Errorf("decode log event: %s is a JSON %s, not a string", fieldNames[f], kindOf(v))
			return false
		default: // null or, for the other fields, not a string: absent
			vals[f], l.spans[f] = "", span{}
		}
		return true
	})
	if bad != nil {
		return Log{}, bad
	}
	l.setFields(vals)
	if err := ValidateID(l.ID); err != nil {
		return Log{}, err
	}
	if vals[fDate] == "" {
		return Log{}, fmt.Errorf("log %s: missing date", l.ID)
	}
	t, err := time.Parse(time.RFC3339Nano, vals[fDate])
	if err != nil {
		return Log{}, fmt.Errorf("log %s: date %q is not RFC 3339", l.ID, truncate(vals[fDate]))
	}
	l.Date = t.UTC()
	if l.Type == "" {
		return Log{}, fmt.Errorf("log %s: missing type", l.ID)
	}
	return l, nil
}

// setFields sets the string fields from vals (by field; fDate is parsed
// apart).
func (l *Log) setFields(vals [numFields]string) {
	l.ID, l.Type = vals[fID], vals[fType]
	l.UserID, l.UserName, l.IP = vals[fUserID], vals[fUserName], vals[fIP]
	l.ClientID, l.Connection = vals[fClientID], vals[fConnection]
}

func fieldOf(name string) int { return slices.Index(fieldNames[:], name) }

func kindOf(v gjson.Result) string {
	switch v.Type {
	case gjson.Number:
		return "number"
	case gjson.True, gjson.False:
		return "boolean"
	}
	if v.IsArray() {
		return "array"
	}
	return "object"
}

// validUTF8 returns s with each byte that is not part of valid UTF-8
// replaced by U+FFFD, as encoding/json decodes such a string, and whether s
// was valid already.
func validUTF8(s string) (string, bool) {
	if utf8.ValidString(s) {
		return s, true
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s { // an invalid byte ranges as one utf8.RuneError
		b.WriteRune(r)
	}
	return b.String(), false
}

// maxBrackets bounds the nesting gjson is given: it validates recursively,
// so a document nested millions deep (a 10 MB body of "[") would overflow
// the goroutine's stack, which is fatal. A document with at most this many
// brackets cannot nest deeper; a larger one is validated by encoding/json,
// which limits nesting itself (to 10,000, as this does).
const maxBrackets = 10000

// ValidJSON reports whether data is one valid JSON value (json.Valid).
func ValidJSON(data []byte) bool {
	if bytes.Count(data, []byte{'['})+bytes.Count(data, []byte{'{'}) > maxBrackets {
		return json.Valid(data)
	}
	return gjson.ValidBytes(data)
}

// EventError is an event of a page that does not decode.
type EventError struct {
	Index  int    // the event's position in the page, from 0
	Events int    // events in the page
	After  string // the highest log_id before it in the page ("" if none)
	Err    error
}

func (e *EventError) Error() string { return fmt.Sprintf("event %d of page: %v", e.Index, e.Err) }

func (e *EventError) Unwrap() error { return e.Err }

// DecodePage parses a page of events (a JSON array) as returned by
// GET /api/v2/logs; null is an empty page, as go-auth0 reads it. One bad
// event makes the whole page an error (an *EventError): a page is buffered
// whole or not at all, so the checkpoint never passes an event that was not
// kept. The logs' Raw share body's memory: body must not change while they
// are used.
func DecodePage(body []byte) ([]Log, error) {
	if !ValidJSON(body) {
		return nil, errors.New("decode log page: not valid JSON")
	}
	page := gjson.Parse(string(body))
	if page.Type == gjson.Null {
		return nil, nil
	}
	if !page.IsArray() {
		return nil, fmt.Errorf("decode log page: a JSON %s, not an array", kindOf(page))
	}
	elems := page.Array()
	logs := make([]Log, 0, len(elems))
	after := ""
	for i, v := range elems {
		err := errors.New("log event is not a JSON object")
		var l Log
		if v.IsObject() {
			l, err = decodeValid(v, body[v.Index:v.Index+len(v.Raw)])
		}
		if err != nil {
			return nil, &EventError{Index: i, Events: len(elems), After: after, Err: err}
		}
		logs = append(logs, l)
		after = max(after, l.ID)
	}
	return logs, nil
}

// ValidateID checks the log_id format: 56 ASCII digits starting "900" with a
// valid UTC timestamp embedded.
func ValidateID(id string) error {
	if id == "" {
		return errors.New("log event has no log_id")
	}
	if len(id) != IDLength {
		return fmt.Errorf("log_id %q: want %d digits, got %d characters", truncate(id), IDLength, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return fmt.Errorf("log_id %q: not all digits", truncate(id))
		}
	}
	_, err := IDTime(id)
	return err
}

// IDTime returns the UTC time embedded in a log_id (second precision). It is
// a few seconds after the event's date.
func IDTime(id string) (time.Time, error) {
	if len(id) != IDLength || !strings.HasPrefix(id, idPrefix) {
		return time.Time{}, fmt.Errorf("log_id %q: not an Auth0 log_id", truncate(id))
	}
	t, err := time.ParseInLocation(idTimeLayout, id[idTimeStart:idTimeEnd], time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("log_id %q: embedded time: %w", truncate(id), err)
	}
	return t, nil
}

// CheckpointAt returns a synthetic log_id that sorts before every real log_id
// of second t and after every earlier one: used as `from` it starts checkpoint
// paging at t.
func CheckpointAt(t time.Time) string {
	return idPrefix + t.UTC().Format(idTimeLayout) + strings.Repeat("0", IDLength-idTimeEnd)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Member is one member of an event's JSON object.
type Member struct {
	Key string // the member's name, unescaped, invalid UTF-8 as U+FFFD
	v   gjson.Result
}

// Value is the member's value as encoding/json decodes it into an any
// with UseNumber: objects as map[string]any (of a member given twice, the
// last), arrays as []any, numbers as json.Number (exact), strings
// unescaped with invalid UTF-8 as U+FFFD.
func (m Member) Value() any { return value(m.v) }

// Text is the member's value when it is a JSON string, as Value decodes
// it; false for any other value.
func (m Member) Text() (string, bool) {
	if m.v.Type != gjson.String {
		return "", false
	}
	s, _ := validUTF8(m.v.Str)
	return s, true
}

// Members calls fn for each member of the event, in order, until fn
// returns false, for a caller that builds its own value from them (a
// member given twice comes twice). It fails when Raw is not one valid JSON
// object.
func (l Log) Members(fn func(Member) bool) error {
	if !ValidJSON(l.Raw) {
		return errors.New("decode event: not valid JSON")
	}
	v := gjson.Parse(string(l.Raw))
	if !v.IsObject() {
		return errors.New("event is not a JSON object")
	}
	v.ForEach(func(k, e gjson.Result) bool {
		key, _ := validUTF8(k.Str)
		return fn(Member{Key: key, v: e})
	})
	return nil
}

func object(v gjson.Result) map[string]any {
	m := map[string]any{}
	v.ForEach(func(k, e gjson.Result) bool {
		key, _ := validUTF8(k.Str)
		m[key] = value(e)
		return true
	})
	return m
}

func value(v gjson.Result) any {
	switch v.Type {
	case gjson.String:
		s, _ := validUTF8(v.Str)
		return s
	case gjson.Number:
		return json.Number(v.Raw)
	case gjson.True:
		return true
	case gjson.False:
		return false
	case gjson.Null:
		return nil
	}
	if v.IsArray() {
		a := make([]any, 0)
		v.ForEach(func(_, e gjson.Result) bool {
			a = append(a, value(e))
			return true
		})
		return a
	}
	return object(v)
}
