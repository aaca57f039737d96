package auth0stream_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// TestEachFormatStoresEveryRecord: a push in each content format, to the
// single tenant's two paths, is answered 200 once every record is in the
// buffer, in body order, with the event exactly as pushed, and the
// checkpoint stays where it was (nowhere: nothing was polled).
func TestEachFormatStoresEveryRecord(t *testing.T) {
	for _, be := range backends {
		for _, format := range sim.StreamFormats {
			t.Run(be.name+"/"+string(format), func(t *testing.T) {
				b := be.open(t, buffer.Config{})
				f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
				logs := f.events(7)

				status, msg := f.push(format, logs[:4])
				require.Equal(t, http.StatusOK, status, msg)
				require.JSONEq(t, `{"records":4,"new":4}`, msg)
				status, msg = f.post(auth0stream.PathPrefix+"/acme", token, sim.StreamBody(format, logs[4:]))
				require.Equal(t, http.StatusOK, status, msg)

				entries := stored(t, b)
				require.Len(t, entries, len(logs))
				for i, e := range entries {
					require.Equal(t, logs[i].ID, e.LogID)
					require.Equal(t, string(logs[i].JSON), string(e.Raw))
				}
				cp, err := b.Checkpoint(t.Context())
				require.NoError(t, err)
				require.Empty(t, cp, "a push moved the poller's checkpoint")

				c := f.lastCommit()
				require.Equal(t, "acme", c.Tenant)
				require.Equal(t, 3, c.Records)
				require.Equal(t, 3, c.Added)
				require.Equal(t, []bool{true, true, true}, c.New)
				require.Zero(t, c.Uncertain)
				require.Equal(t, ids(logs[4:]), ids(rawLogs(c)))
				require.Equal(t, 7.0, f.eventsCounted("acme", auth0stream.OutcomeNew))
				require.Equal(t, 2.0, f.requests("acme", auth0stream.OutcomeOK, 200))
			})
		}
	}
}

func rawLogs(c auth0stream.Commit) []sim.RawLog {
	out := make([]sim.RawLog, len(c.Logs))
	for i, l := range c.Logs {
		out[i] = sim.RawLog{ID: l.ID, JSON: l.Raw}
	}
	return out
}

// TestDedupeWithPolledEvents: pushed logs are deduplicated by log_id with
// those the poller appended (with its checkpoint) and with earlier pushes,
// in either order; only the poller moves the checkpoint; the commit says
// which logs the stream delivered first.
func TestDedupeWithPolledEvents(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := t.Context()
			b := be.open(t, buffer.Config{})
			f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
			logs := f.events(6)

			// The poller got there first for logs 0-2.
			added, err := b.Append(ctx, decode(t, logs[:3]), logs[2].ID)
			require.NoError(t, err)
			require.Equal(t, 3, added)

			status, msg := f.push(sim.StreamJSONArray, logs[1:5])
			require.Equal(t, http.StatusOK, status, msg)
			require.JSONEq(t, `{"records":4,"new":2}`, msg)
			c := f.lastCommit()
			require.Equal(t, []bool{false, false, true, true}, c.New)
			require.Equal(t, 2, c.Added)
			require.Zero(t, c.Uncertain)

			// Auth0 delivers the same batch again (at least once).
			status, msg = f.push(sim.StreamJSONLines, logs[1:5])
			require.Equal(t, http.StatusOK, status, msg)
			require.JSONEq(t, `{"records":4,"new":0}`, msg)
			require.Equal(t, []bool{false, false, false, false}, f.lastCommit().New)

			// A log_id twice in one request is stored once.
			status, msg = f.push(sim.StreamJSONObject, []sim.RawLog{logs[5], logs[5]})
			require.Equal(t, http.StatusOK, status, msg)
			require.JSONEq(t, `{"records":2,"new":1}`, msg)
			require.Len(t, f.lastCommit().Logs, 1)

			// The poller reaches the pushed logs later: nothing new for it,
			// and its checkpoint moves as before.
			added, err = b.Append(ctx, decode(t, logs[3:6]), logs[5].ID)
			require.NoError(t, err)
			require.Zero(t, added)

			require.Equal(t, ids(logs), storedIDs(t, b))
			cp, err := b.Checkpoint(ctx)
			require.NoError(t, err)
			require.Equal(t, logs[5].ID, cp)
			require.Equal(t, 3.0, f.eventsCounted("acme", auth0stream.OutcomeNew))
			require.Equal(t, 2.0+4+1, f.eventsCounted("acme", auth0stream.OutcomeDuplicate))
		})
	}
}

