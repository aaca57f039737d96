package buffer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Persistence and eviction values of a Safety report. Unknown is what a
// managed Redis that refuses CONFIG (or INFO) gets: not an error, and not
// reported as safe either.
const (
	SafetyUnknown = "unknown"

	PersistenceAOF    = "aof"
	PersistenceRDB    = "rdb"
	PersistenceAOFRDB = "aof+rdb"
	PersistenceNone   = "none"
)

// Reasons of a SafetyProblem: a fixed set, fit for a metric label.
const (
	// ReasonNoPersistence: appendonly no and no RDB save points. A restart
	// of Redis comes back empty.
	ReasonNoPersistence = "no_persistence"
	// ReasonEviction: a maxmemory-policy other than noeviction. Under
	// memory pressure Redis deletes keys (the stream, the checkpoint, the
	// dedupe record) instead of refusing writes.
	ReasonEviction = "eviction_policy"
)

// SafetyReasons lists every Reason, for metrics created at zero.
var SafetyReasons = []string{ReasonNoPersistence, ReasonEviction}

// Safety is what a Redis server's settings say about how it can lose the
// buffer's data. With Cluster, it is the worst of the masters.
type Safety struct {
	Persistence    string // PersistenceAOF, …RDB, …AOFRDB, …None or SafetyUnknown
	EvictionPolicy string // maxmemory-policy, or SafetyUnknown
	Problems       []SafetyProblem
}

// SafetyProblem is one unsafe setting.
type SafetyProblem struct {
	Reason  string // ReasonNoPersistence or ReasonEviction
	Setting string // the Redis setting(s) to change
	Why     string // what it means for authpipe, for the operator
}

func (p SafetyProblem) String() string { return p.Setting + ": " + p.Why }

// InspectRedis reads INFO persistence and CONFIG GET of appendonly, save and
// maxmemory-policy on every master of client, and reports what makes the
// buffer's data losable. A server that refuses CONFIG (managed Redis often
// does) reports SafetyUnknown for what only CONFIG tells, without error;
// errors are for a Redis that cannot be reached.
func InspectRedis(ctx context.Context, client redis.UniversalClient) (Safety, error) {
	if cc, ok := client.(*redis.ClusterClient); ok {
		var (
			mu  sync.Mutex
			all []Safety
		)
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			s, err := inspectNode(ctx, node)
			if err != nil {
				return fmt.Errorf("%s: %w", node.Options().Addr, err)
			}
			mu.Lock()
			all = append(all, s)
			mu.Unlock()
			return nil
		})
		if err != nil {
			return Safety{}, fmt.Errorf("inspect redis: %w", err)
		}
		return worst(all), nil
	}
	s, err := inspectNode(ctx, client)
	if err != nil {
		return Safety{}, fmt.Errorf("inspect redis: %w", err)
	}
	return s, nil
}

func inspectNode(ctx context.Context, c redis.Cmdable) (Safety, error) {
	s := Safety{Persistence: SafetyUnknown, EvictionPolicy: SafetyUnknown}
	info, err := c.Info(ctx, "persistence").Result()
	aofFromInfo, infoOK := "", false
	switch {
	case err == nil:
		aofFromInfo, infoOK = infoField(info, "aof_enabled"), true
	case isRefused(err):
	default:
		return Safety{}, fmt.Errorf("info persistence: %w", err)
	}
	conf, err := c.ConfigGet(ctx, "*").Result()
	var confOK bool
	switch {
	case err == nil:
		confOK = true
	case isRefused(err):
	default:
		return Safety{}, fmt.Errorf("config get: %w", err)
	}

	aof := ""
	if infoOK {
		aof = map[string]string{"1": "yes", "0": "no"}[aofFromInfo]
	}
	if confOK && aof == "" {
		aof = conf["appendonly"]
	}
	save, haveSave := conf["save"]
	switch {
	case aof == "yes" && haveSave && strings.TrimSpace(save) != "":
		s.Persistence = PersistenceAOFRDB
	case aof == "yes":
		s.Persistence = PersistenceAOF
	case aof == "no" && haveSave && strings.TrimSpace(save) != "":
		s.Persistence = PersistenceRDB
	case aof == "no" && haveSave:
		s.Persistence = PersistenceNone
	}
	if p, ok := conf["maxmemory-policy"]; ok && p != "" {
		s.EvictionPolicy = p
	}
	if s.Persistence == PersistenceNone {
		s.Problems = append(s.Problems, SafetyProblem{
			Reason:  ReasonNoPersistence,
			Setting: "appendonly no and save \"\"",
			Why:     "Redis keeps the buffer in memory only: a restart loses every buffered event and the checkpoint (set appendonly yes, appendfsync everysec)",
		})
	}
	if s.EvictionPolicy != SafetyUnknown && s.EvictionPolicy != "noeviction" {
		s.Problems = append(s.Problems, SafetyProblem{
			Reason:  ReasonEviction,
			Setting: "maxmemory-policy " + s.EvictionPolicy,
			Why:     "under memory pressure Redis deletes buffer keys (events, checkpoint, dedupe record) instead of refusing writes (set maxmemory-policy noeviction)",
		})
	}
	return s, nil
}

// worst merges the reports of several masters: unknown wins over a known
// value, and every problem of every node is kept once.
func worst(all []Safety) Safety {
	if len(all) == 0 {
		return Safety{Persistence: SafetyUnknown, EvictionPolicy: SafetyUnknown}
	}
	out := Safety{Persistence: all[0].Persistence, EvictionPolicy: all[0].EvictionPolicy}
	seen := map[string]bool{}
	for _, s := range all {
		if s.Persistence != out.Persistence {
			out.Persistence = pick(out.Persistence, s.Persistence)
		}
		if s.EvictionPolicy != out.EvictionPolicy {
			out.EvictionPolicy = pick(out.EvictionPolicy, s.EvictionPolicy)
		}
		for _, p := range s.Problems {
			if !seen[p.Reason+p.Setting] {
				seen[p.Reason+p.Setting] = true
				out.Problems = append(out.Problems, p)
			}
		}
	}
	return out
}

// pick prefers the value that says less is safe: none, then unknown.
func pick(a, b string) string {
	for _, v := range []string{PersistenceNone, SafetyUnknown} {
		if a == v || b == v {
			return v
		}
	}
	return a
}

// isRefused reports whether err is the server refusing a command (renamed
// or disabled CONFIG, an ACL without it), as opposed to not answering.
func isRefused(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := strings.ToUpper(err.Error())
	return strings.HasPrefix(msg, "ERR UNKNOWN COMMAND") || strings.HasPrefix(msg, "NOPERM") ||
		strings.Contains(msg, "UNKNOWN SUBCOMMAND") || strings.Contains(msg, "NOT ALLOWED")
}

func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
