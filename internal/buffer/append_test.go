package buffer

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/metrics"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero values mean defaults", Config{Tenant: "acme"}, ""},
		{"full", Config{Tenant: "acme-eu_1", Retention: 24 * time.Hour, MaxDeliveries: 3, MaxEvents: 1000}, ""},
		{"empty tenant", Config{}, `buffer tenant ""`},
		{"tenant with braces", Config{Tenant: "a}b"}, `buffer tenant "a}b"`},
		{"tenant too long", Config{Tenant: strings.Repeat("a", 33)}, "1 to 32 of a-z"},
		{"tenant in upper case", Config{Tenant: "Acme"}, `buffer tenant "Acme": must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`},
		{"negative retention", Config{Tenant: "a", Retention: -time.Hour}, "buffer retention -1h0m0s"},
		{"retention in wrong unit", Config{Tenant: "a", Retention: 144}, "want at least 1m0s"},
		{"negative deliveries", Config{Tenant: "a", MaxDeliveries: -1}, "buffer max deliveries -1"},
		{"negative max events", Config{Tenant: "a", MaxEvents: -5}, "buffer max events -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestNewRedisDefaults(t *testing.T) {
	f := newFixture(t, Config{})
	require.Equal(t, DefaultRetention, f.b.Config().Retention)
	require.Equal(t, DefaultMaxDeliveries, f.b.Config().MaxDeliveries)
	require.Equal(t, "authpipe:{"+f.b.Config().Tenant+"}:stream", f.b.StreamKey())
	require.Equal(t, "authpipe:{"+f.b.Config().Tenant+"}:dlq", f.b.Key("dlq"))
	require.NoError(t, f.b.Ping(f.ctx))

	_, err := NewRedis(nil, Config{Tenant: "a"}, Deps{})
	require.Error(t, err)
	_, err = NewRedis(f.rdb, Config{Tenant: "a b"}, Deps{})
	require.ErrorContains(t, err, "buffer tenant")
	// The same tenant twice on one registry is an error, not a panic; two
	// tenants share a registry.
	_, err = NewRedis(f.rdb, f.b.Config(), Deps{Registerer: metrics.Tenant(f.reg, f.b.Config().Tenant)})
	require.Error(t, err)
	other := metrics.Tenant(f.reg, f.b.Config().Tenant+"x")
	_, err = NewRedis(f.rdb, Config{Tenant: f.b.Config().Tenant + "x"}, Deps{Registerer: other, Stages: metrics.NewStages(other)})
	require.NoError(t, err)
}

// TestAppendAtomic shows that a page that fails anywhere leaves nothing
// behind: no stream entry, no seen id, no checkpoint change. Pages refused
// in Go are checked on both backends by the conformance suite; these are the
// failures inside the append script.
func TestAppendAtomic(t *testing.T) {
	good := page(base, 0, 4)
	tests := []struct {
		name    string
		prepare func(t *testing.T, f *fixture)
		run     func(f *fixture) error
		wantErr string
	}{
		{
			name: "checkpoint key of the wrong type",
			prepare: func(t *testing.T, f *fixture) {
				require.NoError(t, f.rdb.RPush(f.ctx, f.b.Key("checkpoint"), "x").Err())
			},
			run:     func(f *fixture) error { _, err := f.b.Append(f.ctx, good, good[3].ID); return err },
			wantErr: "WRONGTYPE checkpoint",
		},
		{
			name: "seen key of the wrong type",
			prepare: func(t *testing.T, f *fixture) {
				require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("seen"), "x", 0).Err())
			},
			run:     func(f *fixture) error { _, err := f.b.Append(f.ctx, good, good[3].ID); return err },
			wantErr: "WRONGTYPE seen",
		},
		{
			name: "stored checkpoint corrupt",
			prepare: func(t *testing.T, f *fixture) {
				require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("checkpoint"), "garbage", 0).Err())
			},
			run:     func(f *fixture) error { _, err := f.b.Append(f.ctx, good, good[3].ID); return err },
			wantErr: "stored checkpoint is not a log_id",
		},
		{
			name: "invalid log id mid-page (checked by the script itself)",
			run: func(f *fixture) error {
				args := []any{"", good[3].ID, 3600, 3600, 4}
				for i, l := range good {
					id := l.ID
					if i == 2 {
						id = "123"
					}
					args = append(args, id, string(l.Raw), l.Pack())
				}
				return appendScript.Run(f.ctx, f.rdb, f.appendKeys(good), args...).Err()
			},
			wantErr: "log 2: log_id is not valid",
		},
		{
			name: "argument count mismatch (checked by the script)",
			run: func(f *fixture) error {
				return appendScript.Run(f.ctx, f.rdb, f.appendKeys(good),
					"", good[0].ID, 3600, 3600, 2, good[0].ID, string(good[0].Raw), "").Err()
			},
			wantErr: "do not match",
		},
		{
			name: "dedupe bucket not declared (checked by the script)",
			run: func(f *fixture) error {
				keys := f.appendKeys(good)
				return appendScript.Run(f.ctx, f.rdb, keys[:len(keys)-1],
					"", good[0].ID, 3600, 3600, 1, good[0].ID, string(good[0].Raw), "").Err()
			},
			wantErr: "log 0: its dedupe bucket key is not declared",
		},
		{
			name: "dedupe bucket of the wrong type",
			prepare: func(t *testing.T, f *fixture) {
				require.NoError(t, f.rdb.Set(f.ctx, f.b.bucketKey(base.UTC().Format(hourLayout)), "x", 0).Err())
			},
			run:     func(f *fixture) error { _, err := f.b.Append(f.ctx, good, good[3].ID); return err },
			wantErr: "does not hold a set",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			// A page already stored: it must be unchanged afterwards.
			earlier := page(base.Add(-time.Minute), 0, 2)
			if tt.prepare == nil {
				f.appendAll(t, earlier)
			}
			cpBefore, _ := f.rdb.Get(f.ctx, f.b.Key("checkpoint")).Result()
			seenBefore, _ := f.b.dedupeEntries(f.ctx)
			lenBefore, _ := f.rdb.XLen(f.ctx, f.b.StreamKey()).Result()
			if tt.prepare != nil {
				tt.prepare(t, f)
			}

			err := tt.run(f)
			require.ErrorContains(t, err, tt.wantErr)

			n, err := f.rdb.XLen(f.ctx, f.b.StreamKey()).Result()
			require.NoError(t, err)
			require.Equal(t, lenBefore, n, "stream entries written")
			if tt.prepare == nil {
				seen, err := f.b.dedupeEntries(f.ctx)
				require.NoError(t, err)
				require.Equal(t, seenBefore, seen, "seen ids written")
				cp, err := f.b.Checkpoint(f.ctx)
				require.NoError(t, err)
				require.Equal(t, cpBefore, cp)
			}
			if tt.prepare == nil {
				seen, err := f.b.Seen(f.ctx, logIDs(good))
				require.NoError(t, err)
				require.Equal(t, []bool{false, false, false, false}, seen, "logs marked seen")
			}
		})
	}
}

func isWrongType(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE") }
