package sim

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Defaults of Auth0Options.
const (
	DefaultRetention = 144 * time.Hour
	DefaultTokenTTL  = 24 * time.Hour
	DefaultTenant    = "authpipe-sim"
)

// Limits of GET /api/v2/logs.
const (
	defaultTake    = 50
	maxTake        = 100
	maxPageRecords = 1000
	logIDLength    = 56
	// idDelay is how far a log_id's embedded time lies after the event's date.
	idDelay = 2 * time.Second
)

// Auth0Options configures the Auth0 simulator. The zero value is usable:
// empty ClientID/ClientSecret accept only empty credentials.
type Auth0Options struct {
	ClientID, ClientSecret string
	// Retention: logs whose date is older than now − Retention are deleted.
	// Default 144h (6 days).
	Retention time.Duration
	// Clock drives retention and the rate-limit bucket. Default: real clock.
	Clock clockwork.Clock
	// Burst is the token bucket size for GET /api/v2/logs, refilled at
	// PerMinute tokens per minute. Burst 0 = unlimited. Burst > 0 with
	// PerMinute 0 never refills.
	Burst, PerMinute int
	// TokenTTL is the lifetime of access tokens (expires_in). Default 24h.
	// Measured on the real clock: the oauth2 client judges expiry with the
	// real clock too, so a fake clock would expire tokens behind its back.
	TokenTTL time.Duration
	// Tenant is the tenant_name in events. Default "authpipe-sim".
	Tenant string
	// Hostname is the hostname in events. Default Tenant + ".us.auth0.com".
	Hostname string
	// Scopes are the Management API scopes the client's grant holds: a
	// token's "scope" in the token response, and what GET /api/v2/logs
	// checks (read:logs or read:logs_users, else 403 insufficient_scope).
	// Default DefaultScopes.
	Scopes []string
}

// DefaultScopes are the scopes the simulated client is granted by default.
var DefaultScopes = []string{"read:logs", "read:logs_users"}

// logsScopes are the scopes of which GET /api/v2/logs needs one.
var logsScopes = []string{"read:logs", "read:logs_users"}

// Auth0Stats counts requests seen by the Auth0 simulator.
type Auth0Stats struct {
	Requests      int         // every request
	LogRequests   int         // GET /api/v2/logs (any outcome)
	TokenRequests int         // POST /oauth/token (any outcome)
	Status        map[int]int // responses by status code (all endpoints)
	RateLimited   int         // 429 answers from the token bucket
	Failed        int         // answers forced by FailEveryN
	Malformed     int         // malformed pages served (MalformedNext)
	TokenFailed   int         // token answers forced by FailTokenNext
	EventsServed  int         // events returned in well-formed 200 pages
}

// entry is one stored log event, pre-encoded. The log_id is body[idOff:idOff+56].
type entry struct {
	body []byte
	date int64 // event date, Unix milliseconds
}

// The encoder always writes log_id first: `{"log_id":"<56 digits>"`.
const idOff = len(`{"log_id":"`)

func (e *entry) id() []byte { return e.body[idOff : idOff+logIDLength] }

// Auth0 simulates the Auth0 Management API endpoints authpipe uses:
// POST /oauth/token, GET /api/v2/logs and GET /api/v2/logs/{id}. It is an
// http.Handler; serve it with httptest.NewServer. Safe for concurrent use.
type Auth0 struct {
	clientID, clientSecret string
	retention              time.Duration
	tokenTTL               time.Duration
	clock                  clockwork.Clock
	tenant, hostname       string

	mu         sync.Mutex
	entries    []entry // ascending log_id; entries[head:] may be retained
	head       int     // entries before head are deleted by retention
	lastIDTime time.Time
	seq        uint64

	scopes  []string
	tokens  map[string]issuedToken // by access token
	scratch []byte                 // encoding buffer, reused under mu
	arena   []byte                 // event bodies are carved from 1 MiB chunks
	conns   map[string]connInfo    // derived connection fields, by name

	burst, perMinute int
	bucket           float64
	bucketAt         time.Time

	failEvery, failStatus int
	eligible              int // log requests past rate limit and auth
	malformed             int
	failToken             int

	subs []func([]RawLog) // see Subscribe

	stats Auth0Stats
}

