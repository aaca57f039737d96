package admin

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/config"
)

// Outcomes of the audit entry and of authpipe_admin_requests_total.
const (
	OutcomeAllowed = audit.OutcomeAllowed
	OutcomeDenied  = audit.OutcomeDenied
	OutcomeRefused = audit.OutcomeRefused
)

// Outcomes lists every outcome.
var Outcomes = []string{OutcomeAllowed, OutcomeDenied, OutcomeRefused}

// maxBodyBytes bounds a request body.
const maxBodyBytes = 1 << 20

// Prefix is where the API is mounted.
const Prefix = "/api/v1/"

// Operations: the operation of the audit entry and of
// authpipe_admin_requests_total.
const (
	OpStatus           = "status"
	OpRulesList        = "rules_list"
	OpRulesReload      = "rules_reload"
	OpBreaches         = "breaches"
	OpDLQList          = "dlq_list"
	OpDLQReplay        = "dlq_replay"
	OpDLQDrop          = "dlq_drop"
	OpBackfillStart    = "backfill_start"
	OpBackfillProgress = "backfill_progress"
	OpUnknown          = "unknown"
)

// route is one endpoint: its operation, the scope it needs, and its
// handler, which returns the status and the JSON body.
type route struct {
	method, path, op, scope string
	resource                func(a *API, r *http.Request) string
	serve                   func(a *API, c *call) (int, any)
}

// call is one request being served: its audit entry, which the handler
// completes with what only it knows (the records it returns or changes),
// and whether the request entry of a change was stored (acted) or could
// not be (refused).
type call struct {
	api     *API
	r       *http.Request
	start   time.Time
	entry   *audit.Entry
	acted   bool
	refused bool
}

// before stores the request entry of a change, naming what it is about to
// change, before the change takes effect. An error means no sink took it:
// the handler must not act and returns unavailable().
func (c *call) before() error {
	e := *c.entry
	e.Kind, e.Status, e.Affected = audit.KindRequest, nil, nil // the result says
	e.LatencySeconds = c.api.clock.Since(c.start).Seconds()
	if err := c.api.trail.Record(c.r.Context(), audit.Split(e)...); err != nil {
		c.refused = true
		return err
	}
	c.acted = true
	return nil
}

// unavailable is the answer of a change whose request entry no sink took.
func (c *call) unavailable() (int, any) {
	return http.StatusServiceUnavailable, unavailableBody
}

func fixed(s string) func(*API, *http.Request) string {
	return func(*API, *http.Request) string { return s }
}

func dlqResource(a *API, r *http.Request) string {
	return "tenants/" + a.mask.Value(a.tenantName(r)) + "/dlq"
}

var routes = []route{
	{http.MethodGet, "status", OpStatus, ScopeReadStatus, fixed("status"), (*API).serveStatus},
	{http.MethodGet, "rules", OpRulesList, ScopeReadRules, fixed("rules"), (*API).serveRules},
	{http.MethodPost, "rules/reload", OpRulesReload, ScopeWriteRules, fixed("rules"), (*API).serveReload},
	{http.MethodGet, "breaches", OpBreaches, ScopeReadRules, fixed("rules/breaches"), (*API).serveBreaches},
	{http.MethodGet, "dlq", OpDLQList, ScopeReadDLQ, dlqResource, (*API).serveDLQList},
	{http.MethodPost, "dlq/replay", OpDLQReplay, ScopeWriteDLQ, dlqResource, (*API).serveDLQReplay},
	{http.MethodPost, "dlq/drop", OpDLQDrop, ScopeWriteDLQ, dlqResource, (*API).serveDLQDrop},
	{http.MethodPost, "backfill", OpBackfillStart, ScopeWriteBackfill, fixed("backfill"), (*API).serveBackfillStart},
	{http.MethodGet, "backfill", OpBackfillProgress, ScopeReadBackfill, fixed("backfill"), (*API).serveBackfillProgress},
}

// Operations lists every operation, unknown included.
func Operations() []string {
	ops := make([]string, 0, len(routes)+1)
	for _, rt := range routes {
		ops = append(ops, rt.op)
	}
	return append(ops, OpUnknown)
}

