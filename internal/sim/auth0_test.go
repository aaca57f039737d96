package sim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/auth0/go-auth0/management"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
)

const (
	testClientID     = "sim-client"
	testClientSecret = "s3cret/with+odd&chars"
)

var epoch = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

func newAuth0(t *testing.T, opts sim.Auth0Options) (*sim.Auth0, *httptest.Server) {
	t.Helper()
	if opts.ClientID == "" {
		opts.ClientID, opts.ClientSecret = testClientID, testClientSecret
	}
	a := sim.NewAuth0(opts)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv
}

// newManagement returns the real go-auth0 client, configured as authpipe does.
func newManagement(t *testing.T, srv *httptest.Server, secret string, opts ...management.Option) *management.Management {
	t.Helper()
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: 5 * time.Second})
	host := strings.TrimPrefix(srv.URL, "http://")
	all := append([]management.Option{
		management.WithInsecure(),
		management.WithClientCredentials(ctx, testClientID, secret),
	}, opts...)
	m, err := management.New(host, all...)
	require.NoError(t, err)
	return m
}

// pollAll pages through every log with the real client in checkpoint mode.
func pollAll(t *testing.T, m *management.Management, from string) []auth0log.Log {
	t.Helper()
	var all []auth0log.Log
	for range 10_000 {
		var raws []json.RawMessage
		err := m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws,
			management.From(from), management.Take(100))
		require.NoError(t, err)
		if len(raws) == 0 {
			return all
		}
		require.LessOrEqual(t, len(raws), 100)
		logs := make([]auth0log.Log, len(raws))
		for i, raw := range raws {
			logs[i], err = auth0log.Decode(raw)
			require.NoError(t, err)
		}
		all = append(all, logs...)
		from = logs[len(logs)-1].ID
	}
	t.Fatal("paging did not end")
	return nil
}

func TestAuth0PagingWithGoAuth0(t *testing.T) {
	a, srv := newAuth0(t, sim.Auth0Options{})
	events := sim.GenerateEvents(rand.New(rand.NewPCG(1, 2)), 5000, time.Now().Add(-time.Hour), 500*time.Millisecond)
	ids := a.Add(events...)
	require.Len(t, ids, 5000)

	m := newManagement(t, srv, testClientSecret)
	logs := pollAll(t, m, "")
	require.Len(t, logs, len(ids))
	seen := map[string]bool{}
	for i, l := range logs {
		require.Equal(t, ids[i], l.ID, "log %d out of order or missing", i)
		require.False(t, seen[l.ID], "duplicate %s", l.ID)
		seen[l.ID] = true
		require.Equal(t, events[i].Type, l.Type)
		require.True(t, events[i].Date.Truncate(time.Millisecond).Equal(l.Date))
	}
	require.Equal(t, ids, a.LogIDs())

	// Resuming from a checkpoint in the middle returns exactly the rest.
	rest := pollAll(t, m, ids[2999])
	require.Len(t, rest, 2000)
	require.Equal(t, ids[3000], rest[0].ID)

	// New events after the last page are picked up from the checkpoint.
	more := a.Add(sim.Event{Type: "s", UserID: "auth0|1"}, sim.Event{Type: "fu"})
	tail := pollAll(t, m, ids[len(ids)-1])
	require.Len(t, tail, 2)
	require.Equal(t, more[0], tail[0].ID)

	st := a.Stats()
	require.Equal(t, 5002+2000, st.EventsServed)
	require.Positive(t, st.TokenRequests)
	require.Equal(t, st.LogRequests+st.TokenRequests, st.Status[http.StatusOK])
}