// TestCheckpointUnchanged: pushes of logs after and before the poller's
// checkpoint leave it exactly as the poller set it.
func TestCheckpointUnchanged(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := t.Context()
			b := be.open(t, buffer.Config{})
			f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
			logs := f.events(5)
			_, err := b.Append(ctx, decode(t, logs[1:3]), logs[2].ID)
			require.NoError(t, err)

			for _, batch := range [][]sim.RawLog{logs[3:], logs[:1]} { // after it, before it
				status, msg := f.push(sim.StreamJSONLines, batch)
				require.Equal(t, http.StatusOK, status, msg)
				cp, err := b.Checkpoint(ctx)
				require.NoError(t, err)
				require.Equal(t, logs[2].ID, cp)
			}
			require.ElementsMatch(t, ids(logs), storedIDs(t, b))
		})
	}
}

// TestWrongOrMissingToken: only the tenant's token, verbatim and alone,
// gets in; everything else is 401, the body unread and nothing stored.
func TestWrongOrMissingToken(t *testing.T) {
	b := backends[0].open(t, buffer.Config{})
	other := backends[1].open(t, buffer.Config{})
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b),
		auth0stream.Tenant{Name: "beta", Token: "Bearer beta-token-0123456789", Buffer: other})
	logs := f.events(2)
	body := sim.StreamBody(sim.StreamJSONLines, logs)

	cases := map[string][]string{
		"missing":               nil,
		"empty":                 {""},
		"wrong":                 {"Bearer wrong"},
		"different case":        {strings.ToLower(token)},
		"inner space doubled":   {strings.Replace(token, " ", "  ", 1)},
		"prefix of the token":   {token[:len(token)-1]},
		"token without Bearer":  {strings.TrimPrefix(token, "Bearer ")},
		"another tenant's":      {"Bearer beta-token-0123456789"},
		"twice":                 {token, token},
		"token and another one": {token, "Bearer wrong"},
	}
	n := 0.0
	for name, headers := range cases {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.srv.URL+"/auth0/logs/acme", strings.NewReader(string(body)))
			require.NoError(t, err)
			for _, h := range headers {
				req.Header.Add("Authorization", h)
			}
			resp, err := f.srv.Client().Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			n++
			require.Equal(t, n, f.requests("acme", auth0stream.OutcomeUnauthorized, 401))
		})
	}
	// Garbage with a wrong token is 401, not 400: the body is not read.
	status, _ := f.post("/auth0/logs/acme", "Bearer wrong", []byte("garbage"))
	require.Equal(t, http.StatusUnauthorized, status)
	requireNothingStored(t, b, logs)
	requireNothingStored(t, other, logs)
	require.Zero(t, f.commitCount())
}

