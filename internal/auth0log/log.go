// Package auth0log decodes Auth0 log events without losing any of their
// fields, and knows Auth0's log_id format and log type table.
//
// Guarantee: Decode never drops a field. A Log carries the event's raw JSON
// verbatim; the few fields authpipe reads (log_id, date, type) are parsed
// alongside, and an event that lacks a valid log_id or date is an error, never
// silently accepted, because the checkpoint and every window are built on them.
package auth0log

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
	ID   string          // log_id, 56 digits; sorts like the event stream
	Date time.Time       // the event's date (event time)
	Type string          // the log type code, e.g. "fp"
	Raw  json.RawMessage // the whole event as Auth0 sent it
}

// head is the part of an event that authpipe itself needs.
type head struct {
	LogID string `json:"log_id"`
	Date  string `json:"date"`
	Type  string `json:"type"`
}

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
	h, ok := scanHead(trimmed)
	if !ok {
		// Invalid, or beyond the fast path: encoding/json decides (and
		// words the error).
		h = head{}
		if err := json.Unmarshal(trimmed, &h); err != nil {
			return Log{}, fmt.Errorf("decode log event: %w", err)
		}
	}
	if err := ValidateID(h.LogID); err != nil {
		return Log{}, err
	}
	if h.Date == "" {
		return Log{}, fmt.Errorf("log %s: missing date", h.LogID)
	}
	date, err := time.Parse(time.RFC3339Nano, h.Date)
	if err != nil {
		return Log{}, fmt.Errorf("log %s: date %q is not RFC 3339", h.LogID, h.Date)
	}
	if h.Type == "" {
		return Log{}, fmt.Errorf("log %s: missing type", h.LogID)
	}
	return Log{ID: h.LogID, Date: date.UTC(), Type: h.Type, Raw: trimmed}, nil
}

// DecodePage parses a page of events (a JSON array) as returned by
// GET /api/v2/logs. One bad event makes the whole page an error: a page is
// buffered whole or not at all, so the checkpoint never passes an event that
// was not kept.
func DecodePage(body []byte) ([]Log, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, fmt.Errorf("decode log page: %w", err)
	}
	return DecodeRaw(raws)
}

// DecodeRaw decodes events already split out of a page.
func DecodeRaw(raws []json.RawMessage) ([]Log, error) {
	logs := make([]Log, 0, len(raws))
	for i, raw := range raws {
		l, err := Decode(raw)
		if err != nil {
			return nil, fmt.Errorf("event %d of page: %w", i, err)
		}
		logs = append(logs, l)
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
	if _, err := IDTime(id); err != nil {
		return err
	}
	return nil
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
