package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/status"
)

const (
	defaultDLQLimit = 100
	maxDLQLimit     = 1000
	// maxDLQIDs bounds the ids of one replay or drop request.
	maxDLQIDs = 10000
)

// StatusResponse is GET /api/v1/status.
type StatusResponse struct {
	Version string         `json:"version"`
	Ready   bool           `json:"ready"`
	Time    time.Time      `json:"time"`
	Tenants []TenantStatus `json:"tenants"`
	Rules   *RulesSummary  `json:"rules"` // null when threshold checks are off
	Errors  []string       `json:"errors,omitempty"`
}

// TenantStatus is one tenant's pipeline.
type TenantStatus struct {
	Name                 string     `json:"name"`
	Checkpoint           string     `json:"checkpoint"`
	CheckpointTime       *time.Time `json:"checkpoint_time"`
	CheckpointLagSeconds float64    `json:"checkpoint_lag_seconds"`
	RetentionSeconds     float64    `json:"retention_seconds"`
	Backlog              int64      `json:"backlog"`
	Pending              int64      `json:"pending"`
	StreamLength         int64      `json:"stream_length"`
	DeadLetters          int64      `json:"dead_letters"`
	Gaps                 float64    `json:"gaps"`
	EventsPolled         float64    `json:"events_polled"`
	EventsAcked          float64    `json:"events_acked"`
	// DataLosses counts the times this worker found the buffer had lost
	// data; LastDataLoss is the last of them (null when none).
	DataLosses   float64         `json:"data_losses"`
	LastDataLoss *DataLossStatus `json:"last_data_loss"`
	Errors       []string        `json:"errors,omitempty"`
}

// DataLossStatus is the buffer's last data-loss incident: when, what was
// found missing or gone backwards, and the window polled again from Auth0
// (repoll_until null when nothing had to be; repoll_from null with a
// repoll_until: from the start of Auth0's retention, nothing was known
// delivered).
type DataLossStatus struct {
	At          time.Time  `json:"at"`
	Found       []string   `json:"found"`
	RepollFrom  *time.Time `json:"repoll_from"`
	RepollUntil *time.Time `json:"repoll_until"`
}

// RulesSummary is the threshold engine at a glance.
type RulesSummary struct {
	Loaded   int  `json:"loaded"`
	Breached int  `json:"breached"`
	ReloadOK bool `json:"reload_ok"`
	Leader   bool `json:"leader"`
}

func (a *API) serveStatus(c *call) (int, any) {
	ctx := c.r.Context()
	snap, gatherErr := status.Snapshot(a.src.Metrics)
	now := a.clock.Now()
	resp := StatusResponse{Version: snap.Version, Ready: true, Time: now.UTC(), Tenants: []TenantStatus{}}
	if a.src.Ready != nil {
		resp.Ready = a.src.Ready()
	}
	if gatherErr != nil {
		a.log.Warn("admin status: gather metrics", "err", gatherErr)
		resp.Errors = append(resp.Errors, "some metrics could not be read; see the worker's log")
	}
	byName := map[string]status.Tenant{}
	for _, t := range snap.Tenants {
		byName[t.Name] = t
	}
	for _, t := range a.src.Tenants {
		m := byName[t.Name]
		ts := TenantStatus{
			Name: t.Name, RetentionSeconds: a.cfg.Retention.Seconds(),
			Gaps: m.Gaps, EventsPolled: m.Polled, EventsAcked: m.Acked,
			CheckpointLagSeconds: m.CheckpointLagSeconds, DataLosses: m.DataLosses,
		}
		if d := m.DataLoss; d != nil {
			ts.LastDataLoss = &DataLossStatus{At: d.At, Found: d.Found}
			if !d.RepollUntil.IsZero() {
				ts.LastDataLoss.RepollUntil = &d.RepollUntil
				if !d.RepollFrom.IsZero() {
					ts.LastDataLoss.RepollFrom = &d.RepollFrom
				}
			}
		}
		cp, err := t.Buffer.Checkpoint(ctx)
		if err != nil {
			a.log.Warn("admin status: read checkpoint", "tenant", t.Name, "err", err)
			ts.Errors = append(ts.Errors, "checkpoint unavailable; see the worker's log")
		} else if cp != "" {
			ts.Checkpoint = cp
			if at, err := auth0log.IDTime(cp); err == nil {
				at = at.UTC()
				ts.CheckpointTime = &at
				if _, measured := byName[t.Name]; !measured || ts.CheckpointLagSeconds == 0 {
					ts.CheckpointLagSeconds = max(now.Sub(at).Seconds(), 0)
				}
			}
		}
		st, err := t.Buffer.Stats(ctx, a.cfg.Group)
		if err != nil {
			a.log.Warn("admin status: read buffer stats", "tenant", t.Name, "err", err)
			ts.Errors = append(ts.Errors, "buffer figures unavailable; see the worker's log")
		} else {
			ts.Backlog, ts.Pending, ts.StreamLength, ts.DeadLetters = st.Backlog, st.Pending, st.Length, st.DeadLetters
		}
		resp.Tenants = append(resp.Tenants, ts)
		c.entry.Tenants = append(c.entry.Tenants, t.Name)
	}
	if a.src.Rules != nil {
		rs := a.src.Rules.Rules()
		sum := &RulesSummary{ReloadOK: !snap.ReloadKnown || snap.ReloadOK, Leader: a.src.Rules.Leader()}
		if rs != nil {
			sum.Loaded = len(rs.Rules)
		}
		for _, r := range snap.Rules {
			if r.Breached {
				sum.Breached++
			}
		}
		resp.Rules = sum
	}
	return http.StatusOK, resp
}

