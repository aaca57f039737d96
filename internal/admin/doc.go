// Package admin is authpipe's admin API: JSON endpoints under /api/v1/ on
// the worker's listener for pipeline status, threshold rules and breaches,
// dead letters and backfills, behind Bearer-token authentication, with an
// audit entry for every request.
//
// Guarantee: every request that reaches the API, allowed or denied, is
// answered only after it was authenticated and authorised for its
// operation, and produces exactly one audit entry (written after the
// response is decided, before the handler returns). No raw token is ever
// written anywhere: not to the audit entry (it carries the token's SHA-256
// thumbprint), not to a log line, not to an error or a response body.
//
// # Authentication
//
// Bearer JWTs issued by the Auth0 tenant (an API registered in Auth0 with
// the audience Config.Audience; an access token requested for it):
//
//   - RS256 only. The algorithm allowlist is fixed before the token is
//     parsed, so alg "none", HS256 keyed with the public key (algorithm
//     confusion) and every other algorithm are refused as bad_algorithm.
//   - Keys from the tenant's JWKS (https://<domain>/.well-known/jwks.json,
//     or Config.JWKSURL): RSA keys of at least 2048 bits with use "sig" (or
//     none) and alg RS256 (or none). The set is cached; a token with a kid
//     not in the cache, or a cache older than JWKSMaxAge, fetches the set
//     again, but at most once per JWKSMinRefresh, so unknown kids cannot
//     make authpipe hammer Auth0. A failed fetch keeps the keys it had.
//   - iss must equal Config.Issuer (Auth0's is "https://<domain>/"), aud
//     must contain Config.Audience, exp is required; exp, nbf and iat are
//     checked with Config.Leeway (default 30s).
//
// Scopes come from the token's scope claim (space-separated) and its
// permissions claim (Auth0 RBAC). Each operation needs one scope:
//
//	read:status     GET  /api/v1/status            tenants, checkpoints, lag, backlog, dead letters
//	read:rules      GET  /api/v1/rules             rules with their breach state
//	read:rules      GET  /api/v1/breaches          rules breached now
//	write:rules     POST /api/v1/rules/reload      reload the rule files
//	read:dlq        GET  /api/v1/dlq               list dead letters (?tenant= &limit= &after= &raw=true)
//	write:dlq       POST /api/v1/dlq/replay        {"ids": [...]} or {"all": true}
//	write:dlq       POST /api/v1/dlq/drop          {"ids": [...]} or {"all": true}
//	write:backfill  POST /api/v1/backfill          {"since": "<RFC 3339>"}
//	read:backfill   GET  /api/v1/backfill          the backfill's progress
//
// Static-token mode, for local use, is off unless Config.StaticToken is
// set: a request whose Bearer token equals it (compared in constant time
// over SHA-256 digests) is allowed every operation, as sub "static-token".
// Both modes can be on at once.
//
// A missing, malformed or invalid token is answered 401 with a
// WWW-Authenticate: Bearer challenge (RFC 6750); a valid token without the
// operation's scope 403 (error="insufficient_scope"); a JWKS that cannot be
// fetched while no key is cached 503. An unknown path or method, once
// authenticated, 404 or 405.
//
// # Audit
//
// One JSON object per request, as one line on the sink (stdout or a file)
// and, with the Redis buffer, as the field "entry" of an entry of the
// Redis stream Config.AuditStream, trimmed by MINID to Config.AuditRetention
// on every write. With the embedded buffer only the sink is written. Every
// entry has every field below (null or "" when unknown):
//
//	time              request time, RFC 3339 (UTC)
//	jti, sub          the token's jti and sub claims
//	exp               the token's expiry, RFC 3339, or null
//	token_thumbprint  base64url (no padding) of SHA-256 of the raw token; "" without a token
//	claims_verified   true when jti, sub and exp come from a verified token;
//	                  false: read from a refused token, for forensics only
//	auth              "jwt", "static" or "none"
//	method            HTTP method
//	operation         status, rules_list, rules_reload, breaches, dlq_list,
//	                  dlq_replay, dlq_drop, backfill_start, backfill_progress, unknown
//	resource          what the operation reads or changes: "status",
//	                  "rules", "tenants/<tenant>/dlq", "backfill", or the path
//	outcome           "allowed" (authenticated and authorised) or "denied"
//	reason            why it was denied (missing_token, malformed_token,
//	                  bad_algorithm, unknown_kid, bad_signature, expired,
//	                  not_yet_valid, bad_issuer, bad_audience, missing_claims,
//	                  invalid_token, jwks_unavailable, insufficient_scope,
//	                  not_found, method_not_allowed); "" when allowed
//	status            HTTP status answered
//	latency_seconds   time from the request to the response
//
// and, for dead-letter changes, targets (the ids, or ["all"]; at most 100)
// and affected (how many changed).
//
// Counters authpipe_admin_requests_total{operation,outcome} exist for every
// operation and outcome from the start; authpipe_admin_audit_errors_total{sink}
// counts entries a sink failed to take (logged at error), and
// authpipe_admin_jwks_refreshes_total{result} the key-set fetches.
package admin
