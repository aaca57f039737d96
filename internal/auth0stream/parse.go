package auth0stream

import (
	"bytes"
	"fmt"

	"github.com/tidwall/gjson"

	"github.com/authpipe/authpipe/internal/auth0log"
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
		if auth0log.ValidJSON(trimmed) {
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
	var elems [][]byte // slices of arr
	gjson.Parse(string(arr)).ForEach(func(_, v gjson.Result) bool {
		elems = append(elems, arr[v.Index:v.Index+len(v.Raw)])
		return true
	})
	if !auth0log.ValidJSON(arr) {
		// Name the first record that is not valid JSON itself: in a body
		// cut short, the record cut.
		n := 0
		for n < len(elems) && auth0log.ValidJSON(elems[n]) {
			n++
		}
		if what == "" {
			what = "body"
		}
		return nil, bodyError("%s is not a valid JSON array: invalid JSON at or after record %d", what, n)
	}
	logs := make([]auth0log.Log, 0, len(elems))
	for _, v := range elems {
		l, err := parseRecord(len(logs), v)
		if err != nil {
			return nil, err
		}
		logs = append(logs, l)
	}
	return logs, nil
}

// parseObject reads a body that is one JSON object (valid JSON): either
// the JSONOBJECT wrapper {"logs":[…]} or a single record (JSON Lines of one
// line).
func parseObject(obj []byte) (Format, []auth0log.Log, error) {
	var logsMember []byte
	record := false
	gjson.Parse(string(obj)).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "logs":
			logsMember = obj[v.Index : v.Index+len(v.Raw)]
		case "log_id", "data":
			record = true
		}
		return true
	})
	switch {
	case logsMember != nil && record:
		return "", nil, bodyError(`body has both "logs" (a JSONOBJECT body) and "log_id" or "data" (a single record): want one of the two`)
	case logsMember == nil:
		l, err := parseRecord(0, obj)
		if err != nil {
			return JSONLines, nil, err
		}
		return JSONLines, []auth0log.Log{l}, nil
	}
	if logsMember[0] != '[' {
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
		if !auth0log.ValidJSON(text) {
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
	v := gjson.Parse(string(rec))
	if !v.IsObject() {
		return bad("", "not a JSON object: want {\"log_id\": …, \"data\": {…}}")
	}
	var idValue, data gjson.Result
	twice := ""
	v.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "log_id":
			if idValue.Exists() {
				twice = "log_id"
				return false
			}
			idValue = v
		case "data":
			if data.Exists() {
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
	case !idValue.Exists() || idValue.Type == gjson.Null:
		return bad("", "missing log_id")
	case idValue.Type != gjson.String:
		return bad("", "log_id is not a string")
	}
	id := idValue.Str
	if err := auth0log.ValidateID(id); err != nil {
		return bad("", "%v", err)
	}
	if !data.Exists() || data.Type == gjson.Null {
		return bad(id, "missing data")
	}
	l, err := auth0log.DecodeShared(rec[data.Index : data.Index+len(data.Raw)])
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

// trimSpace trims JSON white space (space, tab, CR, LF) from both ends.
func trimSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}