// TestBadBodyStoresNothing: a body that does not parse, or with one bad
// record among good ones, is answered 400 naming the first bad record and
// why, and nothing of the request is stored.
func TestBadBodyStoresNothing(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t, buffer.Config{})
			f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
			logs := f.events(3)
			rec := func(i int) string {
				return fmt.Sprintf(`{"log_id":%q,"data":%s}`, logs[i].ID, logs[i].JSON)
			}
			noDate := strings.Replace(string(logs[1].JSON), `"date":`, `"dated":`, 1)
			cases := []struct{ name, body, want string }{
				{"garbage", "garbage", `body is not JSON Lines, a JSON array or a JSON object: it starts with \"g\"`},
				{"empty", "  \n", "empty body"},
				{"truncated array", "[" + rec(0) + "," + rec(1), "body is not a valid JSON array: invalid JSON at or after record 2"},
				{"no log_id", "[" + rec(0) + "," + rec(1) + `,{"data":` + string(logs[2].JSON) + "}]", "record 2: missing log_id"},
				{"no data", rec(0) + "\n" + fmt.Sprintf(`{"log_id":%q}`, logs[1].ID) + "\n", fmt.Sprintf("record 1 (log_id %s): missing data", logs[1].ID)},
				{"data null", fmt.Sprintf(`{"logs":[%s,{"log_id":%q,"data":null}]}`, rec(0), logs[1].ID), "record 1 (log_id " + logs[1].ID + "): missing data"},
				{"invalid event", fmt.Sprintf(`[%s,{"log_id":%q,"data":%s}]`, rec(0), logs[1].ID, noDate), "record 1 (log_id " + logs[1].ID + "): data: log " + logs[1].ID + ": missing date"},
				{"log_ids differ", fmt.Sprintf(`[%s,{"log_id":%q,"data":%s}]`, rec(0), logs[2].ID, logs[1].JSON), "record 1 (log_id " + logs[2].ID + "): log_id differs from data.log_id " + logs[1].ID},
				{"not a log_id", `[{"log_id":"42","data":` + string(logs[0].JSON) + `}]`, `record 0: log_id \"42\": want 56 digits`},
				{"log_id a number", `[{"log_id":42,"data":` + string(logs[0].JSON) + `}]`, "record 0: log_id is not a string"},
				{"bad line", rec(0) + "\n{not json}\n" + rec(2), "record 1: line 2 is not valid JSON"},
				{"record not an object", "[" + rec(0) + `,"x"]`, "record 1: not a JSON object"},
				{"log_id twice", `{"log_id":"1","log_id":"2","data":{}}` + "\n" + rec(0), "record 0: log_id is given twice"},
				{"logs not an array", `{"logs":{}}`, `\"logs\" of a JSONOBJECT body must be an array of records`},
				{"logs and a record", `{"logs":[],"log_id":"x"}`, `body has both \"logs\"`},
			}
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					status, msg := f.post(auth0stream.PathPrefix, token, []byte(tc.body))
					require.Equal(t, http.StatusBadRequest, status, msg)
					require.Contains(t, msg, tc.want)
					require.Contains(t, msg, "nothing of this request stored")
					requireNothingStored(t, b, logs)
					require.Equal(t, float64(i+1), f.requests("acme", auth0stream.OutcomeBadRequest, 400))
				})
			}
			require.Zero(t, f.commitCount())
			status, msg := f.push(sim.StreamJSONLines, logs)
			require.Equal(t, http.StatusOK, status, msg)
		})
	}
}

// TestOversizeBody: a body over MaxBodyBytes is answered 413 and nothing
// is stored; one at the limit is taken.
func TestOversizeBody(t *testing.T) {
	const limit = 4096
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			b := be.open(t, buffer.Config{})
			f := newFixture(t, auth0stream.Config{MaxBodyBytes: limit}, tenant("acme", b))
			logs := f.events(1)
			body := sim.StreamBody(sim.StreamJSONLines, logs)
			require.Less(t, len(body), limit)
			over := append(append([]byte{}, body...), strings.Repeat(" ", limit+1-len(body))...)

			status, msg := f.post(auth0stream.PathPrefix, token, over)
			require.Equal(t, http.StatusRequestEntityTooLarge, status, msg)
			require.Contains(t, msg, "request body over 4096 bytes: nothing stored")

			// Without a Content-Length (chunked) the bound is found reading.
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.srv.URL+auth0stream.PathPrefix,
				io.MultiReader(bytes.NewReader(over)))
			require.NoError(t, err)
			req.Header.Set("Authorization", token)
			resp, err := f.srv.Client().Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
			require.Zero(t, req.ContentLength) // unknown: sent chunked

			requireNothingStored(t, b, logs)
			require.Equal(t, 2.0, f.requests("acme", auth0stream.OutcomeTooLarge, 413))

			status, msg = f.post(auth0stream.PathPrefix, token, over[:limit])
			require.Equal(t, http.StatusOK, status, msg)
			require.Equal(t, ids(logs), storedIDs(t, b))
		})
	}
}