func TestAuth0LogIDs(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	a, _ := newAuth0(t, sim.Auth0Options{Clock: clock})
	dates := []time.Time{
		epoch.Add(-time.Hour),
		epoch.Add(-time.Hour).Add(300 * time.Millisecond), // same second
		epoch.Add(-2 * time.Hour),                         // arrives late: id keeps ascending
		epoch.Add(-30 * time.Minute),
	}
	var evs []sim.Event
	for _, d := range dates {
		evs = append(evs, sim.Event{Type: "s", Date: d})
	}
	ids := a.Add(evs...)
	for i, id := range ids {
		require.NoError(t, auth0log.ValidateID(id))
		require.Len(t, id, 56)
		require.True(t, strings.HasPrefix(id, "900"))
		if i > 0 {
			require.Less(t, ids[i-1], id)
		}
	}
	wantTimes := []time.Time{
		epoch.Add(-time.Hour + 2*time.Second),
		epoch.Add(-time.Hour + 2*time.Second),
		epoch.Add(-time.Hour + 2*time.Second), // not before the previous id's time
		epoch.Add(-30*time.Minute + 2*time.Second),
	}
	for i, id := range ids {
		got, err := auth0log.IDTime(id)
		require.NoError(t, err)
		require.Equal(t, wantTimes[i], got, "id %d", i)
	}
	// A zero date means now.
	id := a.Add(sim.Event{Type: "s"})[0]
	raw, ok := a.Log(id)
	require.True(t, ok)
	l, err := auth0log.Decode(raw)
	require.NoError(t, err)
	require.Equal(t, epoch, l.Date)
}

func TestAuth0EventFields(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	a, _ := newAuth0(t, sim.Auth0Options{Clock: clock, Tenant: "acme"})
	ids := a.Add(
		sim.Event{Type: "s", UserID: "auth0|abc", UserName: "a@example.com", IP: "203.0.113.9",
			UserAgent: "Mobile Safari 17.2.0 / iOS 17.2.1", ClientID: "cid", ClientName: "App",
			Connection: "Username-Password-Authentication", Date: epoch.Add(-time.Minute),
			Details: map[string]any{"prompts": []any{map[string]any{"name": "login", "ok": true}}, "n": 3,
				"f": 1.5, "nested": map[string]any{"a": "x<y \"q\" é", "b": nil}, "list": []string{"q"}}},
		sim.Event{Type: "fu", UserName: "nobody@example.com", Connection: "google-oauth2",
			Date: epoch.Add(-time.Minute), Description: "Wrong email or password.",
			Extra: map[string]any{"security_context": map[string]any{"ja3": "x"}, "tenant_name": "override", "log_id": "ignored"}},
	)
	decode := func(id string) map[string]any {
		raw, ok := a.Log(id)
		require.True(t, ok)
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		return m
	}
	s := decode(ids[0])
	for _, k := range []string{"log_id", "date", "type", "description", "connection", "connection_id",
		"client_id", "client_name", "ip", "user_agent", "user_id", "user_name", "hostname", "strategy",
		"strategy_type", "isMobile", "details", "audience", "scope", "tenant_name"} {
		require.Contains(t, s, k)
	}
	require.Equal(t, ids[0], s["log_id"])
	require.Equal(t, "2025-03-10T11:59:00.000Z", s["date"])
	info, _ := auth0log.LookupType("s")
	require.Equal(t, info.Description, s["description"])
	require.Equal(t, "auth0", s["strategy"])
	require.Equal(t, "database", s["strategy_type"])
	require.Equal(t, true, s["isMobile"])
	require.Equal(t, "acme", s["tenant_name"])
	require.Equal(t, "acme.us.auth0.com", s["hostname"])
	require.Regexp(t, `^con_[0-9A-Za-z]{16}$`, s["connection_id"])
	details, err := json.Marshal(s["details"])
	require.NoError(t, err)
	require.JSONEq(t, `{"prompts":[{"name":"login","ok":true}],"n":3,"f":1.5,
		"nested":{"a":"x<y \"q\" é","b":null},"list":["q"]}`, string(details))

	f := decode(ids[1])
	require.Equal(t, "", f["user_id"])
	require.Equal(t, "Wrong email or password.", f["description"])
	require.Equal(t, "social", f["strategy_type"])
	require.Equal(t, "override", f["tenant_name"])
	require.Equal(t, ids[1], f["log_id"])
	require.Equal(t, map[string]any{"ja3": "x"}, f["security_context"])
	require.NotContains(t, f, "audience")
}

