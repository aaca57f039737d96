package buffer

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/testredis"
)

func TestInspectRedis(t *testing.T) {
	cases := []struct {
		name        string
		args        []string
		persistence string
		eviction    string
		reasons     []string
	}{
		{"aof, noeviction", nil, PersistenceAOF, "noeviction", nil},
		{"aof and rdb", []string{"--save", "3600 1"}, PersistenceAOFRDB, "noeviction", nil},
		{"rdb only", []string{"--appendonly", "no", "--save", "3600 1"}, PersistenceRDB, "noeviction", nil},
		{"no persistence", []string{"--appendonly", "no", "--save", ""}, PersistenceNone, "noeviction", []string{ReasonNoPersistence}},
		{"eviction", []string{"--maxmemory-policy", "allkeys-lru"}, PersistenceAOF, "allkeys-lru", []string{ReasonEviction}},
		{"both", []string{"--appendonly", "no", "--save", "", "--maxmemory-policy", "volatile-ttl"}, PersistenceNone, "volatile-ttl", []string{ReasonNoPersistence, ReasonEviction}},
		// Managed Redis: CONFIG refused. INFO alone proves AOF; without AOF
		// (RDB may be on) and for eviction it is unknown, not an error.
		{"config refused, aof", []string{"--rename-command", "CONFIG", ""}, PersistenceAOF, SafetyUnknown, nil},
		{"config refused, no aof", []string{"--appendonly", "no", "--rename-command", "CONFIG", ""}, SafetyUnknown, SafetyUnknown, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := testredis.StartWith(t, c.args...)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
			defer rdb.Close()
			s, err := InspectRedis(t.Context(), rdb)
			require.NoError(t, err)
			require.Equal(t, c.persistence, s.Persistence)
			require.Equal(t, c.eviction, s.EvictionPolicy)
			var reasons []string
			for _, p := range s.Problems {
				reasons = append(reasons, p.Reason)
				require.NotEmpty(t, p.Setting)
				require.NotEmpty(t, p.Why)
			}
			require.Equal(t, c.reasons, reasons)
		})
	}
}

func TestInspectRedisUnreachable(t *testing.T) {
	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer rdb.Close()
	srv.Kill()
	_, err := InspectRedis(t.Context(), rdb)
	require.Error(t, err)
}

func TestInspectRedisCluster(t *testing.T) {
	c := testredis.StartCluster(t)
	s, err := InspectRedis(t.Context(), c.Client(t))
	require.NoError(t, err)
	require.Equal(t, PersistenceAOF, s.Persistence)
	require.Empty(t, s.Problems)
}