// TestBufferFullThenRetry: while the buffer is full the answer is 503 and
// nothing is stored; once the forwarder drained it, Auth0's retry of the
// same batch is stored.
func TestBufferFullThenRetry(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := t.Context()
			b := be.open(t, buffer.Config{MaxEvents: 3})
			f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
			require.NoError(t, b.EnsureGroup(ctx, "forward"))
			polled, pushed := f.events(3), f.events(2)
			_, err := b.Append(ctx, decode(t, polled), polled[2].ID)
			require.NoError(t, err)

			status, msg := f.push(sim.StreamJSONArray, pushed)
			require.Equal(t, http.StatusServiceUnavailable, status, msg)
			require.Contains(t, msg, "buffer full: nothing acknowledged, retry later")
			seen, err := b.Seen(ctx, ids(pushed))
			require.NoError(t, err)
			require.Equal(t, []bool{false, false}, seen)
			require.Equal(t, 2.0, f.eventsCounted("acme", auth0stream.OutcomeFull))
			require.Equal(t, 1.0, f.requests("acme", auth0stream.OutcomeFull, 503))

			// The forwarder drains the backlog.
			es, err := b.Read(ctx, "forward", "fw", 10, time.Millisecond)
			require.NoError(t, err)
			require.Len(t, es, 3)
			require.NoError(t, b.Ack(ctx, "forward", es[0].ID, es[1].ID, es[2].ID))

			status, msg = f.push(sim.StreamJSONArray, pushed)
			require.Equal(t, http.StatusOK, status, msg)
			require.JSONEq(t, `{"records":2,"new":2}`, msg)
			require.Equal(t, append(ids(polled), ids(pushed)...), storedIDs(t, b))
		})
	}
}

// TestRedisDown: with Redis killed the answer is 503 (Auth0 retries) and
// nothing is acknowledged; after Redis is back, the retry is stored.
func TestRedisDown(t *testing.T) {
	srv := testredis.Start(t)
	b := openRedis(t, redisClient(t, srv.Addr), buffer.Config{MaxEvents: 100})
	f := newFixture(t, auth0stream.Config{CommitTimeout: 2 * time.Second}, tenant("acme", b))
	logs := f.events(3)

	srv.Kill()
	status, msg := f.push(sim.StreamJSONLines, logs)
	require.Equal(t, http.StatusServiceUnavailable, status, msg)
	require.Contains(t, msg, "buffer unavailable: nothing acknowledged, retry later")
	require.Equal(t, 3.0, f.eventsCounted("acme", auth0stream.OutcomeUnavailable))

	require.NoError(t, srv.Restart())
	status, msg = f.push(sim.StreamJSONLines, logs)
	require.Equal(t, http.StatusOK, status, msg)
	require.Equal(t, ids(logs), storedIDs(t, b))
}