var _ http.Handler = (*Auth0)(nil)

// NewAuth0 returns an Auth0 simulator with no events.
func NewAuth0(opts Auth0Options) *Auth0 {
	orDefault(&opts.Retention, DefaultRetention)
	orDefault(&opts.TokenTTL, DefaultTokenTTL)
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	opts.Tenant = cmp.Or(opts.Tenant, DefaultTenant)
	opts.Hostname = cmp.Or(opts.Hostname, opts.Tenant+".us.auth0.com")
	if opts.Scopes == nil {
		opts.Scopes = DefaultScopes
	}
	a := &Auth0{
		scopes:       slices.Clone(opts.Scopes),
		clientID:     opts.ClientID,
		clientSecret: opts.ClientSecret,
		retention:    opts.Retention,
		tokenTTL:     opts.TokenTTL,
		clock:        opts.Clock,
		tenant:       opts.Tenant,
		hostname:     opts.Hostname,
		tokens:       map[string]issuedToken{},
		conns:        map[string]connInfo{},
		stats:        Auth0Stats{Status: map[int]int{}},
	}
	a.setRateLimitLocked(opts.Burst, opts.PerMinute)
	return a
}

// Add stores events in ingest order and returns their log_ids. Each log_id
// is "900" + UTC YYYYMMDDhhmmss + 39 digits; its time is the event's date + 2 s,
// or the previous log_id's time if later, and the last 39 digits count every
// event ever added, so ids are unique and strictly ascending in ingest order
// whatever the dates. A zero Date means now (the injected clock). Add panics
// if Details or Extra hold a value encoding/json cannot encode.
func (a *Auth0) Add(events ...Event) []string {
	ids := make([]string, len(events))
	a.mu.Lock()
	defer a.mu.Unlock()
	var added []RawLog
	if len(a.subs) > 0 {
		added = make([]RawLog, 0, len(events))
	}
	now := a.clock.Now()
	for i, ev := range events {
		if ev.Date.IsZero() {
			ev.Date = now
		}
		date := ev.Date.UTC()
		idTime := date.Add(idDelay).Truncate(time.Second)
		if idTime.Before(a.lastIDTime) {
			idTime = a.lastIDTime
		}
		a.lastIDTime = idTime
		a.seq++
		id := formatLogID(idTime, a.seq)
		ids[i] = id
		a.scratch = a.encode(a.scratch[:0], ev, id, date)
		body := a.store(a.scratch)
		a.entries = append(a.entries, entry{body: body, date: date.UnixMilli()})
		if added != nil {
			added = append(added, RawLog{ID: id, JSON: body})
		}
	}
	if len(added) > 0 {
		for _, fn := range a.subs {
			fn(added)
		}
	}
	return ids
}

// Subscribe makes fn receive every event Add stores from now on, as Auth0
// hands each new log to its Log Streams: once per Add call, in ingest
// (log_id) order, with the JSON the logs API serves. fn runs with the
// simulator's lock held, so calls never interleave or reorder: it must
// return quickly, must not call the simulator, and must not modify the
// JSON (it is the stored event).
func (a *Auth0) Subscribe(fn func([]RawLog)) {
	a.mu.Lock()
	a.subs = append(a.subs, fn)
	a.mu.Unlock()
}

// store copies b into the arena: one allocation per MiB of events instead
// of one per event, which keeps a million events cheap for the GC.
func (a *Auth0) store(b []byte) []byte {
	const chunk = 1 << 20
	if cap(a.arena)-len(a.arena) < len(b) {
		a.arena = make([]byte, 0, max(chunk, len(b)))
	}
	n := len(a.arena)
	a.arena = append(a.arena, b...)
	return a.arena[n : n+len(b) : n+len(b)]
}

// orDefault sets *v to def unless it is positive.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

func formatLogID(t time.Time, seq uint64) string {
	s := strconv.FormatUint(seq, 10)
	return "900" + t.Format("20060102150405") + strings.Repeat("0", logIDLength-17-len(s)) + s
}

// LogIDs returns the log_ids of every retained log, ascending.
func (a *Auth0) LogIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	cutoff := a.pruneLocked()
	ids := make([]string, 0, len(a.entries)-a.head)
	for i := a.head; i < len(a.entries); i++ {
		if a.entries[i].date >= cutoff {
			ids = append(ids, string(a.entries[i].id()))
		}
	}
	return ids
}