// API is the admin API's http.Handler; mount it at Prefix.
type API struct {
	cfg   Config
	src   Sources
	log   *slog.Logger
	clock clockwork.Clock
	auth  *authenticator
	trail *audit.Trail
	mask  *audit.Masker
	host  string

	requests *prometheus.CounterVec
}

// New builds the API. It registers its metrics on deps.Registerer; it
// fetches nothing until the first request.
func New(cfg Config, src Sources, deps Deps) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(src.Tenants) == 0 {
		return nil, errors.New("admin API: no tenant")
	}
	for _, t := range src.Tenants {
		if t.Name == "" || t.Buffer == nil {
			return nil, errors.New("admin API: a tenant without a name or buffer")
		}
	}
	if src.Metrics == nil {
		return nil, errors.New("admin API: no metrics registry")
	}
	if deps.Trail == nil {
		return nil, errors.New("admin API: no audit trail")
	}
	cfg = cfg.withDefaults()
	deps = deps.withDefaults()
	log := deps.Logger.With("component", "admin")
	f := promauto.With(deps.Registerer)
	names := make([]string, len(src.Tenants))
	for i, t := range src.Tenants {
		names[i] = t.Name
	}
	a := &API{
		cfg:   cfg,
		src:   src,
		log:   log,
		clock: deps.Clock,
		trail: deps.Trail,
		mask:  audit.NewMasker(config.Reveal(append(slices.Clone(cfg.Secrets), cfg.StaticToken)...), names),
		host:  deps.Host,
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_admin_requests_total",
			Help: "Admin API requests, by operation and outcome: allowed (authenticated and authorised), denied, or refused (503: no audit sink took the entry).",
		}, []string{"operation", "outcome"}),
	}
	for _, op := range Operations() {
		for _, o := range Outcomes {
			a.requests.WithLabelValues(op, o)
		}
	}
	a.auth = &authenticator{cfg: cfg, clock: deps.Clock}
	if cfg.StaticToken != "" {
		a.auth.static, a.auth.hasStatic = sha256.Sum256([]byte(cfg.StaticToken.Reveal())), true
	}
	if cfg.JWT() {
		refreshes := f.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_admin_jwks_refreshes_total",
			Help: "Fetches of the Auth0 tenant's signing keys (JWKS) for the admin API, by result.",
		}, []string{"result"})
		refreshes.WithLabelValues("success")
		refreshes.WithLabelValues("error")
		a.auth.keys = &keySet{
			url: cfg.JWKSURL, name: audit.RedactURL(cfg.JWKSURL), client: deps.HTTPClient, clock: deps.Clock,
			minRefresh: cfg.JWKSMinRefresh, maxAge: cfg.JWKSMaxAge, log: log, refreshes: refreshes,
		}
	}
	return a, nil
}

// match finds the route of a request; pathKnown tells a known path asked
// with another method.
func match(method, path string) (rt *route, pathKnown bool) {
	rest, ok := strings.CutPrefix(path, Prefix)
	if !ok {
		return nil, false
	}
	for i := range routes {
		if routes[i].path != rest {
			continue
		}
		pathKnown = true
		if routes[i].method == method {
			return &routes[i], true
		}
	}
	return nil, pathKnown
}