func TestAuth0GenerateEvents(t *testing.T) {
	evs := sim.GenerateEvents(rand.New(rand.NewPCG(7, 7)), 20_000, epoch, time.Second)
	require.Len(t, evs, 20_000)
	types := map[string]int{}
	for i, e := range evs {
		types[e.Type]++
		require.Equal(t, epoch.Add(time.Duration(i)*time.Second), e.Date)
		if e.Type == "fu" {
			require.Empty(t, e.UserID)
		}
	}
	for _, code := range []string{"s", "f", "fp", "fu", "ss", "seacft", "sepft", "slo", "fsa"} {
		require.Positive(t, types[code], code)
	}
	again := sim.GenerateEvents(rand.New(rand.NewPCG(7, 7)), 20_000, epoch, time.Second)
	require.Equal(t, evs, again)
}

// GenerateLogs gives GenerateEvents' events, decoded, in log_id order, each
// dated and typed as its event.
func TestAuth0GenerateLogs(t *testing.T) {
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	evs := sim.GenerateEvents(rand.New(rand.NewPCG(7, 7)), 500, start, time.Second)
	logs, err := sim.GenerateLogs(rand.New(rand.NewPCG(7, 7)), 500, start, time.Second)
	require.NoError(t, err)
	require.Len(t, logs, 500)
	for i, l := range logs {
		require.True(t, evs[i].Date.Equal(l.Date), "log %d", i)
		require.Equal(t, evs[i].Type, l.Type)
		if i > 0 {
			require.Less(t, logs[i-1].ID, l.ID)
		}
	}
}

// get sends GET /api/v2/logs with a fresh token.
func get(t *testing.T, srv *httptest.Server, token, query string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/v2/logs?"+query, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, body
}

func token(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	res, body := postToken(t, srv, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClientID},
		"client_secret": {testClientSecret}, "audience": {srv.URL + "/api/v2/"},
	}, false)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.Unmarshal(body, &tok))
	return tok.AccessToken
}

func postToken(t *testing.T, srv *httptest.Server, form url.Values, basic bool) (*http.Response, []byte) {
	t.Helper()
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if basic {
		form.Del("client_id")
		form.Del("client_secret")
	}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/oauth/token", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, body
}

