package buffer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// dlqMover is the batch-size-parameterised core of both backends.
type dlqMover interface {
	DeadLetters(ctx context.Context, count int) ([]DeadLetter, error)
	DeadLetter(ctx context.Context, group string, e Entry, reason string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]Entry, error)
}

// TestDeadLettersInBatches: "all" and long id lists are worked in bounded
// batches that together cover every dead letter, and "all" stops at the
// newest dead letter of when it started.
func TestDeadLettersInBatches(t *testing.T) {
	type backend struct {
		b    dlqMover
		move func(ctx context.Context, replay bool, ids []string, batch int) (int, error)
	}
	open := map[string]func(t *testing.T) backend{
		"redis": func(t *testing.T) backend {
			f := newFixture(t, Config{})
			return backend{b: f.b, move: func(ctx context.Context, replay bool, ids []string, batch int) (int, error) {
				op := "drop"
				if replay {
					op = "replay"
				}
				return f.b.moveDeadLetters(ctx, op, ids, batch)
			}}
		},
		"bolt": func(t *testing.T) backend {
			b, err := OpenBolt(t.TempDir(), Config{Tenant: "acme"}, Deps{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = b.Close() })
			return backend{b: b, move: b.moveDeadLetters}
		},
	}
	for name, opener := range open {
		for _, replay := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s replay=%v", name, replay), func(t *testing.T) {
				be := opener(t)
				ctx := t.Context()
				ap := be.b.(interface {
					Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
					EnsureGroup(ctx context.Context, group string) error
				})
				logs := page(base, 0, 7)
				_, err := ap.Append(ctx, logs, logs[6].ID)
				require.NoError(t, err)
				require.NoError(t, ap.EnsureGroup(ctx, "fwd"))
				got, err := be.b.Read(ctx, "fwd", "c", 10, -1)
				require.NoError(t, err)
				for _, e := range got {
					require.NoError(t, be.b.DeadLetter(ctx, "fwd", e, "invalid"))
				}
				dls, err := be.b.DeadLetters(ctx, 10)
				require.NoError(t, err)
				require.Len(t, dls, 7)

				ids := []string{dls[0].ID, dls[1].ID, dls[2].ID, dls[3].ID, dls[4].ID}
				n, err := be.move(ctx, replay, ids, 2)
				require.NoError(t, err)
				require.Equal(t, 5, n, "ids in batches of 2")
				n, err = be.move(ctx, replay, nil, 1)
				require.NoError(t, err)
				require.Equal(t, 2, n, "all, one per batch")
				left, err := be.b.DeadLetters(ctx, 10)
				require.NoError(t, err)
				require.Empty(t, left)
				es, err := be.b.Read(ctx, "fwd", "c", 10, -1)
				require.NoError(t, err)
				if replay {
					require.Len(t, es, 7)
				} else {
					require.Empty(t, es)
				}
			})
		}
	}
}
