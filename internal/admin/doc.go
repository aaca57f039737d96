// Package admin is authpipe's admin API: JSON endpoints under /api/v1/ on
// the worker's listener for pipeline status, threshold rules and breaches,
// dead letters and backfills, behind Bearer-token authentication, with an
// audit entry for every request that is stored before anything is done or
// shown.
//
// Guarantee: every request that reaches the API, allowed or denied, is
// answered only after it was authenticated and authorised for its
// operation, and only after its audit entry was stored by at least one
// sink of the audit trail (package audit). A read builds its answer, stores
// the entry naming the records it returns, then answers; a change stores
// the entry naming the records it is about to change, acts, then stores a
// result entry (kept for a sink that fails, never blocking the answer:
// the change has happened). When no sink takes an entry the request is
// answered 503 audit_unavailable, nothing is done or shown, and the
// refusal is recorded as soon as a sink takes it. No raw token is ever
// written anywhere: not to the audit entry (it carries the SHA-256
// thumbprint of a Bearer token), not to a log line, an error or a response.
//
// Front, in front of the server's mux, routes /api/ here and audits the
// refusals the mux would never see: paths it would redirect, bodies above
// the bound, and, through the connection hooks, what net/http answers
// itself (431 for oversize headers, 400, 501, 505, 417).
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
// Both modes can be on at once: a token shaped like a JWT is checked as
// one, any other as the static token. Refusals are named for the mode the
// token was checked in: bad_static_token for a wrong static token, the
// JWT reasons (see Audit) for a JWT.
//
// Identity is required: a verified JWT without jti or sub (or exp) is
// refused 401 missing_claims. Auth0's default access-token profile has no
// jti: the API registered in Auth0 must use the RFC 9068 profile.
//
// A missing, malformed or invalid token is answered 401 with a
// WWW-Authenticate: Bearer challenge (RFC 6750); a valid token without the
// operation's scope 403 (error="insufficient_scope"); a JWKS that cannot be
// fetched while no key is cached 503. An unknown path or method, once
// authenticated, 404 or 405.
//
// # Audit
//
// Entries are package audit's (see its doc for every field), written to
// the trail Deps.Trail. What each operation names:
//
//	status             tenants: the tenants reported
//	rules_list         rules: the rule names returned
//	breaches           rules: the breached rule names returned
//	rules_reload       rule_files: path and SHA-256 of the files about to be
//	                   read (request), of the files loaded (result); affected:
//	                   rules loaded
//	dlq_list           tenants; records: every dead letter returned (id,
//	                   log_id); query: tenant, limit, after, raw
//	dlq_replay, _drop  tenants; records: every dead letter about to change
//	                   ("all" resolved to the dead letters there are now, and
//	                   exactly those are changed); missing: ids asked for that
//	                   are not dead letters; affected (result): how many changed
//	backfill_start     tenants, window; backfill_id (result)
//	backfill_progress  backfill_id
//
// Reasons of a denial: missing_token, malformed_token, bad_algorithm,
// unknown_kid, bad_signature, expired, not_yet_valid, bad_issuer,
// bad_audience, missing_claims, invalid_token, jwks_unavailable (JWT);
// bad_static_token (static token); insufficient_scope, not_found,
// method_not_allowed; before the mux (Front): bad_path, body_too_large,
// header_too_large, bad_request, unsupported_transfer_encoding,
// http_version_not_supported, expectation_failed. Of a refusal:
// audit_unavailable.
//
// Lists longer than audit.MaxListPart are split over entries sharing one
// id (part, parts), never cut. Path and query segments of 32 characters or
// more, or equal to a configured secret (Config.Secrets), are masked.
//
// Counters authpipe_admin_requests_total{operation,outcome} (outcome
// allowed, denied or refused) exist for every operation and outcome from
// the start; the trail's own metrics are authpipe_admin_audit_errors_total,
// _pending_entries and _dropped_total{sink}, and
// authpipe_admin_jwks_refreshes_total{result} counts key-set fetches.
package admin