// RulesResponse is GET /api/v1/rules.
type RulesResponse struct {
	// Enabled is false when the worker runs no threshold checks.
	Enabled bool `json:"enabled"`
	// Leader: this replica evaluates the rules; breach state is reported
	// only by the leader.
	Leader   bool       `json:"leader"`
	ReloadOK bool       `json:"reload_ok"`
	Files    []string   `json:"files"`
	Rules    []RuleView `json:"rules"`
}

// RuleView is one rule with its state at its last check.
type RuleView struct {
	Name      string            `json:"name"`
	Types     []string          `json:"types"`
	GroupBy   string            `json:"group_by,omitempty"`
	Distinct  string            `json:"distinct,omitempty"`
	RatioOf   []string          `json:"ratio_of,omitempty"`
	Window    string            `json:"window"`
	Threshold float64           `json:"threshold"`
	Every     string            `json:"every,omitempty"`
	Cron      string            `json:"cron,omitempty"`
	Severity  string            `json:"severity"`
	Labels    map[string]string `json:"labels,omitempty"`
	Breached  bool              `json:"breached"`
	Value     float64           `json:"value"`
}

func (a *API) rules() (RulesResponse, error) {
	resp := RulesResponse{Files: []string{}, Rules: []RuleView{}}
	state := map[string]status.Rule{}
	snap, err := status.Snapshot(a.src.Metrics)
	if err != nil {
		a.log.Warn("admin rules: gather metrics", "err", err)
	}
	for _, r := range snap.Rules {
		state[r.Name] = r
	}
	if a.src.Rules == nil {
		return resp, err
	}
	resp.Enabled, resp.Leader, resp.ReloadOK = true, a.src.Rules.Leader(), !snap.ReloadKnown || snap.ReloadOK
	rs := a.src.Rules.Rules()
	if rs == nil {
		return resp, err
	}
	resp.Files = append(resp.Files, rs.Files...)
	for _, r := range rs.Rules {
		v := RuleView{
			Name: r.Name, Types: r.Types, GroupBy: r.GroupBy, Distinct: r.Distinct,
			Window: r.Window.String(), Threshold: r.Threshold, Cron: r.Cron, Severity: r.Severity, Labels: r.Labels,
			Breached: state[r.Name].Breached, Value: state[r.Name].Value,
		}
		if r.Ratio != nil {
			v.RatioOf = r.Ratio.Of
		}
		if r.Every > 0 {
			v.Every = r.Every.String()
		}
		resp.Rules = append(resp.Rules, v)
	}
	return resp, err
}

func (a *API) serveRules(c *call) (int, any) {
	resp, _ := a.rules()
	for _, r := range resp.Rules {
		c.entry.Rules = append(c.entry.Rules, r.Name)
	}
	return http.StatusOK, resp
}

// BreachesResponse is GET /api/v1/breaches: the rules breached at their
// last check, highest value first.
type BreachesResponse struct {
	Enabled  bool       `json:"enabled"`
	Leader   bool       `json:"leader"`
	Breaches []RuleView `json:"breaches"`
}

func (a *API) serveBreaches(c *call) (int, any) {
	all, _ := a.rules()
	resp := BreachesResponse{Enabled: all.Enabled, Leader: all.Leader, Breaches: []RuleView{}}
	for _, r := range all.Rules {
		if r.Breached {
			resp.Breaches = append(resp.Breaches, r)
		}
	}
	sort.SliceStable(resp.Breaches, func(i, j int) bool { return resp.Breaches[i].Value > resp.Breaches[j].Value })
	for _, r := range resp.Breaches {
		c.entry.Rules = append(c.entry.Rules, r.Name)
	}
	return http.StatusOK, resp
}

// ReloadResponse is POST /api/v1/rules/reload.
type ReloadResponse struct {
	Reloaded bool `json:"reloaded"`
	Rules    int  `json:"rules"`
}

