package buffer

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// TestSeen: both backends report which log_ids their dedupe record holds,
// whoever appended them and with or without a checkpoint, and an empty
// list asks nothing.
func TestSeen(t *testing.T) {
	type seenBuffer interface {
		Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
		Seen(ctx context.Context, ids []string) ([]bool, error)
	}
	backends := map[string]func(t *testing.T) seenBuffer{
		"redis": func(t *testing.T) seenBuffer { return newFixture(t, Config{}).b },
		"bolt":  func(t *testing.T) seenBuffer { return newBoltFixture(t, Config{}).b },
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			b := open(t)
			polled, pushed, other := page(base, 1, 2), page(base, 3, 1), page(base, 9, 1)

			got, err := b.Seen(ctx, logIDs(append(append(polled, pushed...), other...)))
			require.NoError(t, err)
			require.Equal(t, []bool{false, false, false, false}, got)

			_, err = b.Append(ctx, polled, polled[1].ID)
			require.NoError(t, err)
			_, err = b.Append(ctx, pushed, "")
			require.NoError(t, err)

			ids := []string{other[0].ID, polled[0].ID, pushed[0].ID, polled[1].ID, polled[0].ID}
			got, err = b.Seen(ctx, ids)
			require.NoError(t, err)
			require.Equal(t, []bool{false, true, true, true, true}, got)

			got, err = b.Seen(ctx, nil)
			require.NoError(t, err)
			require.Empty(t, got)
		})
	}
}

// TestSeenRedisDown: a Redis that does not answer is an error naming the
// action, never a "not seen".
func TestSeenRedisDown(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := f.b.Seen(ctx, logIDs(page(base, 1, 1)))
	require.ErrorContains(t, err, "read dedupe record of 1 logs")
}
