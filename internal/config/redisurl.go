package config

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis URL forms (REDIS_URL):
//
//	redis://[[user]:password@]host[:port][/db][?option=value…]     one server
//	rediss://…                                                      the same over TLS
//	redis-sentinel://[[user]:password@]host:port[,host:port…][/db]?master=NAME[&sentinel_username=…][&sentinel_password=…][&option=value…]
//	redis-cluster://[[user]:password@]host:port[,host:port…][?option=value…]
//	rediss-sentinel://…, rediss-cluster://…                        over TLS
//
// The user and password are the Redis servers' (the master's for
// Sentinel); the Sentinels' own come from sentinel_username and
// sentinel_password. A Cluster has only database 0. Options are go-redis'
// URL options (dial_timeout, read_timeout, pool_size, …).
const (
	schemeSentinel    = "redis-sentinel"
	schemeSentinelTLS = "rediss-sentinel"
	schemeCluster     = "redis-cluster"
	schemeClusterTLS  = "rediss-cluster"
)

// RedisMode says which kind of deployment a REDIS_URL names.
type RedisMode string

// The deployments REDIS_URL can name.
const (
	RedisSingle   RedisMode = "single"
	RedisSentinel RedisMode = "sentinel"
	RedisCluster  RedisMode = "cluster"
)

// redisURLError is a problem with REDIS_URL whose message never quotes the
// value (it may hold a password).
type redisURLError string

func (e redisURLError) Error() string { return string(e) }

// RedisOptions turns a REDIS_URL into go-redis universal options, for
// redis.NewUniversalClient: a plain client, a Sentinel failover client or a
// Cluster client (IsClusterMode is set for redis-cluster:// even with one
// address). ContextTimeoutEnabled is on: contexts bound blocking commands.
// Errors never quote the URL.
func RedisOptions(raw string) (*redis.UniversalOptions, RedisMode, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, "", redisURLError("must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster)")
	}
	switch scheme {
	case "redis", "rediss":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, "", redisURLError("not a valid redis:// URL")
		}
		u := universal(o)
		u.Addrs = []string{o.Addr}
		return u, RedisSingle, nil
	case schemeSentinel, schemeSentinelTLS, schemeCluster, schemeClusterTLS:
	default:
		return nil, "", redisURLError("must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster)")
	}
	mode, base := RedisSentinel, "redis"
	if strings.HasSuffix(scheme, "-cluster") {
		mode = RedisCluster
	}
	if strings.HasPrefix(scheme, "rediss") {
		base = "rediss"
	}

	// authority = [userinfo@]host:port,host:port; the rest starts at / or ?.
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	if strings.Contains(tail, "@") {
		return nil, "", redisURLError("contains an @ after the host; percent-encode special characters in the password")
	}
	if hosts == "" {
		return nil, "", redisURLError("missing host")
	}
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, "", redisURLError("hosts must be host:port, separated by commas")
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, "", redisURLError("hosts must be host:port, separated by commas")
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}

	// Take out the options go-redis' single-server parser does not know,
	// and let it parse the rest (credentials, database, options).
	pathPart, query := tail, ""
	if i := strings.IndexByte(tail, '?'); i >= 0 {
		pathPart, query = tail[:i], tail[i+1:]
	}
	if strings.Contains(pathPart, "#") || strings.Contains(query, "#") {
		return nil, "", redisURLError("must not have a fragment (#); percent-encode special characters in the password")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, "", redisURLError("has a query that is not valid")
	}
	master := q.Get("master")
	sentinelUser, sentinelPassword := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("master")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	if mode == RedisCluster && (master != "" || sentinelUser != "" || sentinelPassword != "") {
		return nil, "", redisURLError("master, sentinel_username and sentinel_password are options of redis-sentinel://, not redis-cluster://")
	}
	if mode == RedisSentinel && master == "" {
		return nil, "", redisURLError("needs ?master=NAME, the name of the master the Sentinels watch")
	}
	single := base + "://" + userinfo + addrs[0] + pathPart
	if len(q) > 0 {
		single += "?" + q.Encode()
	}
	if _, err := url.Parse(single); err != nil {
		return nil, "", redisURLError("not a valid URL; percent-encode special characters in the password")
	}
	o, err := redis.ParseURL(single)
	if err != nil {
		bare := base + "://" + addrs[0] + pathPart
		if _, err := redis.ParseURL(bare); err != nil {
			return nil, "", redisURLError("path must be empty or a database number like /0")
		}
		return nil, "", redisURLError("has a query option go-redis does not accept")
	}
	if mode == RedisCluster && o.DB != 0 {
		return nil, "", redisURLError("a Redis Cluster has only database 0: leave the path empty")
	}
	u := universal(o)
	u.Addrs = addrs
	if u.TLSConfig != nil && len(addrs) > 1 {
		// Verify each server against the name it is dialled by.
		u.TLSConfig.ServerName = ""
	}
	switch mode {
	case RedisSentinel:
		u.MasterName = master
		u.SentinelUsername, u.SentinelPassword = sentinelUser, sentinelPassword
	case RedisCluster:
		u.IsClusterMode = true
	}
	return u, mode, nil
}

// universal copies what go-redis' URL parser sets into universal options.
func universal(o *redis.Options) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		ClientName:              o.ClientName,
		DB:                      o.DB,
		Protocol:                o.Protocol,
		Username:                o.Username,
		Password:                o.Password,
		MaxRetries:              o.MaxRetries,
		MinRetryBackoff:         o.MinRetryBackoff,
		MaxRetryBackoff:         o.MaxRetryBackoff,
		DialTimeout:             o.DialTimeout,
		ReadTimeout:             o.ReadTimeout,
		WriteTimeout:            o.WriteTimeout,
		ContextTimeoutEnabled:   true,
		PoolFIFO:                o.PoolFIFO,
		PoolSize:                o.PoolSize,
		PoolTimeout:             o.PoolTimeout,
		MinIdleConns:            o.MinIdleConns,
		MaxIdleConns:            o.MaxIdleConns,
		MaxActiveConns:          o.MaxActiveConns,
		MaxConcurrentDials:      o.MaxConcurrentDials,
		PipelinePoolSize:        o.PipelinePoolSize,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,
		ConnMaxIdleTime:         o.ConnMaxIdleTime,
		ConnMaxLifetime:         o.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   o.ConnMaxLifetimeJitter,
		TLSConfig:               o.TLSConfig,
	}
}

// checkMultiRedisURL checks a Sentinel or Cluster REDIS_URL.
func checkMultiRedisURL(v string) string {
	const hint = " (e.g. redis-cluster://:PASSWORD@redis-0:6379,redis-1:6379 or " +
		"redis-sentinel://:PASSWORD@sentinel-0:26379,sentinel-1:26379/0?master=mymaster; the value is not shown: it may contain a password)"
	_, _, err := RedisOptions(v)
	var uerr redisURLError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &uerr):
		return uerr.Error() + hint
	default:
		return "not valid" + hint
	}
}

// isMultiRedisURL reports whether v names Sentinel or Cluster.
func isMultiRedisURL(v string) bool {
	scheme, _, _ := strings.Cut(v, "://")
	switch scheme {
	case schemeSentinel, schemeSentinelTLS, schemeCluster, schemeClusterTLS:
		return true
	}
	return false
}
