// Package testlogs holds what tests need to read a component's logs and
// to see what a value prints as.
package testlogs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer that a logger may write from several goroutines
// while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Printed returns v as the ways a value leaves a process show it: fmt's
// %v, %+v, %#v and %s, and an attribute of slog's JSON and text handlers.
// A test of a type holding secrets checks none of them shows one.
func Printed(v any) []string {
	var j, t bytes.Buffer
	slog.New(slog.NewJSONHandler(&j, nil)).Info("printed", "value", v)
	slog.New(slog.NewTextHandler(&t, nil)).Info("printed", "value", v)
	return []string{fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v), fmt.Sprintf("%s", v), j.String(), t.String()}
}

// Components returns the component of every line of a JSON log, "" for a
// line that is not JSON or names none.
func Components(log string) []string {
	var out []string
	for line := range strings.Lines(log) {
		var e struct {
			Component string `json:"component"`
		}
		_ = json.Unmarshal([]byte(line), &e)
		out = append(out, e.Component)
	}
	return out
}