// Len returns the number of retained logs.
func (a *Auth0) Len() int { return len(a.LogIDs()) }

// Log returns the stored JSON of a retained log.
func (a *Auth0) Log(id string) (json.RawMessage, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cutoff := a.pruneLocked()
	i := a.searchLocked(id, false)
	if i < len(a.entries) && string(a.entries[i].id()) == id && a.entries[i].date >= cutoff {
		return bytes.Clone(a.entries[i].body), true
	}
	return nil, false
}

// FailEveryN makes every nth logs request that passed the rate limit and
// token check fail with status and Auth0's error body (n <= 0 disables).
func (a *Auth0) FailEveryN(n, status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failEvery, a.failStatus, a.eligible = n, status, 0
}

// MalformedNext makes the next n logs pages answer 200 with a truncated,
// invalid JSON body.
func (a *Auth0) MalformedNext(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.malformed = n
}

// FailTokenNext makes the next n token requests answer 500. Note that the
// oauth2 client probes two auth styles: one failed token fetch costs it two
// requests (Basic, then form fields).
func (a *Auth0) FailTokenNext(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failToken = n
}

// SetRateLimit replaces the token bucket (full) for logs requests:
// burst 0 = unlimited.
func (a *Auth0) SetRateLimit(burst, perMinute int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setRateLimitLocked(burst, perMinute)
}

func (a *Auth0) setRateLimitLocked(burst, perMinute int) {
	a.burst, a.perMinute = max(burst, 0), max(perMinute, 0)
	a.bucket = float64(a.burst)
	a.bucketAt = a.clock.Now()
}

// RevokeTokens invalidates every access token issued so far: the next logs
// request with one answers 401. Note that go-auth0 keeps using its cached
// token until it expires, so its later requests keep failing with 401.
func (a *Auth0) RevokeTokens() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.tokens)
}

// Stats returns a copy of the counters.
func (a *Auth0) Stats() Auth0Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Status = maps.Clone(a.stats.Status)
	return s
}

// ServeHTTP implements http.Handler.
func (a *Auth0) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.stats.Requests++
	a.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		a.mu.Lock()
		a.stats.Status[cmp.Or(sw.status, http.StatusOK)]++
		a.mu.Unlock()
	}()
	switch {
	case r.URL.Path == "/oauth/token":
		a.serveToken(sw, r)
	case r.URL.Path == "/api/v2/logs" || strings.HasPrefix(r.URL.Path, "/api/v2/logs/"):
		a.serveLogs(sw, r)
	default:
		writeAuth0Error(sw, http.StatusNotFound, "Not Found", "")
	}
}

// ---- POST /oauth/token ----

func (a *Auth0) serveToken(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.stats.TokenRequests++
	fail := a.failToken > 0
	if fail {
		a.failToken--
		a.stats.TokenFailed++
	}
	a.mu.Unlock()
	if r.Method != http.MethodPost {
		writeAuth0Error(w, http.StatusNotFound, "Not Found", "")
		return
	}
	if fail {
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "Simulated token endpoint failure")
		return
	}
	params, err := tokenParams(r)
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if gt := params.Get("grant_type"); gt != "client_credentials" {
		writeOAuthError(w, http.StatusForbidden, "unauthorized_client", fmt.Sprintf("Grant type '%s' not allowed for the client.", gt))
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// oauth2 query-escapes Basic credentials (RFC 6749 §2.3.1).
		id, secret = unescape(id), unescape(secret)
	} else {
		id, secret = params.Get("client_id"), params.Get("client_secret")
	}
	if id != a.clientID || secret != a.clientSecret {
		writeOAuthError(w, http.StatusUnauthorized, "access_denied", "Unauthorized")
		return
	}
	want := requestScheme(r) + "://" + r.Host + "/api/v2/"
	if aud := params.Get("audience"); aud != want {
		writeOAuthError(w, http.StatusForbidden, "access_denied", "Service not enabled within domain: "+aud)
		return
	}
	token := randomToken()
	a.mu.Lock()
	now := time.Now()
	if len(a.tokens) > 1024 {
		maps.DeleteFunc(a.tokens, func(_ string, it issuedToken) bool { return now.After(it.exp) })
	}
	scopes := slices.Clone(a.scopes)
	a.tokens[token] = issuedToken{exp: now.Add(a.tokenTTL), scopes: scopes}
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(a.tokenTTL / time.Second),
		"scope":        strings.Join(scopes, " "),
	})
}

