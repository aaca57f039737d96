package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/pipeline"
)

const checkUsage = `Usage: authpipe check [--timeout D]

Checks a configuration (the environment and AUTHPIPE_CONFIG, as authpipe run
reads them) against the live services before a deploy, and prints one line
per check: ok, WARN or FAIL, its name, and what was found (never a secret).

  config               the settings parse and validate
  rules                the threshold rules load (AUTHPIPE_RULES, else
                       alerts/thresholds.yml, else the shipped rules built in)
  auth0 token          Auth0 issues a Management API token for the client
  auth0 read:logs      the token grants read:logs, and GET /api/v2/logs?take=1
                       answers 200 (one request of the logs rate limit)
  segment write key    SEGMENT_WRITE_KEY looks like a write key
  segment endpoint     SEGMENT_ENDPOINT answers an empty batch (no event sent)
  redis                REDIS_URL answers PING (or: the embedded buffer's dir)
  redis persistence    appendonly or RDB snapshots are on
  redis eviction       maxmemory-policy is noeviction
  alertmanager         ALERTMANAGER_URL answers GET /-/ready (when set)

With several tenants the Auth0 and Segment checks run per tenant. Exit
status: 0 when nothing failed (warnings allowed), 1 when a check failed,
2 on a usage error.
`

// Check states, as printed.
const (
	checkOK   = "ok"
	checkWarn = "WARN"
	checkFail = "FAIL"
	checkSkip = "skip"
)

// checker runs the checks and prints their lines.
type checker struct {
	out     io.Writer
	timeout time.Duration
	counts  map[string]int // by state
}

func (c *checker) report(state, name, format string, args ...any) {
	c.counts[state]++
	detail := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "; ")
	fmt.Fprintf(c.out, "%-4s  %-20s  %s\n", state, name, detail)
}

func (c *checker) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// checkCommand runs `authpipe check`.
func checkCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("authpipe check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 10*time.Second, "give up on each check after this long")
	fs.Usage = func() { printUsage(stderr, checkUsage, fs) }
	if code, done := parseFlags(fs, checkUsage, args, stdout); done {
		return code
	}
	if fs.NArg() > 0 || *timeout <= 0 {
		fs.Usage()
		return 2
	}
	c := &checker{out: stdout, timeout: *timeout, counts: map[string]int{}}
	c.run()
	total := c.counts[checkOK] + c.counts[checkWarn] + c.counts[checkFail]
	if n := c.counts[checkFail]; n > 0 {
		fmt.Fprintf(stdout, "FAILED: %d of %d checks failed, %d warnings\n", n, total, c.counts[checkWarn])
		return 1
	}
	fmt.Fprintf(stdout, "SUCCESS: %d checks passed, %d warnings\n", total, c.counts[checkWarn])
	return 0
}

func (c *checker) run() {
	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		c.report(checkFail, "config", "%v", err)
		return
	}
	source := "the environment"
	if cfg.File != "" {
		source = "the environment and " + cfg.File
	}
	tenants := cfg.AllTenants()
	c.report(checkOK, "config", "%d tenant(s) from %s", len(tenants), source)
	c.checkRules(cfg)
	for _, tenant := range tenants {
		tc := cfg.ForTenant(tenant)
		suffix := ""
		if len(tenants) > 1 {
			suffix = " (" + tenant.Name + ")"
		}
		c.checkAuth0(tc, suffix)
		c.checkSegment(tc, suffix)
	}
	c.checkBuffer(cfg)
	c.checkAlertmanager(cfg)
}

func (c *checker) checkRules(cfg *config.Config) {
	src, err := pipeline.ResolveRules(cfg.RulesPath)
	if err != nil {
		c.report(checkFail, "rules", "%v", err)
		return
	}
	rs, err := src.Load()
	if err != nil {
		c.report(checkFail, "rules", "%s", strings.TrimRight(err.Error(), "\n"))
		return
	}
	if src.BuiltIn() {
		c.report(checkOK, "rules", "%d shipped rules built into the binary (AUTHPIPE_RULES unset, %s absent)", len(rs.Rules), pipeline.DefaultRulesPath)
		return
	}
	c.report(checkOK, "rules", "%d rules from %s", len(rs.Rules), src.Path)
}