// TestHungRedisIsBounded: a Redis that stops answering writes (CLIENT
// PAUSE, as during a failover) holds no request past CommitTimeout, even
// with a client that ignores contexts; a second request finds no free
// commit slot and is answered 503 too. The commit that Redis executes once
// it resumes is reported, and Auth0's retries of both batches then
// succeed, each log stored once.
func TestHungRedisIsBounded(t *testing.T) {
	srv := testredis.Start(t)
	admin := redisClient(t, srv.Addr)
	// go-redis' default configuration: a blocked command ends at the
	// socket timeout (3 s); contexts are not observed.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b := openRedis(t, rdb, buffer.Config{})
	f := newFixture(t, auth0stream.Config{CommitTimeout: 300 * time.Millisecond, MaxInFlight: 1}, tenant("acme", b))
	warm, first, second := f.events(1), f.events(3), f.events(2)
	// A first push loads the append script into this new server: while
	// paused, Redis would answer its first EVALSHA with NOSCRIPT only
	// after the pause, and the retry with EVAL would find the request's
	// context ended.
	status, msg := f.push(sim.StreamJSONLines, warm)
	require.Equal(t, http.StatusOK, status, msg)

	require.NoError(t, admin.Do(t.Context(), "CLIENT", "PAUSE", "20000", "WRITE").Err())
	start := time.Now()
	status, msg = f.push(sim.StreamJSONLines, first)
	require.Equal(t, http.StatusServiceUnavailable, status, msg)
	status, msg = f.push(sim.StreamJSONLines, second) // the first commit still holds the one slot
	require.Equal(t, http.StatusServiceUnavailable, status, msg)
	require.Less(t, time.Since(start), 2500*time.Millisecond, "requests waited for Redis, not for CommitTimeout")
	require.Equal(t, 5.0, f.eventsCounted("acme", auth0stream.OutcomeUnavailable))
	require.Equal(t, 1, f.commitCount())

	require.NoError(t, admin.Do(t.Context(), "CLIENT", "UNPAUSE").Err())
	require.Eventually(t, func() bool { return f.commitCount() == 2 }, 5*time.Second, 10*time.Millisecond,
		"the append Redis executed after the pause was not reported")
	require.Equal(t, 3, f.lastCommit().Added)

	for _, batch := range [][]sim.RawLog{first, second} {
		require.Eventually(t, func() bool {
			status, _ := f.push(sim.StreamJSONLines, batch)
			return status == http.StatusOK
		}, 5*time.Second, 50*time.Millisecond)
	}
	require.Equal(t, append(append(ids(warm), ids(first)...), ids(second)...), storedIDs(t, b))
}

// TestSeveralTenants: each tenant's path takes only its own token and
// stores into its own buffer; the bare path is not served with several.
func TestSeveralTenants(t *testing.T) {
	acme := backends[0].open(t, buffer.Config{})
	beta := backends[1].open(t, buffer.Config{})
	const betaToken = "Bearer beta-0123456789abcdef"
	f := newFixture(t, auth0stream.Config{}, tenant("acme", acme),
		auth0stream.Tenant{Name: "beta", Token: betaToken, Buffer: beta})
	a, bl := f.events(2), f.events(3)

	status, msg := f.post("/auth0/logs/acme", token, sim.StreamBody(sim.StreamJSONArray, a))
	require.Equal(t, http.StatusOK, status, msg)
	status, msg = f.post("/auth0/logs/beta", betaToken, sim.StreamBody(sim.StreamJSONObject, bl))
	require.Equal(t, http.StatusOK, status, msg)
	status, _ = f.post("/auth0/logs/beta", token, sim.StreamBody(sim.StreamJSONObject, a))
	require.Equal(t, http.StatusUnauthorized, status)

	require.Equal(t, ids(a), storedIDs(t, acme))
	require.Equal(t, ids(bl), storedIDs(t, beta))

	for _, path := range []string{"/auth0/logs", "/auth0/logs/", "/auth0/logs/nobody", "/auth0/logs/acme/x", "/metrics", "/"} {
		status, msg := f.post(path, token, sim.StreamBody(sim.StreamJSONArray, a))
		require.Equal(t, http.StatusNotFound, status, path)
		require.Contains(t, msg, "POST log stream batches to /auth0/logs/{tenant}")
	}
	require.Equal(t, 6.0, f.requests("", auth0stream.OutcomeNotFound, 404))

	resp, err := f.srv.Client().Get(f.srv.URL + "/auth0/logs/acme")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
	require.Equal(t, 1.0, f.requests("acme", auth0stream.OutcomeMethodNotAllowed, 405))
	require.Equal(t, 1.0, f.requests("acme", auth0stream.OutcomeOK, 200))
	require.Equal(t, 1.0, f.requests("beta", auth0stream.OutcomeOK, 200))
	require.Equal(t, 1.0, f.requests("beta", auth0stream.OutcomeUnauthorized, 401))
}