// issuedToken is an access token the simulator issued.
type issuedToken struct {
	exp    time.Time // real clock
	scopes []string
}

// SetScopes changes the scopes of the client's grant, for tokens issued
// from now on (as editing the grant in the dashboard does; tokens already
// issued keep theirs until they expire).
func (a *Auth0) SetScopes(scopes ...string) {
	a.mu.Lock()
	a.scopes = slices.Clone(scopes)
	a.mu.Unlock()
}

func tokenParams(r *http.Request) (url.Values, error) {
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/json") {
		var m map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(&m); err != nil {
			return nil, fmt.Errorf("invalid JSON body")
		}
		v := url.Values{}
		for k, x := range m {
			if s, ok := x.(string); ok {
				v.Set(k, s)
			}
		}
		return v, nil
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("invalid form body")
	}
	return r.PostForm, nil
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

// ---- GET /api/v2/logs ----

func (a *Auth0) serveLogs(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.stats.LogRequests++
	allowed := a.rateLimitLocked(w.Header())
	if !allowed {
		a.stats.RateLimited++
	}
	a.mu.Unlock()
	if !allowed {
		writeAuth0Error(w, http.StatusTooManyRequests, "Global limit has been reached", "too_many_requests")
		return
	}
	if r.Method != http.MethodGet {
		writeAuth0Error(w, http.StatusNotFound, "Not Found", "")
		return
	}
	scopes, msg := a.checkToken(r)
	if msg != "" {
		writeAuth0Error(w, http.StatusUnauthorized, msg, "")
		return
	}
	if !slices.ContainsFunc(logsScopes, func(s string) bool { return slices.Contains(scopes, s) }) {
		writeAuth0Error(w, http.StatusForbidden,
			"Insufficient scope, expected any of: "+strings.Join(logsScopes, ","), "insufficient_scope")
		return
	}
	a.mu.Lock()
	a.eligible++
	failStatus := 0
	if a.failEvery > 0 && a.eligible%a.failEvery == 0 {
		failStatus = a.failStatus
		a.stats.Failed++
	}
	a.mu.Unlock()
	if failStatus != 0 {
		msg, code := "Simulated failure", ""
		if failStatus == http.StatusTooManyRequests {
			msg, code = "Global limit has been reached", "too_many_requests"
		}
		writeAuth0Error(w, failStatus, msg, code)
		return
	}

	if rest := strings.TrimPrefix(r.URL.Path, "/api/v2/logs"); rest != "" {
		a.serveOne(w, strings.TrimPrefix(rest, "/"))
		return
	}
	q := r.URL.Query()
	if q.Has("from") || q.Has("take") {
		a.serveCheckpoint(w, r, q)
		return
	}
	a.servePage(w, q)
}

// rateLimitLocked takes a token from the bucket, sets the x-ratelimit-*
// headers and reports whether the request may proceed.
func (a *Auth0) rateLimitLocked(h http.Header) bool {
	now := a.clock.Now()
	if a.burst == 0 {
		// Unlimited: headers still present, as on a real tenant.
		h.Set("X-Ratelimit-Limit", "1000")
		h.Set("X-Ratelimit-Remaining", "1000")
		h.Set("X-Ratelimit-Reset", strconv.FormatInt(now.Unix(), 10))
		return true
	}
	rate := float64(a.perMinute) / 60 // tokens per second
	if el := now.Sub(a.bucketAt).Seconds(); el > 0 {
		a.bucket = math.Min(float64(a.burst), a.bucket+el*rate)
	}
	a.bucketAt = now
	allowed := a.bucket >= 1
	if allowed {
		a.bucket--
	}
	reset := now
	if a.bucket < float64(a.burst) && rate > 0 {
		// Time of the next whole token.
		need := math.Floor(a.bucket) + 1 - a.bucket
		reset = now.Add(time.Duration(need / rate * float64(time.Second)))
	} else if rate == 0 && a.bucket < float64(a.burst) {
		reset = now.Add(100 * 365 * 24 * time.Hour)
	}
	resetSec := reset.Unix()
	if reset.After(time.Unix(resetSec, 0)) {
		resetSec++ // round up: the refill has happened by then
	}
	h.Set("X-Ratelimit-Limit", strconv.Itoa(a.burst))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(int(math.Floor(a.bucket))))
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(resetSec, 10))
	return allowed
}