func (c *checker) checkAuth0(cfg *config.Config, suffix string) {
	ctx, cancel := c.ctx()
	defer cancel()
	pc := pipeline.PollerConfig(cfg)
	pc.RequestTimeout = min(pc.RequestTimeout, c.timeout)
	a := auth0poll.CheckAccess(ctx, pc)
	if a.TokenErr != nil {
		c.report(checkFail, "auth0 token"+suffix, "%s: %v (check AUTH0_DOMAIN, AUTH0_CLIENT_ID and AUTH0_CLIENT_SECRET)", cfg.Auth0.Domain, a.TokenErr)
		c.report(checkSkip, "auth0 read:logs"+suffix, "no token")
		return
	}
	c.report(checkOK, "auth0 token"+suffix, "%s issued a Management API token to client %s", cfg.Auth0.Domain, cfg.Auth0.ClientID)
	granted := strings.Join(a.Scopes, " ")
	switch {
	case a.LogsErr != nil && a.LogsStatus == http.StatusTooManyRequests:
		c.report(checkWarn, "auth0 read:logs"+suffix, "rate limited, so not proven: %v (scopes granted: %s)", a.LogsErr, granted)
	case a.LogsErr != nil:
		hint := ""
		if a.ScopesKnown && !a.HasReadLogs() {
			hint = fmt.Sprintf(" (scopes granted: %q; grant read:logs to the client in Auth0's dashboard: APIs → Auth0 Management API → Machine to Machine Applications)", granted)
		}
		c.report(checkFail, "auth0 read:logs"+suffix, "%v%s", a.LogsErr, hint)
	case a.ScopesKnown && !a.HasReadLogs():
		c.report(checkWarn, "auth0 read:logs"+suffix, "GET /api/v2/logs answered 200, but the token's scopes are %q, without read:logs", granted)
	case !a.ScopesKnown:
		c.report(checkOK, "auth0 read:logs"+suffix, "GET /api/v2/logs?take=1 answered 200 (the token response named no scopes)")
	default:
		c.report(checkOK, "auth0 read:logs"+suffix, "granted (scopes: %s); GET /api/v2/logs?take=1 answered 200", granted)
	}
}

// checkSegment checks the write key's form and that the endpoint answers an
// empty batch: it carries no event, so nothing reaches the workspace.
// Segment's edge accepts any key, so only a missing or malformed key shows.
func (c *checker) checkSegment(cfg *config.Config, suffix string) {
	key := cfg.Segment.WriteKey.Reveal()
	switch problem := writeKeyProblem(key); {
	case problem != "":
		c.report(checkFail, "segment write key"+suffix, "SEGMENT_WRITE_KEY %s", problem)
	case !isAlnum(key) || len(key) != 32:
		c.report(checkWarn, "segment write key"+suffix, "SEGMENT_WRITE_KEY has %d characters, not the 32 letters and digits of a Segment write key", len(key))
	default:
		c.report(checkOK, "segment write key"+suffix, "32 letters and digits")
	}

	endpoint := strings.TrimRight(cfg.Segment.Endpoint, "/")
	shown := redactURL(endpoint)
	ctx, cancel := c.ctx()
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/v1/batch", bytes.NewReader([]byte(`{"batch":[]}`)))
	if err != nil {
		c.report(checkFail, "segment endpoint"+suffix, "SEGMENT_ENDPOINT %s: %v", shown, err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(key, "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.report(checkFail, "segment endpoint"+suffix, "POST %s/v1/batch: %v", shown, redactErrURL(err))
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	region := ""
	if u, err := url.Parse(endpoint); err == nil && u.Host == "api.segment.io" {
		region = " (US region: an EU workspace needs https://events.eu1.segmentapis.com, or its events vanish)"
	}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		c.report(checkOK, "segment endpoint"+suffix, "POST %s/v1/batch of an empty batch answered %s%s", shown, resp.Status, region)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		c.report(checkFail, "segment endpoint"+suffix, "POST %s/v1/batch answered %s: the write key was refused", shown, resp.Status)
	default:
		c.report(checkFail, "segment endpoint"+suffix, "POST %s/v1/batch of an empty batch answered %s", shown, resp.Status)
	}
}

// writeKeyProblem returns what makes key unusable as a write key, or "".
func writeKeyProblem(key string) string {
	switch {
	case key == "":
		return "is empty"
	case strings.ContainsAny(key, " \t\r\n"):
		return "contains white space"
	case strings.Contains(key, ":"):
		return `contains ":" (it is the user of HTTP Basic auth)`
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return "contains characters other than printable ASCII"
	}
	return ""
}

func isAlnum(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	})
}

