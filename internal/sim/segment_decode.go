package sim

import (
	"encoding/json"

	"github.com/authpipe/authpipe/internal/jsonscan"
)

// The Segment simulator decodes every batch it accepts; at benchmark rates
// (tens of thousands of messages a second) encoding/json's two passes per
// document cost more CPU than authpipe itself. These fast paths decode the
// common shapes in one validating pass (jsonscan) and leave everything else
// — escaped or case-folded keys, unexpected types, invalid JSON — to
// encoding/json, so the answers are exactly encoding/json's.

// decodeBatch is json.Unmarshal(raw, &body), faster. The messages alias raw.
func decodeBatch(raw []byte) (batchBody, error) {
	var body batchBody
	fast := true
	valid := jsonscan.Members(raw, func(key []byte, plain bool, value []byte) bool {
		if !plain {
			fast = false
			return false
		}
		switch string(key) {
		case "batch":
			if jsonscan.IsNull(value) {
				return true
			}
			batch := body.Batch[:0]
			if !jsonscan.Elements(value, func(m []byte) bool {
				batch = append(batch, m)
				return true
			}) {
				fast = false
				return false
			}
			body.Batch = batch
		case "writeKey":
			if jsonscan.IsNull(value) {
				return true
			}
			s, ok := jsonscan.PlainString(value)
			if !ok {
				fast = false
				return false
			}
			body.WriteKey = string(s)
		default:
			if foldsTo(key, "batch", "writeKey") {
				fast = false
				return false
			}
		}
		return true
	})
	if fast && valid {
		return body, nil
	}
	body = batchBody{}
	err := json.Unmarshal(raw, &body)
	return body, err
}

// decodeHead is json.Unmarshal(m, &h), faster. UserID and AnonymousID
// alias m.
func decodeHead(m []byte) (messageHead, error) {
	var h messageHead
	if jsonscan.IsNull(m) {
		return h, nil
	}
	fast := true
	valid := jsonscan.Members(m, func(key []byte, plain bool, value []byte) bool {
		if !plain {
			fast = false
			return false
		}
		var dst *string
		switch string(key) {
		case "type":
			dst = &h.Type
		case "event":
			dst = &h.Event
		case "messageId":
			dst = &h.MessageID
		case "userId":
			h.UserID = value
			return true
		case "anonymousId":
			h.AnonymousID = value
			return true
		default:
			if foldsTo(key, "type", "event", "messageId", "userId", "anonymousId") {
				fast = false
				return false
			}
			return true
		}
		if jsonscan.IsNull(value) {
			return true
		}
		s, ok := jsonscan.PlainString(value)
		if !ok {
			fast = false
			return false
		}
		*dst = string(s)
		return true
	})
	if fast && valid {
		return h, nil
	}
	h = messageHead{}
	err := json.Unmarshal(m, &h)
	return h, err
}

// foldsTo reports whether the ASCII key equals one of names in another
// letter case (encoding/json matches field names case-insensitively).
func foldsTo(key []byte, names ...string) bool {
	for _, name := range names {
		if len(key) != len(name) {
			continue
		}
		same := true
		for i := range key {
			if key[i]|0x20 != name[i]|0x20 {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}