func (a *API) serveReload(c *call) (int, any) {
	if a.src.Rules == nil {
		return http.StatusConflict, errorBody{"threshold checks are off on this worker", "rules_off"}
	}
	// Before: the files of the rules in force, as they are on disk now
	// (what the reload reads). After: the files of the rules loaded.
	if rs := a.src.Rules.Rules(); rs != nil {
		c.entry.RuleFiles = Digests(rs.Files)
	}
	if err := c.before(); err != nil {
		return c.unavailable()
	}
	err := a.src.Rules.Reload()
	n := 0
	c.entry.RuleFiles = nil
	if rs := a.src.Rules.Rules(); rs != nil {
		n = len(rs.Rules)
		c.entry.RuleFiles = Digests(rs.Files)
	}
	if err != nil {
		// The rule file's problems, for the operator who changed it; the
		// previous rules stay in force.
		c.entry.Affected = audit.IntPtr(0)
		return http.StatusUnprocessableEntity, errorBody{err.Error() + "; the previous rules stay in force", "invalid_rules"}
	}
	c.entry.Affected = &n
	return http.StatusOK, ReloadResponse{Reloaded: true, Rules: n}
}

// tenantName is the ?tenant= of a request, else the first tenant.
func (a *API) tenantName(r *http.Request) string {
	if t := r.URL.Query().Get("tenant"); t != "" {
		return t
	}
	return a.src.Tenants[0].Name
}

func (a *API) tenant(r *http.Request) (Tenant, bool) {
	name := a.tenantName(r)
	for _, t := range a.src.Tenants {
		if t.Name == name {
			return t, true
		}
	}
	return Tenant{}, false
}

func noTenant() (int, any) {
	return http.StatusNotFound, errorBody{"no such tenant", "no_tenant"}
}

// DeadLetterView is a dead letter as the API and `authpipe dlq list --json`
// show it. Raw, the event as Auth0 sent it (personal data), is included
// only on request.
type DeadLetterView struct {
	ID         string          `json:"id"`
	StreamID   string          `json:"stream_id"`
	LogID      string          `json:"log_id"`
	Reason     string          `json:"reason"`
	Deliveries int64           `json:"deliveries"`
	FailedAt   time.Time       `json:"failed_at"`
	Raw        json.RawMessage `json:"raw,omitempty"`
}

// NewDeadLetterView returns the view of d, with its raw event when withRaw.
func NewDeadLetterView(d buffer.DeadLetter, withRaw bool) DeadLetterView {
	v := DeadLetterView{
		ID: d.ID, StreamID: d.StreamID, LogID: d.LogID, Reason: d.Reason,
		Deliveries: d.Deliveries, FailedAt: d.FailedAt.UTC(),
	}
	if withRaw {
		if json.Valid(d.Raw) {
			v.Raw = json.RawMessage(d.Raw)
		} else {
			v.Raw, _ = json.Marshal(string(d.Raw))
		}
	}
	return v
}

// DLQResponse is GET /api/v1/dlq.
type DLQResponse struct {
	Tenant      string           `json:"tenant"`
	DeadLetters []DeadLetterView `json:"dead_letters"`
	// Next is the after= of the next page; "" when this page is the last.
	Next string `json:"next"`
}

func (a *API) serveDLQList(c *call) (int, any) {
	t, ok := a.tenant(c.r)
	if !ok {
		return noTenant()
	}
	q := c.r.URL.Query()
	limit := defaultDLQLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxDLQLimit {
			return badRequest("limit: want a number from 1 to 1000")
		}
		limit = n
	}
	withRaw := false
	if s := q.Get("raw"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return badRequest("raw: want true or false")
		}
		withRaw = b
	}
	after := q.Get("after")
	if after != "" && !ValidDLQID(after) {
		return badRequest("after: want a dead-letter id <ms>-<seq>, as listed")
	}
	c.entry.Tenants = []string{t.Name}
	dls, err := t.Buffer.DeadLettersAfter(c.r.Context(), after, limit+1)
	if err != nil {
		return a.fail(c, "list dead letters", err)
	}
	resp := DLQResponse{Tenant: t.Name, DeadLetters: []DeadLetterView{}}
	if len(dls) > limit {
		dls = dls[:limit]
		resp.Next = dls[limit-1].ID
	}
	for _, d := range dls {
		resp.DeadLetters = append(resp.DeadLetters, NewDeadLetterView(d, withRaw))
	}
	// The entry names every dead letter returned; respond stores it before
	// the answer is written.
	c.entry.Records = Records(dls)
	return http.StatusOK, resp
}

// DLQRequest is the body of POST /api/v1/dlq/replay and /dlq/drop: either
// ids or all.
type DLQRequest struct {
	IDs []string `json:"ids"`
	All bool     `json:"all"`
}

