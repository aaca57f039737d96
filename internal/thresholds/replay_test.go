package thresholds

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
)

// Replay raises an alert once per breaching group, at the clock of the
// events, and forgets counts as their window passes: the same burst an
// hour later raises it again.
func TestReplay(t *testing.T) {
	rs := thtest.Rules(t, strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1m"))
	_, err := NewReplay(rs, "acme", 0)
	require.ErrorContains(t, err, "replay step")
	rp, err := NewReplay(rs, "acme", 10*time.Second)
	require.NoError(t, err)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	raws := func(date time.Time) []json.RawMessage {
		var out []json.RawMessage
		for _, l := range thtest.Burst(t, 25, "fp", "203.0.113.7", date) {
			out = append(out, l.Raw)
		}
		return out
	}
	ctx := context.Background()
	require.NoError(t, rp.Add(ctx, raws(at)...))
	require.NoError(t, rp.Add(ctx, raws(at.Add(time.Minute))...))
	require.Len(t, rp.Fired(), 1, "one alert for the group while it breaches")
	a := rp.Fired()[0]
	require.Equal(t, "203.0.113.7", a.Labels["ip"])
	require.Equal(t, "acme", a.Labels["tenant"])
	require.True(t, a.StartsAt.Equal(at), "raised at the burst's time: %s", a.StartsAt)

	require.NoError(t, rp.Add(ctx, raws(at.Add(time.Hour))...))
	require.Len(t, rp.Fired(), 2, "resolved in between, raised again")
	require.True(t, rp.Fired()[1].StartsAt.Equal(at.Add(time.Hour)))
}