func TestAuth0Token(t *testing.T) {
	a, srv := newAuth0(t, sim.Auth0Options{TokenTTL: time.Hour})
	good := func() url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID},
			"client_secret": {testClientSecret}, "audience": {srv.URL + "/api/v2/"}}
	}
	with := func(k, v string) url.Values { f := good(); f.Set(k, v); return f }
	tests := []struct {
		name     string
		form     url.Values
		basic    bool
		wantCode int
		wantBody string
	}{
		{"form fields", good(), false, 200, ""},
		{"basic auth", good(), true, 200, ""},
		{"wrong secret", with("client_secret", "nope"), false, 401, `{"error":"access_denied","error_description":"Unauthorized"}`},
		{"wrong secret basic", with("client_secret", "nope"), true, 401, `{"error":"access_denied","error_description":"Unauthorized"}`},
		{"wrong client", with("client_id", "other"), false, 401, `{"error":"access_denied","error_description":"Unauthorized"}`},
		{"https audience", with("audience", strings.Replace(srv.URL, "http:", "https:", 1)+"/api/v2/"), false, 403, ""},
		{"wrong grant", with("grant_type", "password"), false, 403, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, body := postToken(t, srv, tc.form, tc.basic)
			require.Equal(t, tc.wantCode, res.StatusCode, string(body))
			if tc.wantBody != "" {
				require.JSONEq(t, tc.wantBody, string(body))
			}
			if tc.wantCode == 200 {
				var tok map[string]any
				require.NoError(t, json.Unmarshal(body, &tok))
				require.Equal(t, "Bearer", tok["token_type"])
				require.Equal(t, float64(3600), tok["expires_in"])
				require.NotEmpty(t, tok["access_token"])
				require.Equal(t, "read:logs read:logs_users", tok["scope"], "the grant's scopes, space-separated")
			}
		})
	}

	t.Run("bad tokens on logs", func(t *testing.T) {
		for _, tok := range []string{"", "made-up"} {
			res, body := get(t, srv, tok, "from=&take=10")
			require.Equal(t, http.StatusUnauthorized, res.StatusCode)
			require.JSONEq(t, `{"statusCode":401,"error":"Unauthorized","message":"Invalid token"}`, string(body))
		}
		tok := token(t, srv)
		res, _ := get(t, srv, tok, "take=10")
		require.Equal(t, http.StatusOK, res.StatusCode)
		a.RevokeTokens()
		res, _ = get(t, srv, tok, "take=10")
		require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	})

	t.Run("grant without read:logs", func(t *testing.T) {
		a.SetScopes("read:users", "read:clients")
		defer a.SetScopes(sim.DefaultScopes...)
		res, body := postToken(t, srv, good(), false)
		require.Equal(t, http.StatusOK, res.StatusCode)
		var tok struct {
			AccessToken string `json:"access_token"`
			Scope       string `json:"scope"`
		}
		require.NoError(t, json.Unmarshal(body, &tok))
		require.Equal(t, "read:users read:clients", tok.Scope)
		res, body = get(t, srv, tok.AccessToken, "take=1")
		require.Equal(t, http.StatusForbidden, res.StatusCode)
		require.JSONEq(t, `{"statusCode":403,"error":"Forbidden","message":"Insufficient scope, expected any of: read:logs,read:logs_users","errorCode":"insufficient_scope"}`, string(body))

		// read:logs_users alone is enough for GET /api/v2/logs.
		a.SetScopes("read:logs_users")
		res, _ = get(t, srv, token(t, srv), "take=1")
		require.Equal(t, http.StatusOK, res.StatusCode)
	})

	t.Run("go-auth0 wrong secret", func(t *testing.T) {
		m := newManagement(t, srv, "wrong", management.WithNoRetries())
		var raws []json.RawMessage
		err := m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.From(""), management.Take(10))
		var re *oauth2.RetrieveError
		require.ErrorAs(t, err, &re)
		require.Equal(t, http.StatusUnauthorized, re.Response.StatusCode)
		require.Equal(t, "access_denied", re.ErrorCode)
	})

	t.Run("token endpoint failing", func(t *testing.T) {
		before := a.Stats().TokenRequests
		a.FailTokenNext(2) // oauth2 probes Basic, then form fields
		// go-auth0's retry layer also retries token errors (after ≥ 1 s): off here.
		m := newManagement(t, srv, testClientSecret, management.WithNoRetries())
		var raws []json.RawMessage
		err := m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.Take(10))
		var re *oauth2.RetrieveError
		require.ErrorAs(t, err, &re)
		require.Equal(t, http.StatusInternalServerError, re.Response.StatusCode)
		require.Equal(t, 2, a.Stats().TokenRequests-before)
		require.Equal(t, 2, a.Stats().TokenFailed)
		// Recovered: the same client fetches a token on its next call.
		require.NoError(t, m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.Take(10)))
	})
}