// TestLastEvent: the time of the last commit with events, per tenant; a
// refused request does not count, a push of duplicates does (the stream
// is alive).
func TestLastEvent(t *testing.T) {
	b := backends[1].open(t, buffer.Config{})
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
	_, ok := f.recv.LastEvent("acme")
	require.False(t, ok)
	require.Zero(t, f.value("authpipe_stream_last_event_timestamp_seconds", "tenant", "acme"))

	logs := f.events(2)
	status, _ := f.push(sim.StreamJSONLines, logs)
	require.Equal(t, http.StatusOK, status)
	at, ok := f.recv.LastEvent("acme")
	require.True(t, ok)
	require.True(t, at.Equal(f.clock.Now()))

	f.clock.Advance(time.Minute)
	status, _ = f.post(auth0stream.PathPrefix, "Bearer wrong", sim.StreamBody(sim.StreamJSONLines, logs))
	require.Equal(t, http.StatusUnauthorized, status)
	at2, _ := f.recv.LastEvent("acme")
	require.True(t, at2.Equal(at))

	status, _ = f.push(sim.StreamJSONLines, logs) // duplicates only
	require.Equal(t, http.StatusOK, status)
	at3, _ := f.recv.LastEvent("acme")
	require.True(t, at3.Equal(f.clock.Now()))
	require.Equal(t, float64(f.clock.Now().UnixNano())/1e9, f.value("authpipe_stream_last_event_timestamp_seconds", "tenant", "acme"))

	_, ok = f.recv.LastEvent("nobody")
	require.False(t, ok)
}

// TestEmptyBatch: a batch without records stores nothing and is answered
// 200 (nothing to retry); it is no sign of life.
func TestEmptyBatch(t *testing.T) {
	b := backends[1].open(t, buffer.Config{})
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
	for _, body := range []string{"[]", `{"logs":[]}`} {
		status, msg := f.post(auth0stream.PathPrefix, token, []byte(body))
		require.Equal(t, http.StatusOK, status, msg)
		require.JSONEq(t, `{"records":0,"new":0}`, msg)
	}
	_, ok := f.recv.LastEvent("acme")
	require.False(t, ok)
}

// TestNewValidates: the receiver refuses configurations that would leave
// a tenant open, ambiguous or without a buffer.
func TestNewValidates(t *testing.T) {
	b := backends[1].open(t, buffer.Config{})
	cases := []struct {
		name    string
		tenants []auth0stream.Tenant
		cfg     auth0stream.Config
		want    string
	}{
		{"no tenant", nil, auth0stream.Config{}, "no tenant"},
		{"no token", []auth0stream.Tenant{{Name: "acme", Buffer: b}}, auth0stream.Config{}, `stream tenant "acme": no token`},
		{"bad name", []auth0stream.Tenant{{Name: "a/b", Token: "x", Buffer: b}}, auth0stream.Config{}, `name "a/b"`},
		{"twice", []auth0stream.Tenant{tenant("acme", b), {Name: "acme", Token: "y", Buffer: b}}, auth0stream.Config{}, `"acme" is listed twice`},
		{"shared token", []auth0stream.Tenant{tenant("acme", b), tenant("beta", b)}, auth0stream.Config{}, `tenants "acme" and "beta" have the same token`},
		{"no buffer", []auth0stream.Tenant{{Name: "acme", Token: "x"}}, auth0stream.Config{}, "no buffer"},
		{"negative limit", []auth0stream.Tenant{tenant("acme", b)}, auth0stream.Config{MaxBodyBytes: -1}, "max body bytes -1"},
		{"negative timeout", []auth0stream.Tenant{tenant("acme", b)}, auth0stream.Config{CommitTimeout: -1}, "commit timeout -1ns"},
		{"negative in flight", []auth0stream.Tenant{tenant("acme", b)}, auth0stream.Config{MaxInFlight: -1}, "max in flight -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := auth0stream.New(tc.tenants, tc.cfg, auth0stream.Deps{})
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), token)
		})
	}
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
	_, err := auth0stream.New(labelled(f.reg, []auth0stream.Tenant{tenant("acme", b)}), auth0stream.Config{},
		auth0stream.Deps{Registerer: tenantRegisterer(f.reg, "")})
	require.ErrorContains(t, err, "register stream metrics")
}
