package sim

import (
	"errors"

	"github.com/tidwall/gjson"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// The Segment simulator decodes every batch it accepts with gjson: at
// benchmark rates (tens of thousands of messages a second) encoding/json's
// two passes per document cost more CPU than authpipe itself. Member names
// match exactly, as Segment's API names them.

// decodeBatch reads a batch request body. The messages alias raw.
func decodeBatch(raw []byte) (batchBody, error) {
	var body batchBody
	v, err := parseObject(raw)
	if err != nil || v.Type == gjson.Null {
		return body, err
	}
	v.ForEach(func(k, m gjson.Result) bool {
		switch k.Str {
		case "batch":
			switch {
			case m.Type == gjson.Null:
			case m.IsArray():
				body.Batch = body.Batch[:0]
				m.ForEach(func(_, e gjson.Result) bool {
					body.Batch = append(body.Batch, raw[e.Index:e.Index+len(e.Raw)])
					return true
				})
			default:
				err = errors.New("batch is not an array")
			}
		case "writeKey":
			body.WriteKey, err = str(m, "writeKey", body.WriteKey)
		}
		return err == nil
	})
	return body, err
}

// decodeHead reads the fields Segment validates of one message. UserID and
// AnonymousID alias m.
func decodeHead(m []byte) (messageHead, error) {
	var h messageHead
	v, err := parseObject(m)
	if err != nil || v.Type == gjson.Null {
		return h, err
	}
	v.ForEach(func(k, f gjson.Result) bool {
		switch k.Str {
		case "type":
			h.Type, err = str(f, "type", h.Type)
		case "event":
			h.Event, err = str(f, "event", h.Event)
		case "messageId":
			h.MessageID, err = str(f, "messageId", h.MessageID)
		case "userId":
			h.UserID = m[f.Index : f.Index+len(f.Raw)]
		case "anonymousId":
			h.AnonymousID = m[f.Index : f.Index+len(f.Raw)]
		}
		return err == nil
	})
	return h, err
}

// parseObject parses a JSON object or null.
func parseObject(raw []byte) (gjson.Result, error) {
	if !auth0log.ValidJSON(raw) {
		return gjson.Result{}, errors.New("invalid JSON")
	}
	v := gjson.Parse(string(raw))
	if !v.IsObject() && v.Type != gjson.Null {
		return gjson.Result{}, errors.New("not a JSON object")
	}
	return v, nil
}

// str reads a string member; null leaves it as it was.
func str(v gjson.Result, name, was string) (string, error) {
	switch v.Type {
	case gjson.Null:
		return was, nil
	case gjson.String:
		return v.Str, nil
	}
	return was, errors.New(name + " is not a string")
}