// checkToken returns a valid token's scopes, else the 401 message.
func (a *Auth0) checkToken(r *http.Request) ([]string, string) {
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || token == "" {
		return nil, "Invalid token"
	}
	a.mu.Lock()
	it, ok := a.tokens[token]
	a.mu.Unlock()
	if !ok {
		return nil, "Invalid token"
	}
	if time.Now().After(it.exp) {
		return nil, "Expired token received for JSON Web Token validation"
	}
	return it.scopes, ""
}

func (a *Auth0) serveCheckpoint(w http.ResponseWriter, r *http.Request, q url.Values) {
	from := q.Get("from")
	if from != "" && !isDigits(from) {
		writeAuth0Error(w, http.StatusBadRequest,
			"Query validation error: 'from' must be a log_id (digits only).", "invalid_query_string")
		return
	}
	take := defaultTake
	if s := q.Get("take"); s != "" {
		n, err := strconv.Atoi(s)
		switch {
		case err != nil:
			writeAuth0Error(w, http.StatusBadRequest,
				"Query validation error: 'Expected type integer but found type string' on property take (The total amount of entries to retrieve when using the from parameter).", "invalid_query_string")
			return
		case n < 1:
			writeAuth0Error(w, http.StatusBadRequest, fmt.Sprintf(
				"Query validation error: 'Value %d is less than minimum 1' on property take (The total amount of entries to retrieve when using the from parameter).", n), "invalid_query_string")
			return
		case n > maxTake:
			writeAuth0Error(w, http.StatusBadRequest, fmt.Sprintf(
				"Query validation error: 'Value %d is greater than maximum of %d' on property take (The total amount of entries to retrieve when using the from parameter).", n, maxTake), "invalid_query_string")
			return
		}
		take = n
	}

	buf := bytes.NewBuffer(make([]byte, 0, take*768))
	buf.WriteByte('[')
	a.mu.Lock()
	cutoff := a.pruneLocked()
	next := from
	n := 0
	for i := a.searchLocked(from, true); i < len(a.entries) && n < take; i++ {
		e := &a.entries[i]
		if e.date < cutoff {
			continue
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(e.body)
		next = string(e.id())
		n++
	}
	malformed := a.malformed > 0
	if malformed {
		a.malformed--
		a.stats.Malformed++
	} else {
		a.stats.EventsServed += n
	}
	a.mu.Unlock()
	buf.WriteByte(']')

	link := url.URL{Scheme: requestScheme(r), Host: r.Host, Path: "/api/v2/logs",
		RawQuery: url.Values{"from": {next}, "take": {strconv.Itoa(take)}}.Encode()}
	w.Header().Set("Link", "<"+link.String()+`>; rel="next"`)
	a.writePage(w, buf.Bytes(), malformed)
}

func (a *Auth0) servePage(w http.ResponseWriter, q url.Values) {
	page, perPage := 0, defaultTake
	for _, p := range []struct {
		name string
		dst  *int
		min  int
	}{{"page", &page, 0}, {"per_page", &perPage, 1}} {
		s := q.Get(p.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			writeAuth0Error(w, http.StatusBadRequest, fmt.Sprintf(
				"Query validation error: 'Expected type integer but found type string' on property %s.", p.name), "invalid_query_string")
			return
		}
		if n < p.min {
			writeAuth0Error(w, http.StatusBadRequest, fmt.Sprintf(
				"Query validation error: 'Value %d is less than minimum %d' on property %s.", n, p.min, p.name), "invalid_query_string")
			return
		}
		*p.dst = n
	}
	if perPage > maxTake {
		writeAuth0Error(w, http.StatusBadRequest, fmt.Sprintf(
			"Query validation error: 'Value %d is greater than maximum of %d' on property per_page (Number of results per page. Paging is disabled if parameter not sent.).", perPage, maxTake), "invalid_query_string")
		return
	}
	if page*perPage+perPage > maxPageRecords {
		writeAuth0Error(w, http.StatusBadRequest, fmt.Sprintf(
			"Requesting page %d exceeds the allowed maximum of %d records. To fetch results beyond %d, use the checkpoint pagination method.", page, maxPageRecords, maxPageRecords), "")
		return
	}
	ascending := q.Get("sort") == "date:1" || q.Get("sort") == "log_id:1"

	buf := bytes.NewBuffer(make([]byte, 0, 1024))
	a.mu.Lock()
	cutoff := a.pruneLocked()
	skip, n, total := page*perPage, 0, 0
	emit := func(e *entry) {
		if e.date < cutoff {
			return
		}
		total++
		if skip > 0 {
			skip--
			return
		}
		if n < perPage {
			if n > 0 {
				buf.WriteByte(',')
			}
			buf.Write(e.body)
			n++
		}
	}
	countAll := q.Get("include_totals") == "true"
	if ascending {
		for i := a.head; i < len(a.entries) && (countAll || n < perPage); i++ {
			emit(&a.entries[i])
		}
	} else {
		for i := len(a.entries) - 1; i >= a.head && (countAll || n < perPage); i-- {
			emit(&a.entries[i])
		}
	}
	malformed := a.malformed > 0
	if malformed {
		a.malformed--
		a.stats.Malformed++
	} else {
		a.stats.EventsServed += n
	}
	a.mu.Unlock()

	var body []byte
	if countAll {
		body = fmt.Appendf(nil, `{"start":%d,"limit":%d,"length":%d,"total":%d,"logs":[%s]}`,
			page*perPage, perPage, n, total, buf.Bytes())
	} else {
		body = append(append([]byte{'['}, buf.Bytes()...), ']')
	}
	a.writePage(w, body, malformed)
}

func (a *Auth0) serveOne(w http.ResponseWriter, id string) {
	raw, ok := a.Log(id)
	if !ok {
		writeAuth0Error(w, http.StatusNotFound, "log not found", "inexistent_log")
		return
	}
	a.writePage(w, raw, false)
}

func (a *Auth0) writePage(w http.ResponseWriter, body []byte, malformed bool) {
	if malformed {
		body = body[:max(1, len(body)/2)] // a strict prefix of a JSON value never parses
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// pruneLocked drops the leading logs deleted by retention and returns the
// cutoff (Unix ms): logs dated before it are deleted even when out of order.
func (a *Auth0) pruneLocked() int64 {
	cutoff := a.clock.Now().Add(-a.retention).UnixMilli()
	for a.head < len(a.entries) && a.entries[a.head].date < cutoff {
		a.entries[a.head] = entry{}
		a.head++
	}
	if a.head > 1024 && a.head > len(a.entries)/2 {
		a.entries = append([]entry(nil), a.entries[a.head:]...)
		a.head = 0
	}
	return cutoff
}

// searchLocked returns the index (≥ head) of the first log whose id is
// greater than id (strict) or greater or equal (!strict). Ids compare as
// fixed-length digit strings; a shorter `from` compares as a prefix.
func (a *Auth0) searchLocked(id string, strict bool) int {
	live := a.entries[a.head:]
	return a.head + sort.Search(len(live), func(i int) bool {
		c := bytes.Compare(live[i].id(), []byte(id))
		if strict {
			return c > 0
		}
		return c >= 0
	})
}

func isDigits(s string) bool { return strings.Trim(s, "0123456789") == "" }

// ---- responses ----

// writeAuth0Error writes Auth0's Management API error shape.
func writeAuth0Error(w http.ResponseWriter, status int, message, errorCode string) {
	body := map[string]any{"statusCode": status, "error": http.StatusText(status), "message": message}
	if errorCode != "" {
		body["errorCode"] = errorCode
	}
	writeJSON(w, status, body)
}

// writeOAuthError writes the Authentication API's (RFC 6749) error shape.
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // maps of strings and numbers always encode
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = cmp.Or(s.status, code)
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.status = cmp.Or(s.status, http.StatusOK)
	return s.ResponseWriter.Write(b)
}
