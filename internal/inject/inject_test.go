package inject

import (
	"log/slog"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestDefaults(t *testing.T) {
	var (
		logger *slog.Logger
		reg    prometheus.Registerer
		clock  clockwork.Clock
	)
	Defaults(&logger, &reg, &clock)
	require.NotNil(t, logger)
	require.False(t, logger.Enabled(t.Context(), slog.LevelError), "discards")
	require.NotNil(t, reg)
	require.NotNil(t, clock)

	// Given ones are kept; each call builds fresh defaults.
	given, fake := slog.New(slog.NewTextHandler(t.Output(), nil)), clockwork.NewFakeClock()
	logger, clock = given, fake
	var reg2 prometheus.Registerer
	Defaults(&logger, &reg2, &clock)
	require.Same(t, given, logger)
	require.Equal(t, clockwork.Clock(fake), clock)
	require.NotSame(t, reg, reg2)

	Defaults(nil, nil, nil) // a component without them
}
