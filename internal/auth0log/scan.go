package auth0log

import "github.com/authpipe/authpipe/internal/jsonscan"

// scanHead is Decode's fast path: one validating pass (jsonscan) that picks
// out log_id, date and type, where encoding/json makes two passes through
// its state machine. It returns what json.Unmarshal into head would, with ok
// true, or ok false when obj is not valid JSON or decoding it needs
// encoding/json's own rules — an escaped or non-ASCII key, a key matching a
// field only case-insensitively, a field value that is not a plain string
// or null — and the caller then decodes obj with encoding/json.
func scanHead(obj []byte) (h head, ok bool) {
	ok = true
	valid := jsonscan.Members(obj, func(key []byte, plain bool, value []byte) bool {
		if !plain {
			ok = false
			return false
		}
		var dst *string
		switch fieldOf(key) {
		case fieldNone:
			return true
		case fieldLogID:
			dst = &h.LogID
		case fieldDate:
			dst = &h.Date
		case fieldType:
			dst = &h.Type
		default: // fieldFolded
			ok = false
			return false
		}
		if jsonscan.IsNull(value) {
			return true // null leaves a field as it was
		}
		s, plainValue := jsonscan.PlainString(value)
		if !plainValue {
			ok = false
			return false
		}
		*dst = string(s)
		return true
	})
	return h, ok && valid
}

// Members of head, and what a key is to them.
const (
	fieldNone   = iota // no member
	fieldLogID         // "log_id"
	fieldDate          // "date"
	fieldType          // "type"
	fieldFolded        // a member's name in other letter case: encoding/json's rules apply
)

func fieldOf(key []byte) int {
	switch string(key) {
	case "log_id":
		return fieldLogID
	case "date":
		return fieldDate
	case "type":
		return fieldType
	}
	for _, name := range [...]string{"log_id", "date", "type"} {
		if len(key) == len(name) && asciiEqualFold(key, name) {
			return fieldFolded
		}
	}
	return fieldNone
}

func asciiEqualFold(b []byte, s string) bool {
	for i := range b {
		if b[i]|0x20 != s[i]|0x20 {
			return false
		}
	}
	return true
}
