package config

import (
	"cmp"
	"net"
	"net/url"
	"reflect"
	"slices"
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
// address). go-redis' own parsers read it (ParseURL, ParseFailoverURL,
// ParseClusterURL); the Sentinel and Cluster forms are mapped to theirs,
// which take one host in the URL, the others as addr= options and, for
// Sentinel, the master's credentials and name as options.
// ContextTimeoutEnabled is on: contexts bound blocking commands. Errors
// never quote the URL.
func RedisOptions(raw string) (*redis.UniversalOptions, RedisMode, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	mode, base := RedisSentinel, "redis"
	switch scheme {
	case "redis", "rediss":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, "", redisURLError("not a valid redis:// URL")
		}
		u := universal(o)
		u.Addrs = []string{o.Addr}
		return u, RedisSingle, nil
	case schemeSentinelTLS:
		base = "rediss"
	case schemeClusterTLS:
		mode, base = RedisCluster, "rediss"
	case schemeCluster:
		mode = RedisCluster
	case schemeSentinel:
	default:
		return nil, "", redisURLError("must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster)")
	}

	// The host list, checked here: net/url takes only one host and would
	// quote the port in its error.
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
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil || host == "" {
			return nil, "", redisURLError("hosts must be host:port, separated by commas")
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	u, err := url.Parse(base + "://" + userinfo + addrs[0] + tail)
	if err != nil {
		return nil, "", redisURLError("not a valid URL; percent-encode special characters in the password")
	}
	if u.Fragment != "" {
		return nil, "", redisURLError("must not have a fragment (#); percent-encode special characters in the password")
	}
	db, err := strconv.Atoi(cmp.Or(strings.Trim(u.Path, "/"), "0"))
	switch {
	case err != nil:
		return nil, "", redisURLError("path must be empty or a database number like /0")
	case mode == RedisCluster && db != 0:
		return nil, "", redisURLError("a Redis Cluster has only database 0: leave the path empty")
	}
	q := u.Query()
	// The buffer reads its own writes (checkpoint, pending entries): reads
	// from replicas, which go-redis' Sentinel and Cluster options offer,
	// would see them late.
	for _, k := range []string{"read_only", "replica_only", "use_disconnected_replicas",
		"route_by_latency", "route_by_latency_tolerance", "route_randomly"} {
		if q.Has(k) {
			return nil, "", redisURLError("reads from replicas (" + k + ") are not supported: the buffer must read the master")
		}
	}
	q["addr"] = slices.Concat(addrs[1:], q["addr"])
	master := q.Get("master")
	var parsed any
	if mode == RedisCluster {
		if master != "" || q.Has("sentinel_username") || q.Has("sentinel_password") {
			return nil, "", redisURLError("master, sentinel_username and sentinel_password are options of redis-sentinel://, not redis-cluster://")
		}
		u.RawQuery = q.Encode()
		parsed, err = redis.ParseClusterURL(u.String())
	} else {
		if master == "" {
			return nil, "", redisURLError("needs ?master=NAME, the name of the master the Sentinels watch")
		}
		// go-redis reads the Sentinels' credentials from the user info
		// and the master's from options: REDIS_URL has them the other way.
		q.Set("master_name", master)
		if name := u.User.Username(); name != "" {
			q.Set("username", name)
		}
		if pw, ok := u.User.Password(); ok {
			q.Set("password", pw)
		}
		u.User = url.UserPassword(q.Get("sentinel_username"), q.Get("sentinel_password"))
		for _, k := range []string{"master", "sentinel_username", "sentinel_password"} {
			q.Del(k)
		}
		u.RawQuery = q.Encode()
		parsed, err = redis.ParseFailoverURL(u.String())
	}
	if err != nil {
		return nil, "", redisURLError("has a query option go-redis does not accept")
	}
	o := universal(parsed)
	if fo, ok := parsed.(*redis.FailoverOptions); ok {
		o.Addrs = fo.SentinelAddrs
	} else {
		o.IsClusterMode = true
	}
	if o.TLSConfig != nil {
		// Verify each server (other nodes, the master) by the name it is
		// dialled by, not the first host's.
		o.TLSConfig.ServerName = ""
	}
	return o, mode, nil
}

// universal copies what one of go-redis' URL parsers set (*redis.Options,
// *redis.FailoverOptions or *redis.ClusterOptions) into universal options:
// every field of the same name and type, which is every URL option but the
// addresses (the parsers and UniversalOptions share their field names, so
// options go-redis adds are carried too).
func universal(parsed any) *redis.UniversalOptions {
	u := &redis.UniversalOptions{}
	dst, src := reflect.ValueOf(u).Elem(), reflect.ValueOf(parsed).Elem()
	for i := range src.NumField() {
		f := src.Type().Field(i)
		if d := dst.FieldByName(f.Name); f.IsExported() && d.IsValid() && d.Type() == f.Type {
			d.Set(src.Field(i))
		}
	}
	u.ContextTimeoutEnabled = true
	return u
}

// checkMultiRedisURL checks a Sentinel or Cluster REDIS_URL.
func checkMultiRedisURL(v string) string {
	const hint = " (e.g. redis-cluster://:PASSWORD@redis-0:6379,redis-1:6379 or " +
		"redis-sentinel://:PASSWORD@sentinel-0:26379,sentinel-1:26379/0?master=mymaster; the value is not shown: it may contain a password)"
	if _, _, err := RedisOptions(v); err != nil {
		return err.Error() + hint // a redisURLError: never quotes v
	}
	return ""
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
