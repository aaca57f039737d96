package auth0stream

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/jsonscan"
)

// Format is a custom webhook stream's Content Format, as Auth0 names it.
type Format string

// The three content formats. The receiver tells them apart by the body.
const (
	// JSONLines: one record per line.
	JSONLines Format = "JSONLINES"
	// JSONArray: a JSON array of records.
	JSONArray Format = "JSONARRAY"
	// JSONObject: a JSON object whose "logs" member is the array of
	// records, {"logs":[…]} (see the package doc for how this is known).
	JSONObject Format = "JSONOBJECT"
)

// Formats lists the content formats.
var Formats = []Format{JSONLines, JSONArray, JSONObject}

// BadRequestError is a request body that cannot be stored: it names the
// first bad record (Record ≥ 0, counted from 0 in the body's order, with
// its log_id when that was readable) or the body as a whole (Record −1).
type BadRequestError struct {
	Record int
	LogID  string
	Reason string
}

func (e *BadRequestError) Error() string {
	switch {
	case e.Record < 0:
		return e.Reason
	case e.LogID != "":
		return fmt.Sprintf("record %d (log_id %s): %s", e.Record, e.LogID, e.Reason)
	}
	return fmt.Sprintf("record %d: %s", e.Record, e.Reason)
}

func bodyError(format string, args ...any) error {
	return &BadRequestError{Record: -1, Reason: fmt.Sprintf(format, args...)}
}

// ParseBody reads a Log Streams request body in any of the three formats
// and returns its format and each record's event, in body order. Every
// record must be {"log_id": L, "data": E} where L is a valid Auth0 log_id
// and E an event auth0log.Decode accepts whose own log_id is L; members
// other than log_id and data are ignored. The first bad record, or a body
// that is none of the formats, is a *BadRequestError. The returned logs'
// Raw fields share body's memory: body must not change while they are used.
func ParseBody(body []byte) (Format, []auth0log.Log, error) {
	trimmed := trimSpace(body)
	if len(trimmed) == 0 {
		return "", nil, bodyError("empty body: want records as JSON Lines, a JSON array or a JSON object {\"logs\":[…]}")
	}
	switch trimmed[0] {
	case '[':
		logs, err := parseArray(trimmed, "")
		return JSONArray, logs, err
	case '{':
		if jsonscan.Valid(trimmed) {
			return parseObject(trimmed)
		}
		logs, err := parseLines(trimmed)
		return JSONLines, logs, err
	}
	return "", nil, bodyError("body is not JSON Lines, a JSON array or a JSON object: it starts with %q", trimmed[:1])
}

// parseArray reads a JSON array of records; what names the array in
// messages ("" for the body itself).
func parseArray(arr []byte, what string) ([]auth0log.Log, error) {
	var logs []auth0log.Log
	var bad error
	ok := jsonscan.Elements(arr, func(v []byte) bool {
		l, err := parseRecord(len(logs), v)
		if err != nil {
			bad = err
			return false
		}
		logs = append(logs, l)
		return true
	})
	if bad != nil {
		return nil, bad
	}
	if !ok {
		if what == "" {
			what = "body"
		}
		return nil, bodyError("%s is not a valid JSON array: invalid JSON at or after record %d", what, len(logs))
	}
	return logs, nil
}

// parseObject reads a body that is one JSON object: either the JSONOBJECT
// wrapper {"logs":[…]} or a single record (JSON Lines of one line).
func parseObject(obj []byte) (Format, []auth0log.Log, error) {
	var logsMember []byte
	record := false
	ok := jsonscan.Members(obj, func(key []byte, plain bool, v []byte) bool {
		switch {
		case !plain:
		case string(key) == "logs":
			logsMember = v
		case string(key) == "log_id" || string(key) == "data":
			record = true
		}
		return true
	})
	switch {
	case !ok:
		return "", nil, bodyError("body is not a valid JSON object")
	case logsMember != nil && record:
		return "", nil, bodyError(`body has both "logs" (a JSONOBJECT body) and "log_id" or "data" (a single record): want one of the two`)
	case logsMember == nil:
		l, err := parseRecord(0, obj)
		if err != nil {
			return JSONLines, nil, err
		}
		return JSONLines, []auth0log.Log{l}, nil
	}
	if trimSpace(logsMember)[0] != '[' {
		return JSONObject, nil, bodyError(`"logs" of a JSONOBJECT body must be an array of records`)
	}
	logs, err := parseArray(logsMember, `"logs"`)
	return JSONObject, logs, err
}

// parseLines reads JSON Lines: one record per line, blank lines ignored.
func parseLines(body []byte) ([]auth0log.Log, error) {
	var logs []auth0log.Log
	for line, rest := 1, body; len(rest) > 0; line++ {
		var text []byte
		text, rest, _ = bytes.Cut(rest, []byte{'\n'})
		text = trimSpace(text)
		if len(text) == 0 {
			continue
		}
		if !jsonscan.Valid(text) {
			return nil, &BadRequestError{Record: len(logs), Reason: fmt.Sprintf("line %d is not valid JSON: want one record per line (JSON Lines)", line)}
		}
		l, err := parseRecord(len(logs), text)
		if err != nil {
			return nil, err
		}
		logs = append(logs, l)
	}
	return logs, nil
}

// parseRecord reads one record {"log_id": …, "data": {…}} (valid JSON).
func parseRecord(i int, rec []byte) (auth0log.Log, error) {
	bad := func(logID, format string, args ...any) (auth0log.Log, error) {
		return auth0log.Log{}, &BadRequestError{Record: i, LogID: logID, Reason: fmt.Sprintf(format, args...)}
	}
	var idValue, data []byte
	twice := ""
	ok := jsonscan.Members(rec, func(key []byte, plain bool, v []byte) bool {
		if !plain {
			return true
		}
		switch string(key) {
		case "log_id":
			if idValue != nil {
				twice = "log_id"
				return false
			}
			idValue = v
		case "data":
			if data != nil {
				twice = "data"
				return false
			}
			data = v
		}
		return true
	})
	switch {
	case twice != "":
		return bad("", "%s is given twice", twice)
	case !ok:
		return bad("", "not a JSON object: want {\"log_id\": …, \"data\": {…}}")
	case idValue == nil || jsonscan.IsNull(idValue):
		return bad("", "missing log_id")
	}
	id, err := stringValue(idValue)
	if err != nil {
		return bad("", "log_id is not a string")
	}
	if err := auth0log.ValidateID(id); err != nil {
		return bad("", "%v", err)
	}
	if data == nil || jsonscan.IsNull(data) {
		return bad(id, "missing data")
	}
	l, err := auth0log.DecodeShared(data)
	if err != nil {
		return bad(id, "data: %v", err)
	}
	if l.ID != id {
		// Neither Auth0's documentation nor its behaviour says which of the
		// two would be right: storing either could lose the other event.
		return bad(id, "log_id differs from data.log_id %s", l.ID)
	}
	return l, nil
}

// stringValue decodes a JSON string value.
func stringValue(v []byte) (string, error) {
	if s, ok := jsonscan.PlainString(v); ok {
		return string(s), nil
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

// trimSpace trims JSON white space (space, tab, CR, LF) from both ends.
func trimSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}