// DLQChangeResponse answers a replay or drop.
type DLQChangeResponse struct {
	Tenant   string `json:"tenant"`
	Replayed *int   `json:"replayed,omitempty"`
	Dropped  *int   `json:"dropped,omitempty"`
}

func (a *API) serveDLQReplay(c *call) (int, any) { return a.changeDLQ(c, true) }
func (a *API) serveDLQDrop(c *call) (int, any)   { return a.changeDLQ(c, false) }

func (a *API) changeDLQ(c *call, replay bool) (int, any) {
	t, ok := a.tenant(c.r)
	if !ok {
		return noTenant()
	}
	var req DLQRequest
	if err := decodeBody(c, &req); err != nil {
		return badRequest(err.Error())
	}
	switch {
	case req.All && len(req.IDs) > 0:
		return badRequest(`give either "ids" or "all": true, not both`)
	case !req.All && len(req.IDs) == 0:
		return badRequest(`give "ids" (a list of dead-letter ids) or "all": true`)
	case len(req.IDs) > maxDLQIDs:
		return badRequest("at most 10000 ids per request")
	}
	for _, id := range req.IDs {
		if !ValidDLQID(id) {
			return badRequest("ids: want dead-letter ids <ms>-<seq>, as listed")
		}
	}
	c.entry.Tenants = []string{t.Name}
	// Name what is about to change (every dead letter there is now, for
	// all), store that, then change exactly those.
	found, missing, err := ResolveDeadLetters(c.r.Context(), t.Buffer, req.IDs, req.All)
	if err != nil {
		return a.fail(c, "read the dead letters to change", err)
	}
	c.entry.Records, c.entry.Missing = Records(found), missing
	n := 0
	c.entry.Affected = &n
	resp := DLQChangeResponse{Tenant: t.Name, Dropped: &n}
	action, change := "drop dead letters", t.Buffer.DropDeadLetters
	if replay {
		resp = DLQChangeResponse{Tenant: t.Name, Replayed: &n}
		action, change = "replay dead letters", t.Buffer.ReplayDeadLetters
	}
	if len(found) == 0 {
		return http.StatusOK, resp // nothing to change: one entry, stored before the answer
	}
	if err := c.before(); err != nil {
		return c.unavailable()
	}
	if n, err = change(c.r.Context(), IDs(found)); err != nil {
		return a.fail(c, action, err)
	}
	return http.StatusOK, resp
}

// ValidDLQID reports whether s is a dead-letter id, "<ms>-<seq>".
func ValidDLQID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && digits(ms) && digits(seq)
}

func digits(s string) bool { return s != "" && len(s) <= 20 && strings.Trim(s, "0123456789") == "" }

// BackfillRequest is the body of POST /api/v1/backfill.
type BackfillRequest struct {
	Since string `json:"since"` // RFC 3339
}

func backfillMissing() (int, any) {
	return http.StatusNotImplemented, errorBody{
		"backfill is not available on this worker (not built in yet); use authpipe backfill --since when it ships",
		"not_implemented",
	}
}

func (a *API) serveBackfillStart(c *call) (int, any) {
	if a.src.Backfill == nil {
		return backfillMissing()
	}
	var req BackfillRequest
	if err := decodeBody(c, &req); err != nil {
		return badRequest(err.Error())
	}
	since, err := time.Parse(time.RFC3339, req.Since)
	if err != nil {
		return badRequest(`since: want an RFC 3339 time, e.g. "2026-01-02T03:04:05Z"`)
	}
	if since.After(a.clock.Now()) {
		return badRequest("since: in the future")
	}
	c.entry.Window = &audit.Window{Since: since.UTC()}
	for _, t := range a.src.Tenants {
		c.entry.Tenants = append(c.entry.Tenants, t.Name)
	}
	if err := c.before(); err != nil {
		return c.unavailable()
	}
	id, err := a.src.Backfill.Start(c.r.Context(), since)
	switch {
	case errors.Is(err, ErrBackfillRunning):
		return http.StatusConflict, errorBody{err.Error(), "backfill_running"}
	case errors.Is(err, ErrBackfillInvalid):
		return badRequest(err.Error())
	case err != nil:
		return a.fail(c, "start backfill", err)
	}
	p := a.src.Backfill.Progress()
	if p.ID == "" {
		p.ID = id
	}
	c.entry.BackfillID = id
	return http.StatusAccepted, p
}

func (a *API) serveBackfillProgress(c *call) (int, any) {
	if a.src.Backfill == nil {
		return backfillMissing()
	}
	p := a.src.Backfill.Progress()
	c.entry.BackfillID = p.ID
	return http.StatusOK, p
}
