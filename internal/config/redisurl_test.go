package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRedisOptions(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		mode  RedisMode
		check func(t *testing.T, o *universalView)
	}{
		{"single", "redis://:S3cr3t@redis:6379/2?dial_timeout=3s", RedisSingle, func(t *testing.T, o *universalView) {
			require.Equal(t, []string{"redis:6379"}, o.Addrs)
			require.Equal(t, 2, o.DB)
			require.Equal(t, "S3cr3t", o.Password)
			require.Equal(t, 3*time.Second, o.DialTimeout)
			require.False(t, o.TLS)
		}},
		{"single TLS, default port", "rediss://redis.example.com", RedisSingle, func(t *testing.T, o *universalView) {
			require.Equal(t, []string{"redis.example.com:6379"}, o.Addrs)
			require.True(t, o.TLS)
			require.Equal(t, "redis.example.com", o.ServerName)
		}},
		{"sentinel", "redis-sentinel://user:p%40ss@s1:26379,s2:26380,[::1]:26381/1?master=mymaster&sentinel_password=S3cr3t-s&read_timeout=2s",
			RedisSentinel, func(t *testing.T, o *universalView) {
				require.Equal(t, []string{"s1:26379", "s2:26380", "[::1]:26381"}, o.Addrs)
				require.Equal(t, "mymaster", o.MasterName)
				require.Equal(t, 1, o.DB)
				require.Equal(t, "user", o.Username)
				require.Equal(t, "p@ss", o.Password)
				require.Equal(t, "S3cr3t-s", o.SentinelPassword)
				require.Equal(t, 2*time.Second, o.ReadTimeout)
				require.False(t, o.Cluster)
			}},
		{"cluster", "redis-cluster://:S3cr3t@n1:7000,n2:7001,n3:7002?pool_size=20", RedisCluster, func(t *testing.T, o *universalView) {
			require.Equal(t, []string{"n1:7000", "n2:7001", "n3:7002"}, o.Addrs)
			require.True(t, o.Cluster)
			require.Equal(t, 20, o.PoolSize)
			require.Equal(t, "S3cr3t", o.Password)
		}},
		{"cluster of one seed, TLS", "rediss-cluster://cfg.example.com:6379", RedisCluster, func(t *testing.T, o *universalView) {
			require.Equal(t, []string{"cfg.example.com:6379"}, o.Addrs)
			require.True(t, o.Cluster, "one address is still a cluster")
			require.True(t, o.TLS)
		}},
		{"cluster TLS, several hosts verify each by its own name", "rediss-cluster://a:1,b:2", RedisCluster, func(t *testing.T, o *universalView) {
			require.True(t, o.TLS)
			require.Empty(t, o.ServerName)
		}},
		{"sentinel TLS, one Sentinel: the master is verified by its own name", "rediss-sentinel://s1:26379?master=m", RedisSentinel, func(t *testing.T, o *universalView) {
			require.True(t, o.TLS)
			require.Empty(t, o.ServerName)
		}},
		{"sentinel credentials and a Sentinel-only option", "redis-sentinel://:m%2Fpw@s1:26379?master=m&sentinel_username=su&sentinel_password=s%26pw&dialer_retries=3",
			RedisSentinel, func(t *testing.T, o *universalView) {
				require.Equal(t, []string{"s1:26379"}, o.Addrs)
				require.Empty(t, o.Username)
				require.Equal(t, "m/pw", o.Password)
				require.Equal(t, "su", o.SentinelUsername)
				require.Equal(t, "s&pw", o.SentinelPassword)
				require.Equal(t, 3, o.DialerRetries)
				require.Zero(t, o.DB)
			}},
		{"cluster-only option, database 0 spelt out, addr option", "redis-cluster://u:pw@n1:7000/0?max_redirects=5&addr=n9:7009", RedisCluster, func(t *testing.T, o *universalView) {
			require.Equal(t, []string{"n1:7000", "n9:7009"}, o.Addrs)
			require.Equal(t, 5, o.MaxRedirects)
			require.Equal(t, "u", o.Username)
			require.Equal(t, "pw", o.Password)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, mode, err := RedisOptions(tt.url)
			require.NoError(t, err)
			require.Equal(t, tt.mode, mode)
			require.True(t, o.ContextTimeoutEnabled)
			v := &universalView{
				Addrs: o.Addrs, DB: o.DB, Username: o.Username, Password: o.Password,
				SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword, MasterName: o.MasterName, Cluster: o.IsClusterMode,
				DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, PoolSize: o.PoolSize, TLS: o.TLSConfig != nil,
				DialerRetries: o.DialerRetries, MaxRedirects: o.MaxRedirects,
			}
			if o.TLSConfig != nil {
				v.ServerName = o.TLSConfig.ServerName
			}
			tt.check(t, v)
			require.Empty(t, checkRedisURL(tt.url), "the setting accepts what RedisOptions accepts")
		})
	}
}

