package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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
	msg := strings.ToUpper(rerr.Error()) // the server's own words, however wrapped
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

// SafetyWatch checks a Redis' settings (InspectRedis) over time and says
// so: authpipe_buffer_unsafe_config{reason} is 1 while a setting makes the
// buffer losable, authpipe_buffer_redis_config_info names the persistence
// and eviction policy found ("unknown" where Redis refused to tell), and
// each unsafe setting is logged at error when it is first found (at info
// when it is gone). It also reports Redis' memory at each scrape
// (authpipe_buffer_redis_memory_bytes, see memoryCollector). It is safe
// for concurrent use.
type SafetyWatch struct {
	client redis.UniversalClient
	log    *slog.Logger
	unsafe *prometheus.GaugeVec
	info   *prometheus.GaugeVec

	mu       sync.Mutex
	reported map[string]bool // reasons logged as present
	checked  bool
}

// NewSafetyWatch registers the metrics on reg (series at 0) and checks
// nothing yet.
func NewSafetyWatch(client redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer) *SafetyWatch {
	f := promauto.With(reg)
	w := &SafetyWatch{
		client: client,
		log:    log.With("component", "buffer"),
		unsafe: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authpipe_buffer_unsafe_config",
			Help: "1 while a Redis setting can lose the buffer's data: reason no_persistence (appendonly no and no RDB save points) or eviction_policy (maxmemory-policy other than noeviction).",
		}, []string{"reason"}),
		info: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authpipe_buffer_redis_config_info",
			Help: "Redis' persistence (aof, rdb, aof+rdb, none) and maxmemory-policy as last read; unknown where Redis refused CONFIG or INFO. The value is always 1.",
		}, []string{"persistence", "eviction_policy"}),
		reported: map[string]bool{},
	}
	for _, r := range SafetyReasons {
		w.unsafe.WithLabelValues(r)
	}
	reg.MustRegister(newMemoryCollector(client, w.log))
	return w
}

// Check reads the settings and updates the metrics and logs. An error means
// Redis could not be reached; the metrics keep their last values.
func (w *SafetyWatch) Check(ctx context.Context) (Safety, error) {
	s, err := InspectRedis(ctx, w.client)
	if err != nil {
		return Safety{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	first := !w.checked
	w.checked = true
	present := map[string]bool{}
	for _, p := range s.Problems {
		present[p.Reason] = true
		if !w.reported[p.Reason] {
			w.log.Error("unsafe Redis setting: the buffer can lose data", "setting", p.Setting, "why", p.Why, "reason", p.Reason)
		}
	}
	for _, r := range SafetyReasons {
		v := 0.0
		if present[r] {
			v = 1
		} else if w.reported[r] {
			w.log.Info("Redis setting no longer unsafe", "reason", r,
				"persistence", s.Persistence, "eviction_policy", s.EvictionPolicy)
		}
		w.unsafe.WithLabelValues(r).Set(v)
	}
	w.reported = present
	w.info.Reset()
	w.info.WithLabelValues(s.Persistence, s.EvictionPolicy).Set(1)
	if first {
		switch {
		case s.Persistence == SafetyUnknown || s.EvictionPolicy == SafetyUnknown:
			w.log.Warn("Redis refused to show some of its settings (managed Redis?): persistence and eviction reported as unknown; make sure of them with your provider",
				"persistence", s.Persistence, "eviction_policy", s.EvictionPolicy)
		case len(s.Problems) == 0:
			w.log.Info("Redis persistence and eviction settings keep the buffer",
				"persistence", s.Persistence, "eviction_policy", s.EvictionPolicy)
		}
	}
	return s, nil
}

// Checked reports whether a Check has succeeded yet.
func (w *SafetyWatch) Checked() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.checked
}
