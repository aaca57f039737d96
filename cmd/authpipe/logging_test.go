package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestComponentHandler: every line names one component: the one its
// logger or the call carries, else main's.
func TestComponentHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(componentHandler{Handler: slog.NewJSONHandler(&buf, nil)})
	log.Info("main's own line")
	log.With("tenant", "acme").Info("main's tenant line")
	log.With("component", "forward", "tenant", "acme").Info("a component's line")
	log.With("component", "buffer").WithGroup("g").Info("in a group", "k", 1)
	log.Info("named in the call", "component", "maintenance")

	var got []string
	for line := range strings.Lines(buf.String()) {
		require.Equal(t, 1, strings.Count(line, `"component"`), line)
		var e struct{ Component string }
		require.NoError(t, json.Unmarshal([]byte(line), &e))
		got = append(got, e.Component)
	}
	require.Equal(t, []string{"authpipe", "authpipe", "forward", "buffer", "maintenance"}, got)
}