type universalView struct {
	Addrs                                 []string
	DB                                    int
	Username, Password                    string
	SentinelUsername, SentinelPassword    string
	MasterName, ServerName                string
	Cluster, TLS                          bool
	DialTimeout, ReadTimeout              time.Duration
	PoolSize, DialerRetries, MaxRedirects int
}

func TestLoadRedisURLSentinelClusterErrors(t *testing.T) {
	const hint = " (e.g. redis-cluster://:PASSWORD@redis-0:6379,redis-1:6379 or " +
		"redis-sentinel://:PASSWORD@sentinel-0:26379,sentinel-1:26379/0?master=mymaster; the value is not shown: it may contain a password)"
	tests := []struct{ name, url, want string }{
		{"sentinel without master", "redis-sentinel://:S3cr3t@s1:26379,s2:26379/0", "needs ?master=NAME, the name of the master the Sentinels watch"},
		{"cluster with a database", "redis-cluster://:S3cr3t@n1:7000/3", "a Redis Cluster has only database 0: leave the path empty"},
		{"cluster with sentinel options", "redis-cluster://n1:7000?master=x", "master, sentinel_username and sentinel_password are options of redis-sentinel://, not redis-cluster://"},
		{"host without port", "redis-cluster://:S3cr3t@n1,n2:7000", "hosts must be host:port, separated by commas"},
		{"empty host in the list", "redis-cluster://n1:7000,,n2:7000", "hosts must be host:port, separated by commas"},
		{"bad port", "redis-sentinel://s1:2637x?master=m", "hosts must be host:port, separated by commas"},
		{"no host", "redis-cluster://:S3cr3t@", "missing host"},
		{"unencoded / in password", "redis-cluster://u:a/S3cr3t@n1:7000", "contains an @ after the host; percent-encode special characters in the password"},
		{"unknown option", "redis-cluster://n1:7000?S3cr3t=1", "has a query option go-redis does not accept"},
		{"bad option value", "redis-sentinel://s:1?master=m&dial_timeout=S3cr3t", "has a query option go-redis does not accept"},
		{"database not a number", "redis-sentinel://:S3cr3t@s:1/S3cr3t?master=m", "path must be empty or a database number like /0"},
		{"bad user info", "redis-cluster://:S3cr3t pw@n1:7000", "not a valid URL; percent-encode special characters in the password"},
		{"reads from replicas", "redis-cluster://:S3cr3t@n1:7000?read_only=true", "reads from replicas (read_only) are not supported: the buffer must read the master"},
		{"sentinel reads from replicas", "redis-sentinel://:S3cr3t@s:1?master=m&replica_only=true", "reads from replicas (replica_only) are not supported: the buffer must read the master"},
		{"bad addr option", "redis-cluster://:S3cr3t@n1:7000?addr=S3cr3t", "has a query option go-redis does not accept"},
		{"fragment", "redis-sentinel://s:1?master=m#S3cr3t", "must not have a fragment (#); percent-encode special characters in the password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireLoadError(t, with(validEnv(), "REDIS_URL", tt.url), "config: REDIS_URL: "+tt.want+hint)
		})
	}
}

// BenchmarkRedisOptions parses each REDIS_URL form (done once at start; the
// figure is for comparing parsers, not a hot path).
func BenchmarkRedisOptions(b *testing.B) {
	for _, bc := range []struct{ name, url string }{
		{"single", "redis://:S3cr3t@redis:6379/2?dial_timeout=3s"},
		{"sentinel", "redis-sentinel://user:p%40ss@s1:26379,s2:26380,s3:26381/1?master=mymaster&sentinel_password=S3cr3t-s"},
		{"cluster", "redis-cluster://:S3cr3t@n1:7000,n2:7001,n3:7002?pool_size=20"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := RedisOptions(bc.url); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