func TestAuth0RateLimit(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	a, srv := newAuth0(t, sim.Auth0Options{Clock: clock, Burst: 3, PerMinute: 60})
	a.Add(sim.Event{Type: "s", Date: epoch.Add(-time.Minute)})
	tok := token(t, srv)

	check := func(wantCode int, remaining string, reset time.Time) []byte {
		t.Helper()
		res, body := get(t, srv, tok, "from=&take=5")
		require.Equal(t, wantCode, res.StatusCode, string(body))
		require.Equal(t, "3", res.Header.Get("X-Ratelimit-Limit"))
		require.Equal(t, remaining, res.Header.Get("X-Ratelimit-Remaining"))
		require.Equal(t, strconv.FormatInt(reset.Unix(), 10), res.Header.Get("X-Ratelimit-Reset"))
		return body
	}
	check(200, "2", epoch.Add(time.Second))
	check(200, "1", epoch.Add(time.Second))
	check(200, "0", epoch.Add(time.Second))
	body := check(429, "0", epoch.Add(time.Second))
	require.JSONEq(t, `{"statusCode":429,"error":"Too Many Requests","message":"Global limit has been reached","errorCode":"too_many_requests"}`, string(body))
	require.Equal(t, 1, a.Stats().RateLimited)

	clock.Advance(1500 * time.Millisecond) // 1.5 tokens back
	check(200, "0", epoch.Add(2*time.Second))
	check(429, "0", epoch.Add(2*time.Second))
	clock.Advance(time.Minute)                 // full again
	check(200, "2", epoch.Add(63*time.Second)) // next token at 62.5 s, rounded up

	// Errors carry the headers too.
	res, _ := get(t, srv, "bogus", "take=5")
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Equal(t, "1", res.Header.Get("X-Ratelimit-Remaining"))

	// The real client sees a management.Error with status 429 once its
	// retries are spent (retries disabled here to keep the test fast).
	a.SetRateLimit(1, 0)
	m := newManagement(t, srv, testClientSecret, management.WithNoRetries())
	var raws []json.RawMessage
	require.NoError(t, m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.Take(5)))
	err := m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.Take(5))
	var me management.Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, http.StatusTooManyRequests, me.Status())

	// Unlimited still answers with headers.
	a.SetRateLimit(0, 0)
	for range 20 {
		res, _ := get(t, srv, tok, "take=5")
		require.Equal(t, http.StatusOK, res.StatusCode)
		require.NotEmpty(t, res.Header.Get("X-Ratelimit-Remaining"))
	}
}

func TestAuth0Retention(t *testing.T) {
	clock := clockwork.NewFakeClockAt(epoch)
	a, srv := newAuth0(t, sim.Auth0Options{Clock: clock, Retention: 144 * time.Hour})
	// One event per hour over 8 days: the first two days are past retention.
	var evs []sim.Event
	for h := 8 * 24; h > 0; h-- {
		evs = append(evs, sim.Event{Type: "s", Date: epoch.Add(-time.Duration(h) * time.Hour)})
	}
	ids := a.Add(evs...)
	retained := a.LogIDs()
	require.Len(t, retained, 6*24)
	require.Equal(t, ids[2*24:], retained)

	m := newManagement(t, srv, testClientSecret)
	// From the very first id (deleted): no error, the oldest retained logs.
	logs := pollAll(t, m, ids[0])
	require.Len(t, logs, 6*24)
	require.Equal(t, ids[2*24], logs[0].ID)
	// A synthetic checkpoint older than retention behaves the same.
	logs = pollAll(t, m, auth0log.CheckpointAt(epoch.Add(-30*24*time.Hour)))
	require.Equal(t, ids[2*24], logs[0].ID)

	// A day later another day is gone.
	clock.Advance(24 * time.Hour)
	require.Len(t, a.LogIDs(), 5*24)
	logs = pollAll(t, m, "")
	require.Len(t, logs, 5*24)
	require.Equal(t, ids[3*24], logs[0].ID)
	_, ok := a.Log(ids[0])
	require.False(t, ok)

	// A late event dated before the cutoff is never served.
	late := a.Add(sim.Event{Type: "fp", Date: clock.Now().Add(-200 * time.Hour)})
	logs = pollAll(t, m, ids[len(ids)-1])
	require.Empty(t, logs)
	require.NotContains(t, a.LogIDs(), late[0])
	require.Equal(t, 5*24, a.Len())
}

