// Package testlog makes the Auth0 logs the buffer's tests append. It is
// shared by the package's own tests (package buffer) and the conformance
// suite (conformance_suite_test.go, package buffer_test), and must not
// import package buffer.
package testlog

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Base is the time of the tests' logs.
var Base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// LogAt returns a log whose log_id embeds time at and ends in seq,
// decoded as the poller decodes it (with its parsed fields).
func LogAt(at time.Time, seq int) auth0log.Log {
	id := fmt.Sprintf("900%s%039d", at.UTC().Format("20060102150405"), seq)
	raw, _ := json.Marshal(map[string]any{
		"log_id": id, "date": at.UTC().Format(time.RFC3339Nano), "type": "s", "user_name": fmt.Sprintf("user%d", seq),
		"ip": fmt.Sprintf("198.51.100.%d", seq%256), "client_id": "app", "connection": "db",
	})
	l, err := auth0log.Decode(raw)
	if err != nil {
		panic(err) // the tests' own events
	}
	return l
}

// Page returns n logs with ascending ids seq from..from+n-1 at time at.
func Page(at time.Time, from, n int) []auth0log.Log {
	logs := make([]auth0log.Log, n)
	for i := range logs {
		logs[i] = LogAt(at, from+i)
	}
	return logs
}

// LogIDs returns the logs' log_ids.
func LogIDs(logs []auth0log.Log) []string {
	return IDs(logs, func(l auth0log.Log) string { return l.ID })
}

// IDs returns the id of each of xs, in order.
func IDs[T any](xs []T, id func(T) string) []string {
	ids := make([]string, len(xs))
	for i, x := range xs {
		ids[i] = id(x)
	}
	return ids
}