func allowed(path string) string {
	var methods []string
	for _, rt := range routes {
		if Prefix+rt.path == path {
			methods = append(methods, rt.method)
		}
	}
	return strings.Join(methods, ", ")
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// ServeHTTP authenticates, authorises, serves and audits one request. The
// request's entry is stored before anything is done (a change) or shown
// (a read, an error): when no sink takes it the answer is 503
// audit_unavailable and nothing else happens.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := a.clock.Now()
	c := &call{api: a, r: r, start: start, entry: a.newEntry(r, start)}
	e := c.entry
	rt, pathKnown := match(r.Method, r.URL.Path)
	if rt != nil {
		e.Operation, e.Resource = rt.op, rt.resource(a, r)
	}
	id, d := a.auth.authenticate(r.Context(), r)
	e.Auth, e.Sub, e.JTI, e.Exp, e.TokenThumbprint, e.ClaimsVerified = id.auth, id.sub, id.jti, id.exp, id.thumbprint, id.verified

	var status int
	var body any
	e.Outcome = OutcomeDenied
	switch {
	case d != nil:
		challenge := `Bearer realm="authpipe"`
		if d.reason != ReasonMissingToken && d.status == http.StatusUnauthorized {
			challenge += `, error="invalid_token", error_description="` + d.desc + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		if d.status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "30")
		}
		status, body, e.Reason = d.status, errorBody{d.desc, d.reason}, d.reason
	case rt == nil && pathKnown:
		w.Header().Set("Allow", allowed(r.URL.Path))
		status, body, e.Reason = http.StatusMethodNotAllowed, errorBody{"method not allowed", ReasonMethodNotAllowed}, ReasonMethodNotAllowed
	case rt == nil:
		status, body, e.Reason = http.StatusNotFound, errorBody{"no such admin API endpoint", ReasonNotFound}, ReasonNotFound
	case !id.has(rt.scope):
		w.Header().Set("WWW-Authenticate", `Bearer realm="authpipe", error="insufficient_scope", scope="`+rt.scope+`"`)
		status = http.StatusForbidden
		body = errorBody{"the access token lacks the scope " + rt.scope, ReasonInsufficientScope}
		e.Reason = ReasonInsufficientScope
	default:
		e.Outcome = OutcomeAllowed
		status, body = rt.serve(a, c)
	}
	a.respond(w, c, status, body)
}

// newEntry is a request's audit entry as far as the request itself says.
func (a *API) newEntry(r *http.Request, start time.Time) *audit.Entry {
	return &audit.Entry{
		ID: audit.NewID(), Kind: audit.KindRequest, Time: start.UTC(), Host: a.host, RemoteAddr: r.RemoteAddr,
		Auth: AuthNone, Method: clip(r.Method), Path: clip(a.mask.Path(r.URL.Path)), Query: a.mask.Query(r.URL.RawQuery),
		Operation: OpUnknown, Resource: clip(a.mask.Path(r.URL.Path)),
	}
}

// respond stores the entry, then answers. A read's (or a refusal's) entry
// is stored first and the answer written only if a sink took it; a
// change's request entry was stored before it acted, so its result entry
// is stored (or kept for a sink that fails) and the answer written.
func (a *API) respond(w http.ResponseWriter, c *call, status int, body any) {
	e := c.entry
	e.Status = &status
	e.LatencySeconds = a.clock.Since(c.start).Seconds()
	switch {
	case c.refused:
		a.refuse(w, c)
	case c.acted:
		a.trail.Defer(c.r.Context(), result(*e))
		writeJSON(w, status, body)
	default:
		if err := a.trail.Record(c.r.Context(), audit.Split(*e)...); err != nil {
			a.refuse(w, c)
			break
		}
		writeJSON(w, status, body)
	}
	a.requests.WithLabelValues(e.Operation, e.Outcome).Inc()
	a.log.Debug("admin request", "operation", e.Operation, "outcome", e.Outcome, "status", *e.Status, "reason", e.Reason)
}

// refuse answers 503 for want of an audit sink and records the refusal
// where and when a sink takes it.
func (a *API) refuse(w http.ResponseWriter, c *call) {
	ref := refusal(*c.entry)
	a.trail.Defer(c.r.Context(), ref)
	*c.entry = ref
	w.Header().Del("WWW-Authenticate")
	w.Header().Del("Allow")
	answerUnavailable(w)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"internal error","code":"internal"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// fail answers an internal error: logged with its cause, answered without.
func (a *API) fail(c *call, action string, err error) (int, any) {
	a.log.Error("admin request failed", "action", action, "operation", c.entry.Operation, "err", err)
	return http.StatusInternalServerError, errorBody{action + " failed; see the worker's log", "internal"}
}

func badRequest(msg string) (int, any) {
	return http.StatusBadRequest, errorBody{msg, "bad_request"}
}

// decodeBody reads a JSON request body into v: at most 1 MiB, no unknown
// fields, one value.
func decodeBody(c *call, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, c.r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: more than one JSON value")
	}
	return nil
}