func TestAuth0CheckpointMode(t *testing.T) {
	a, srv := newAuth0(t, sim.Auth0Options{})
	ids := a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(3, 4)), 120, time.Now().Add(-time.Hour), time.Second)...)
	tok := token(t, srv)

	tests := []struct {
		name     string
		query    string
		wantCode int
		wantN    int
		wantNext string // from= of the Link header
	}{
		{"default take", "from=", 200, 50, ids[49]},
		{"take only", "take=7", 200, 7, ids[6]},
		{"from and take", "from=" + ids[9] + "&take=100", 200, 100, ids[109]},
		{"other params ignored", "from=" + ids[9] + "&take=5&page=3&per_page=2&q=type:s&sort=date:-1", 200, 5, ids[14]},
		{"end of logs", "from=" + ids[119] + "&take=100", 200, 0, ids[119]},
		{"take 100 ok", "take=100", 200, 100, ids[99]},
		{"take 101", "take=101", 400, 0, ""},
		{"take 0", "take=0", 400, 0, ""},
		{"take text", "take=ten", 400, 0, ""},
		{"from not digits", "from=abc", 400, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, srv, tok, tc.query)
			require.Equal(t, tc.wantCode, res.StatusCode, string(body))
			if tc.wantCode != 200 {
				var e map[string]any
				require.NoError(t, json.Unmarshal(body, &e))
				require.Equal(t, float64(tc.wantCode), e["statusCode"])
				require.Equal(t, http.StatusText(tc.wantCode), e["error"])
				require.NotEmpty(t, e["message"])
				return
			}
			logs, err := auth0log.DecodePage(body)
			require.NoError(t, err)
			require.Len(t, logs, tc.wantN)
			if tc.wantN == 0 {
				require.Equal(t, "[]", string(body))
			}
			link := res.Header.Get("Link")
			require.Regexp(t, `^<http://[^>]+/api/v2/logs\?[^>]+>; rel="next"$`, link)
			u, err := url.Parse(strings.TrimPrefix(strings.Split(link, ">")[0], "<"))
			require.NoError(t, err)
			require.Equal(t, tc.wantNext, u.Query().Get("from"))
		})
	}
}

func TestAuth0PageMode(t *testing.T) {
	a, srv := newAuth0(t, sim.Auth0Options{})
	ids := a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(5, 6)), 1500, time.Now().Add(-time.Hour), time.Second)...)
	tok := token(t, srv)

	res, body := get(t, srv, tok, "page=9&per_page=100")
	require.Equal(t, 200, res.StatusCode)
	logs, err := auth0log.DecodePage(body)
	require.NoError(t, err)
	require.Len(t, logs, 100)
	require.Equal(t, ids[len(ids)-901], logs[0].ID, "newest first by default")

	res, body = get(t, srv, tok, "page=10&per_page=100")
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.JSONEq(t, `{"statusCode":400,"error":"Bad Request","message":"Requesting page 10 exceeds the allowed maximum of 1000 records. To fetch results beyond 1000, use the checkpoint pagination method."}`, string(body))

	res, _ = get(t, srv, tok, "page=19&per_page=50")
	require.Equal(t, http.StatusOK, res.StatusCode)
	res, _ = get(t, srv, tok, "page=20&per_page=50")
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	res, _ = get(t, srv, tok, "page=0&per_page=101")
	require.Equal(t, http.StatusBadRequest, res.StatusCode)

	res, body = get(t, srv, tok, "page=1&per_page=10&sort=date:1")
	require.Equal(t, 200, res.StatusCode)
	logs, err = auth0log.DecodePage(body)
	require.NoError(t, err)
	require.Equal(t, ids[10], logs[0].ID)

	res, body = get(t, srv, tok, "page=0&per_page=5&include_totals=true")
	require.Equal(t, 200, res.StatusCode)
	var totals struct {
		Start, Limit, Length, Total int
		Logs                        []json.RawMessage
	}
	require.NoError(t, json.Unmarshal(body, &totals))
	require.Equal(t, 5, totals.Length)
	require.Equal(t, 1500, totals.Total)
	require.Len(t, totals.Logs, 5)
}