// checkBuffer checks Redis (reachability, persistence, eviction) or the
// embedded buffer's directory.
func (c *checker) checkBuffer(cfg *config.Config) {
	if cfg.Redis.URL == "" {
		c.checkDataDir(cfg.DataDir)
		return
	}
	opts, mode, err := config.RedisOptions(cfg.Redis.URL.Reveal())
	if err != nil {
		c.report(checkFail, "redis", "REDIS_URL: %v", err) // never quotes the URL
		return
	}
	opts.MaxRetries = -1
	opts.DialTimeout = min(c.timeout, 5*time.Second)
	client := redis.NewUniversalClient(opts)
	defer client.Close()
	ctx, cancel := c.ctx()
	defer cancel()
	where := fmt.Sprintf("%s Redis at %d address(es)", mode, len(opts.Addrs))
	if err := client.Ping(ctx).Err(); err != nil {
		c.report(checkFail, "redis", "%s: PING: %v", where, err)
		c.report(checkSkip, "redis persistence", "Redis unreachable")
		c.report(checkSkip, "redis eviction", "Redis unreachable")
		return
	}
	c.report(checkOK, "redis", "%s: PING answered", where)
	s, err := buffer.InspectRedis(ctx, client)
	if err != nil {
		c.report(checkFail, "redis persistence", "%v", err)
		c.report(checkSkip, "redis eviction", "Redis could not be inspected")
		return
	}
	problems := map[string]buffer.SafetyProblem{}
	for _, p := range s.Problems {
		problems[p.Reason] = p
	}
	switch p, bad := problems[buffer.ReasonNoPersistence]; {
	case bad:
		c.report(checkFail, "redis persistence", "%s", p)
	case s.Persistence == buffer.SafetyUnknown:
		c.report(checkWarn, "redis persistence", "unknown (CONFIG refused, as managed Redis often does): make sure appendonly yes, appendfsync everysec")
	case s.Persistence == buffer.PersistenceRDB:
		c.report(checkWarn, "redis persistence", "RDB snapshots only: a restart loses what was written since the last one, polled again from Auth0 while within its retention (appendonly yes is safer)")
	default:
		c.report(checkOK, "redis persistence", "%s", s.Persistence)
	}
	switch p, bad := problems[buffer.ReasonEviction]; {
	case bad:
		c.report(checkFail, "redis eviction", "%s", p)
	case s.EvictionPolicy == buffer.SafetyUnknown:
		c.report(checkWarn, "redis eviction", "unknown (CONFIG refused): make sure maxmemory-policy is noeviction")
	default:
		c.report(checkOK, "redis eviction", "maxmemory-policy %s", s.EvictionPolicy)
	}
}

// checkDataDir checks that the embedded buffer's directory is usable: a
// writable directory, or absent (authpipe run creates it).
func (c *checker) checkDataDir(dir string) {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.report(checkOK, "buffer", "embedded (REDIS_URL unset): AUTHPIPE_DATA_DIR %s does not exist yet and is created at start", dir)
		return
	case err != nil:
		c.report(checkFail, "buffer", "embedded (REDIS_URL unset): AUTHPIPE_DATA_DIR %s: %v", dir, err)
		return
	case !info.IsDir():
		c.report(checkFail, "buffer", "embedded (REDIS_URL unset): AUTHPIPE_DATA_DIR %s is not a directory", dir)
		return
	}
	f, err := os.CreateTemp(dir, ".authpipe-check-*")
	if err != nil {
		c.report(checkFail, "buffer", "embedded (REDIS_URL unset): AUTHPIPE_DATA_DIR %s is not writable: %v", dir, err)
		return
	}
	f.Close()
	_ = os.Remove(f.Name())
	c.report(checkOK, "buffer", "embedded (REDIS_URL unset): AUTHPIPE_DATA_DIR %s is writable", dir)
}

func (c *checker) checkAlertmanager(cfg *config.Config) {
	if cfg.AlertmanagerURL == "" {
		c.report(checkSkip, "alertmanager", "ALERTMANAGER_URL unset")
		return
	}
	base := strings.TrimRight(cfg.AlertmanagerURL, "/")
	shown := redactURL(base)
	ctx, cancel := c.ctx()
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
	if err != nil {
		c.report(checkFail, "alertmanager", "ALERTMANAGER_URL %s: %v", shown, err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.report(checkFail, "alertmanager", "GET %s/-/ready: %v", shown, redactErrURL(err))
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.report(checkFail, "alertmanager", "GET %s/-/ready answered %s", shown, resp.Status)
		return
	}
	c.report(checkOK, "alertmanager", "GET %s/-/ready answered %s", shown, resp.Status)
}

// redactURL returns u with any password replaced.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "<unparseable URL>"
	}
	return p.Redacted()
}

// redactErrURL returns err's text without the URL of a *url.Error (the
// line names the URL already, redacted).
func redactErrURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
