package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Outcomes of the audit entry and of authpipe_admin_requests_total.
const (
	OutcomeAllowed = "allowed"
	OutcomeDenied  = "denied"
)

const (
	// maxTargets bounds the ids an audit entry lists.
	maxTargets = 100
	// auditTimeout bounds one write to the audit stream.
	auditTimeout = 2 * time.Second
	// StdoutSink names standard output as the audit sink.
	StdoutSink = "stdout"
)

// AuditEntry is one admin request's audit record; see the package doc for
// the fields. Every field is always present in the JSON (null or "" when
// unknown), except targets and affected, which only dead-letter changes
// carry.
type AuditEntry struct {
	Time            time.Time  `json:"time"`
	JTI             string     `json:"jti"`
	Sub             string     `json:"sub"`
	Exp             *time.Time `json:"exp"`
	TokenThumbprint string     `json:"token_thumbprint"`
	ClaimsVerified  bool       `json:"claims_verified"`
	Auth            string     `json:"auth"`
	Method          string     `json:"method"`
	Operation       string     `json:"operation"`
	Resource        string     `json:"resource"`
	Outcome         string     `json:"outcome"`
	Reason          string     `json:"reason"`
	Status          int        `json:"status"`
	LatencySeconds  float64    `json:"latency_seconds"`
	Targets         []string   `json:"targets,omitempty"`
	Affected        *int       `json:"affected,omitempty"`
}

// auditor writes audit entries to the sink and the stream.
type auditor struct {
	log       *slog.Logger
	clock     clockwork.Clock
	errors    *prometheus.CounterVec
	mu        sync.Mutex
	sink      io.Writer // nil: none
	redis     redis.UniversalClient
	stream    string // "" or with redis nil: none
	retention time.Duration
}

// record writes e as one JSON line to the sink and as one entry to the
// stream. Failures are counted and logged (without the entry: it names
// people), never returned: the request has been answered.
func (a *auditor) record(ctx context.Context, e AuditEntry) {
	line, err := json.Marshal(e)
	if err != nil { // cannot happen: plain fields
		a.fail("sink", err)
		return
	}
	if a.sink != nil {
		a.mu.Lock()
		_, err := a.sink.Write(append(line, '\n'))
		a.mu.Unlock()
		if err != nil {
			a.fail("sink", err)
		}
	}
	if a.redis != nil && a.stream != "" {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
		defer cancel()
		if err := a.xadd(wctx, line); err != nil {
			a.fail("redis", err)
		}
	}
}

// xadd appends line to the stream with an id from the clock, trimming
// entries older than the retention in the same command (MINID, exact).
// When the clock is behind the stream's last id, Redis picks the id.
func (a *auditor) xadd(ctx context.Context, line []byte) error {
	now := a.clock.Now()
	minID := strconv.FormatInt(max(now.Add(-a.retention).UnixMilli(), 0), 10)
	args := &redis.XAddArgs{
		Stream: a.stream,
		MinID:  minID,
		ID:     strconv.FormatInt(max(now.UnixMilli(), 1), 10) + "-*",
		Values: []any{"entry", line},
	}
	err := a.redis.XAdd(ctx, args).Err()
	if err != nil && strings.Contains(err.Error(), "equal or smaller") {
		args.ID = "*"
		err = a.redis.XAdd(ctx, args).Err()
	}
	if err != nil {
		return fmt.Errorf("append audit entry to %s: %w", a.stream, err)
	}
	return nil
}

func (a *auditor) fail(sink string, err error) {
	a.errors.WithLabelValues(sink).Inc()
	a.log.Error("write admin audit entry", "sink", sink, "err", err)
}

// OpenAuditSink opens the audit sink named by spec: "stdout" (or "") for
// standard output, else a file path, created with mode 0600 if missing and
// appended to. The returned close function closes the file (a no-op for
// stdout).
func OpenAuditSink(spec string) (io.Writer, func() error, error) {
	if spec == "" || spec == StdoutSink {
		return os.Stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(spec, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open admin audit log: %w", err)
	}
	var once sync.Once
	var cerr error
	return f, func() error {
		once.Do(func() { cerr = f.Close() })
		if cerr != nil && !errors.Is(cerr, os.ErrClosed) {
			return fmt.Errorf("close admin audit log: %w", cerr)
		}
		return nil
	}, nil
}