func TestAuth0Faults(t *testing.T) {
	a, srv := newAuth0(t, sim.Auth0Options{})
	ids := a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(8, 9)), 30, time.Now().Add(-time.Hour), time.Second)...)
	tok := token(t, srv)

	t.Run("fail every n", func(t *testing.T) {
		a.FailEveryN(3, http.StatusServiceUnavailable)
		var codes []int
		for range 7 {
			res, body := get(t, srv, tok, "take=5")
			codes = append(codes, res.StatusCode)
			if res.StatusCode != 200 {
				require.JSONEq(t, `{"statusCode":503,"error":"Service Unavailable","message":"Simulated failure"}`, string(body))
			}
		}
		require.Equal(t, []int{200, 200, 503, 200, 200, 503, 200}, codes)
		require.Equal(t, 2, a.Stats().Failed)
		a.FailEveryN(0, 0)
		res, _ := get(t, srv, tok, "take=5")
		require.Equal(t, 200, res.StatusCode)
	})

	t.Run("go-auth0 sees the error", func(t *testing.T) {
		a.FailEveryN(1, http.StatusInternalServerError)
		defer a.FailEveryN(0, 0)
		m := newManagement(t, srv, testClientSecret)
		var raws []json.RawMessage
		err := m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.Take(5))
		var me management.Error
		require.ErrorAs(t, err, &me)
		require.Equal(t, http.StatusInternalServerError, me.Status())
	})

	t.Run("malformed", func(t *testing.T) {
		a.MalformedNext(2)
		for range 2 {
			res, body := get(t, srv, tok, "from="+ids[3]+"&take=10")
			require.Equal(t, 200, res.StatusCode)
			_, err := auth0log.DecodePage(body)
			require.Error(t, err)
		}
		_, body := get(t, srv, tok, "from="+ids[3]+"&take=10")
		logs, err := auth0log.DecodePage(body)
		require.NoError(t, err)
		require.Equal(t, ids[4], logs[0].ID)

		a.MalformedNext(1)
		m := newManagement(t, srv, testClientSecret)
		var raws []json.RawMessage
		err = m.Request(context.Background(), http.MethodGet, m.URI("logs"), &raws, management.Take(5))
		require.Error(t, err)
		var me management.Error
		require.False(t, errors.As(err, &me), "a 200 with bad JSON is not an API error: %v", err)
	})
}

func TestAuth0NotFound(t *testing.T) {
	a, srv := newAuth0(t, sim.Auth0Options{})
	id := a.Add(sim.Event{Type: "s"})[0]
	tok := token(t, srv)
	res, err := srv.Client().Get(srv.URL + "/api/v2/users")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)

	res2, body := get(t, srv, tok, "")
	require.Equal(t, 200, res2.StatusCode)
	require.Contains(t, string(body), id)

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v2/logs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err = srv.Client().Do(req)
	require.NoError(t, err)
	one, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	l, err := auth0log.Decode(one)
	require.NoError(t, err)
	require.Equal(t, id, l.ID)
}

func BenchmarkAuth0Add(b *testing.B) {
	a := sim.NewAuth0(sim.Auth0Options{})
	evs := sim.GenerateEvents(rand.New(rand.NewPCG(1, 1)), 10_000, time.Now().Add(-time.Hour), time.Millisecond)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Add(evs[i%len(evs)])
	}
}

func BenchmarkAuth0Page(b *testing.B) {
	a := sim.NewAuth0(sim.Auth0Options{ClientID: "c", ClientSecret: "s"})
	ids := a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(1, 1)), 200_000, time.Now().Add(-time.Hour), 10*time.Millisecond)...)
	srv := httptest.NewServer(a)
	defer srv.Close()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "audience": {srv.URL + "/api/v2/"}}
	res, err := http.PostForm(srv.URL+"/oauth/token", form)
	if err != nil {
		b.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v2/logs?from=%s&take=100", srv.URL, ids[(i*100)%len(ids)]), nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		res, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}
