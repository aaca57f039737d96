// Package sim provides in-process simulators of the two HTTP APIs authpipe
// talks to, each an http.Handler to serve with httptest.NewServer: Auth0's
// Management API logs endpoint (NewAuth0) and Segment's HTTP Tracking API
// batch endpoint (NewSegment); and of the one service that calls authpipe,
// an Auth0 custom webhook Log Stream (NewStream), which pushes the Auth0
// simulator's logs to a URL. Tests of every package, the benchmarks and
// `authpipe demo` run against them through the real clients (go-auth0,
// analytics-go) over real HTTP. World is the traffic `authpipe demo` and
// `authpipe sim` generate: background sign-ons and scripted attacks.
//
// Guarantee: what the simulators do on the wire matches what
// reference/FACTS.md records of the real services, so code that works here
// only fails against the real ones where a simplification below says so.
// They are cheap enough for a million events: events are stored pre-encoded
// as JSON, a page is found by binary search on log_id, and messages are
// recorded in a map.
//
// # Auth0 (faithful)
//
//   - POST /oauth/token: client_credentials grant with the credentials as
//     HTTP Basic (query-escaped, as golang.org/x/oauth2 sends them) or form
//     fields (or a JSON body); audience must be <scheme>://<host>/api/v2/ of
//     the request. Answers {access_token, token_type, expires_in, scope},
//     scope being the client grant's scopes, space-separated
//     (Auth0Options.Scopes, SetScopes); wrong credentials 401
//     {"error":"access_denied","error_description":"Unauthorized"},
//     unknown audience 403 "Service not enabled within domain: …".
//   - GET /api/v2/logs needs a Bearer token this simulator issued (401
//     {"statusCode":401,"error":"Unauthorized","message":"Invalid token"})
//     whose scopes hold read:logs or read:logs_users (403
//     {"statusCode":403,"error":"Forbidden","message":"Insufficient scope,
//     expected any of: read:logs,read:logs_users","errorCode":"insufficient_scope"}).
//   - Checkpoint mode (from or take present): logs with log_id strictly
//     greater than from, ascending by log_id (not date), at most take
//     (default 50, 1–100, else 400), every other parameter ignored, [] when
//     none, and a Link: <…?from=LAST&take=N>; rel="next" header. No 1,000 cap.
//   - Page mode (page, per_page ≤ 100, sort date:1 / date:-1,
//     include_totals): 400 "Requesting page N exceeds the allowed maximum of
//     1000 records. …" when page*per_page+per_page > 1000 (N = page index,
//     Auth0's wording).
//   - log_id: 56 digits, "900" + UTC YYYYMMDDhhmmss (the event date + 2 s,
//     never earlier than the previous id's) + 39 digits of a counter: unique
//     and strictly ascending in ingest order.
//   - Retention: a log dated before now − Retention (injected clock) is
//     deleted and never returned; a from older than that silently returns
//     the oldest retained logs, with no error.
//   - Rate limit: a token bucket (Burst, refilled PerMinute per minute on the
//     injected clock); every logs response carries x-ratelimit-limit,
//     x-ratelimit-remaining and x-ratelimit-reset (UNIX seconds of the next
//     refill); over the limit 429 {"statusCode":429,"error":"Too Many Requests",
//     "message":"Global limit has been reached","errorCode":"too_many_requests"}.
//   - Error bodies have Auth0's shape {"statusCode","error","message"[,"errorCode"]}.
//
// # Auth0 (simplified)
//
//   - One tenant, one client, no JWTs: tokens are opaque random strings
//     (a real tenant's are JWTs carrying the scope claim), valid for
//     TokenTTL on the real clock (oauth2 judges expiry on the real clock
//     too). Only the logs endpoints check scopes.
//   - Page mode sorts by log_id for any sort field and ignores q, fields and
//     search_engine; only /api/v2/logs and /api/v2/logs/{id} exist.
//   - Unlimited rate limit (Burst 0) still sends headers (limit 1000).
//   - The exact text of validation errors (bad take, bad from) is inferred;
//     the status (400) and shape are Auth0's.
//   - Events carry the standard fields with plausible values (strategy and
//     connection_id derived from the connection name, audience/scope only on
//     success login and token exchange types); Event.Extra adds or replaces any.
//
// # Segment (faithful)
//
//   - POST /v1/batch, HTTP Basic with the write key as user (password
//     ignored) or "writeKey" in the body. Body ≤ 500 KB (500*1024), ≤ 2,500
//     messages, each ≤ 32 KB (32*1024) of JSON, valid JSON: else 400 for the
//     whole batch. Gzip bodies are accepted.
//   - Messages missing event (track), of an unknown type, or without userId
//     and anonymousId get 200 and are silently dropped (Stats.Dropped).
//   - Each accepted message is recorded by messageId: MessageIDs counts every
//     copy received, Messages keeps the first (Segment's dedupe).
//   - 429 carries Retry-After (seconds).
//
// # Segment (simplified)
//
//   - A wrong or missing write key answers 401 by default. The real API
//     answers 200 and drops the events (its edge does not check keys);
//     SegmentOptions.AcceptBadKeys reproduces that.
//   - Response bodies: {"success":true} is Segment's; the error body
//     {"success":false,"message":…} is inferred.
//   - No per-field validation beyond the above, no 24 h dedupe window (every
//     copy is counted forever), no regional endpoints.
//
// # Auth0 Log Streams, custom webhook (faithful)
//
//   - Stream.Follow(auth0) offers the stream every log the Auth0 simulator
//     stores (Auth0.Subscribe), in ingest order, with the JSON the logs API
//     serves: the stream and the poller see the same logs.
//   - Each delivery is one POST to the Payload URL with Content-Type
//     application/json, the Authorization Token verbatim as the
//     Authorization header (none when empty), and a body in the Content
//     Format: JSONLINES (one record per line), JSONARRAY ([record, …]) or
//     JSONOBJECT; each record {"log_id": …, "data": {…the log…}}.
//   - Delivery is at least once: a delivery is tried up to three times; any
//     answer but 2xx, and no answer, is a failure. After the third it is
//     errored (Stats.Errored, Auth0's Health tab) and the process starts
//     again later, until a try succeeds; newer logs go on meanwhile, so an
//     errored batch arrives after newer ones (Auth0 does not promise
//     order). A stream with no success for PauseAfter (7 days) while
//     failing pauses; Resume restarts it.
//
// # Auth0 Log Streams (simplified)
//
//   - The JSONOBJECT body {"logs":[…]} is inferred from handlers written
//     against real streams (Auth0 does not document it).
//   - Batching: a delivery takes up to BatchSize (default 100) of the logs
//     waiting, at once; Auth0 does not document its batch sizes. One
//     delivery at a time, in log_id order apart from errored retries.
//   - The wait between tries (RetryDelay, 1 s) and before an errored
//     delivery starts again (ErroredRetry, 1 min) are not documented by
//     Auth0; they are options, on an injected clock.
//   - DropRate drops a share of deliveries for good, never sent (their
//     log_ids in Dropped), to model the stream losing logs; a real stream
//     shows no such thing but its Health tab. Logs offered while paused
//     are delivered after Resume (whether a real stream delivers the logs
//     of its paused days is not documented; it can be recreated with a
//     Starting Cursor inside the retention). No event-category filters,
//     PII masking, custom headers or Starting Cursor; no TLS (real streams
//     require HTTPS with a valid certificate); the request timeout
//     (Timeout, 10 s) is a guess.
//
// # Auth0 tokens for an API (NewJWKS)
//
// The tenant's signing keys as Auth0 serves them at GET
// /.well-known/jwks.json (RSA, use sig, alg RS256, kid, n, e), and access
// tokens for an API minted as Auth0 signs them (RS256, kid in the header;
// iss, aud, sub, azp, iat, exp, jti, scope), plus the tokens an API must
// refuse: expired, not yet valid, wrong audience or issuer, unknown kid,
// alg none, HS256 keyed with the public key, tampered. PendingKey and
// Publish script key rotation. Simplified: no x5c, no /oauth/token for
// these tokens (tests mint them directly).
package sim
