package admin_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/sim"
)

func thumb(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestAuthentication: every kind of bad token is refused with 401 and
// audited as denied with its reason; a good token without the scope gets
// 403; a good token is served. Every entry carries every field, and no
// token shows up in the audit, the logs or a response.
func TestAuthentication(t *testing.T) {
	w := newWorld(t, worldOpts{})
	j := w.jwks
	status := sim.Claims{"scope": admin.ScopeReadStatus}
	now := w.clock.Now()

	tests := []struct {
		name       string
		auth       []string // Authorization header values; nil = none
		token      string   // the bearer token, when auth is "Bearer "+token
		wantStatus int
		wantReason string // "" = allowed
		verified   bool   // jti/sub/exp from a verified token
		wantAuth   string
	}{
		{name: "missing", wantStatus: 401, wantReason: admin.ReasonMissingToken, wantAuth: admin.AuthNone},
		{name: "empty bearer", auth: []string{"Bearer"}, wantStatus: 401, wantReason: admin.ReasonMissingToken, wantAuth: admin.AuthNone},
		{name: "malformed: not a JWT", token: "not-a-jwt-at-all-0123456789", wantStatus: 401, wantReason: admin.ReasonMalformedToken, wantAuth: admin.AuthJWT},
		{name: "malformed: bad segments", token: "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24gYXQgYWxs.c2lnbmF0dXJl", wantStatus: 401, wantReason: admin.ReasonMalformedToken, wantAuth: admin.AuthJWT},
		{name: "malformed: header not JSON", token: "bm90anNvbg.e30.c2ln", wantStatus: 401, wantReason: admin.ReasonMalformedToken, wantAuth: admin.AuthJWT},
		{name: "malformed: not a bearer token", auth: []string{"Basic dXNlcjpwYXNzd29yZC1zZWNyZXQ="}, wantStatus: 401, wantReason: admin.ReasonMalformedToken, wantAuth: admin.AuthNone},
		{name: "malformed: two Authorization headers", auth: []string{"Bearer " + j.MintToken(status), "Bearer " + j.MintToken(status)}, wantStatus: 401, wantReason: admin.ReasonMalformedToken, wantAuth: admin.AuthNone},
		{name: "malformed: bad characters", token: "abc def\"ghi", wantStatus: 401, wantReason: admin.ReasonMalformedToken, wantAuth: admin.AuthJWT},
		{name: "expired", token: j.Expired(status), wantStatus: 401, wantReason: admin.ReasonExpired, verified: true, wantAuth: admin.AuthJWT},
		{name: "expired beyond the leeway", token: j.MintToken(with(status, sim.Claims{"exp": now.Add(-31 * time.Second).Unix()})), wantStatus: 401, wantReason: admin.ReasonExpired, verified: true, wantAuth: admin.AuthJWT},
		{name: "not yet valid", token: j.NotYetValid(status), wantStatus: 401, wantReason: admin.ReasonNotYetValid, verified: true, wantAuth: admin.AuthJWT},
		{name: "issued in the future", token: j.MintToken(with(status, sim.Claims{"iat": now.Add(10 * time.Minute).Unix()})), wantStatus: 401, wantReason: admin.ReasonNotYetValid, verified: true, wantAuth: admin.AuthJWT},
		{name: "wrong audience", token: j.WrongAudience(status), wantStatus: 401, wantReason: admin.ReasonBadAudience, verified: true, wantAuth: admin.AuthJWT},
		{name: "no audience", token: j.MintToken(with(status, sim.Claims{"aud": nil})), wantStatus: 401, wantReason: admin.ReasonBadAudience, verified: true, wantAuth: admin.AuthJWT},
		{name: "wrong issuer", token: j.WrongIssuer(status), wantStatus: 401, wantReason: admin.ReasonBadIssuer, verified: true, wantAuth: admin.AuthJWT},
		{name: "unknown kid", token: j.UnknownKID(status), wantStatus: 401, wantReason: admin.ReasonUnknownKID, wantAuth: admin.AuthJWT},
		{name: "alg none", token: j.AlgNone(status), wantStatus: 401, wantReason: admin.ReasonBadAlgorithm, wantAuth: admin.AuthJWT},
		{name: "HS256 signed with the public key", token: j.HS256WithPublicKey(status), wantStatus: 401, wantReason: admin.ReasonBadAlgorithm, wantAuth: admin.AuthJWT},
		{name: "tampered payload", token: j.Tampered(status), wantStatus: 401, wantReason: admin.ReasonBadSignature, wantAuth: admin.AuthJWT},
		{name: "no exp", token: j.MintToken(with(status, sim.Claims{"exp": nil})), wantStatus: 401, wantReason: admin.ReasonMissingClaims, verified: true, wantAuth: admin.AuthJWT},
		{name: "no jti", token: j.MintToken(with(status, sim.Claims{"jti": nil})), wantStatus: 401, wantReason: admin.ReasonMissingClaims, verified: true, wantAuth: admin.AuthJWT},
		{name: "empty jti", token: j.MintToken(with(status, sim.Claims{"jti": ""})), wantStatus: 401, wantReason: admin.ReasonMissingClaims, verified: true, wantAuth: admin.AuthJWT},
		{name: "no sub", token: j.MintToken(with(status, sim.Claims{"sub": nil})), wantStatus: 401, wantReason: admin.ReasonMissingClaims, verified: true, wantAuth: admin.AuthJWT},
		{name: "valid without the scope", token: j.MintToken(sim.Claims{"scope": "read:rules read:dlq write:status"}), wantStatus: 403, wantReason: admin.ReasonInsufficientScope, verified: true, wantAuth: admin.AuthJWT},
		{name: "valid", token: j.MintToken(status), wantStatus: 200, verified: true, wantAuth: admin.AuthJWT},
		{name: "valid, scope among others", token: j.MintToken(sim.Claims{"scope": "openid read:dlq read:status"}), wantStatus: 200, verified: true, wantAuth: admin.AuthJWT},
		{name: "valid, scope as an RBAC permission", token: j.MintToken(sim.Claims{"permissions": []string{"read:status"}}), wantStatus: 200, verified: true, wantAuth: admin.AuthJWT},
		{name: "valid, audience in a list", token: j.MintToken(with(status, sim.Claims{"aud": []string{testAudience, testIssuer + "userinfo"}})), wantStatus: 200, verified: true, wantAuth: admin.AuthJWT},
		{name: "expired within the leeway", token: j.MintToken(with(status, sim.Claims{"exp": now.Add(-20 * time.Second).Unix()})), wantStatus: 200, verified: true, wantAuth: admin.AuthJWT},
		{name: "nbf within the leeway", token: j.MintToken(with(status, sim.Claims{"nbf": now.Add(20 * time.Second).Unix()})), wantStatus: 200, verified: true, wantAuth: admin.AuthJWT},
	}
	allowed, denied := 0, 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := tt.auth
			if tt.token != "" {
				auth = []string{"Bearer " + tt.token}
			}
			before := len(w.audits())
			resp := w.doAuth(http.MethodGet, "/api/v1/status", auth, nil)
			require.Equal(t, tt.wantStatus, resp.status, resp.body)
			require.Equal(t, "application/json; charset=utf-8", resp.header.Get("Content-Type"))
			require.Equal(t, "no-store", resp.header.Get("Cache-Control"))

			entries := w.audits()
			require.Len(t, entries, before+1, "exactly one audit entry per request")
			e := entries[len(entries)-1]
			requireAuditFields(t, e)
			require.Equal(t, "GET", e["method"])
			require.Equal(t, admin.OpStatus, e["operation"])
			require.Equal(t, "status", e["resource"])
			require.EqualValues(t, tt.wantStatus, e["status"])
			require.Equal(t, tt.wantReason, e["reason"])
			require.Equal(t, tt.wantAuth, e["auth"])
			require.Equal(t, tt.verified, e["claims_verified"])
			require.Equal(t, w.clock.Now().UTC().Format(time.RFC3339Nano), e["time"])

			// The thumbprint is of Bearer tokens only: never an unsalted
			// hash of a Basic credential.
			var scheme, bearer string
			if len(auth) == 1 {
				scheme, bearer, _ = strings.Cut(auth[0], " ")
			}
			if bearer != "" && scheme == "Bearer" {
				require.Equal(t, thumb(bearer), e["token_thumbprint"])
			} else {
				require.Equal(t, "", e["token_thumbprint"])
			}

			if tt.wantReason == "" {
				allowed++
				require.Equal(t, admin.OutcomeAllowed, e["outcome"])
				var st admin.StatusResponse
				resp.json(t, &st)
				require.Len(t, st.Tenants, 1)
				require.Equal(t, w.tenant, st.Tenants[0].Name)
			} else {
				denied++
				require.Equal(t, admin.OutcomeDenied, e["outcome"])
				var body struct{ Error, Code string }
				resp.json(t, &body)
				require.Equal(t, tt.wantReason, body.Code)
				require.NotEmpty(t, body.Error)
				challenge := resp.header.Get("WWW-Authenticate")
				require.True(t, strings.HasPrefix(challenge, `Bearer realm="authpipe"`), challenge)
				switch {
				case tt.wantStatus == 403:
					require.Contains(t, challenge, `error="insufficient_scope", scope="read:status"`)
				case tt.wantReason == admin.ReasonMissingToken:
					require.NotContains(t, challenge, "error=")
				default:
					require.Contains(t, challenge, `error="invalid_token"`)
				}
			}
			if tt.verified {
				var claims map[string]any
				parts := strings.Split(tt.token, ".")
				data, err := base64.RawURLEncoding.DecodeString(parts[1])
				require.NoError(t, err)
				require.NoError(t, json.Unmarshal(data, &claims))
				for _, c := range []string{"sub", "jti"} {
					want, _ := claims[c].(string)
					require.Equal(t, want, e[c])
					if tt.wantReason == "" {
						require.NotEmpty(t, e[c], "an allowed request names its token and subject")
					}
				}
				if exp, ok := claims["exp"].(float64); ok {
					require.Equal(t, time.Unix(int64(exp), 0).UTC().Format(time.RFC3339), e["exp"])
				} else {
					require.Nil(t, e["exp"])
				}
			}
			if tt.wantAuth == admin.AuthNone {
				require.Equal(t, "", e["sub"])
				require.Equal(t, "", e["jti"])
				require.Nil(t, e["exp"])
			}
		})
	}

	// The stream holds the same entries as the sink.
	// The stream holds the same entries as the file, each chain intact.
	var ids []any
	for _, e := range w.audits() {
		ids = append(ids, e["id"])
	}
	var streamIDs []any
	for _, l := range w.streamAudits() {
		streamIDs = append(streamIDs, decode(t, l)["id"])
	}
	require.Equal(t, ids, streamIDs)
	w.requireChainsIntact()

	// One count per request, by outcome.
	require.EqualValues(t, allowed, counter(t, w, admin.OpStatus, admin.OutcomeAllowed))
	require.EqualValues(t, denied, counter(t, w, admin.OpStatus, admin.OutcomeDenied))
	require.Greater(t, allowed, 3)
	require.Greater(t, denied, 15)
}

func with(a, b sim.Claims) sim.Claims {
	out := sim.Claims{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// TestRefusedClaimsAreMarked: a refused token's jti and sub are recorded
// for forensics, marked as unverified.
func TestRefusedClaimsAreMarked(t *testing.T) {
	w := newWorld(t, worldOpts{})
	tok := w.jwks.UnknownKID(sim.Claims{"sub": "auth0|intruder", "jti": "forged-jti", "scope": admin.ScopeReadStatus})
	resp := w.do(http.MethodGet, "/api/v1/status", tok, nil)
	require.Equal(t, 401, resp.status)
	e := w.lastAudit()
	require.Equal(t, false, e["claims_verified"])
	require.Equal(t, "auth0|intruder", e["sub"])
	require.Equal(t, "forged-jti", e["jti"])
}

// TestStaticToken: the static token allows everything, in constant-time
// comparison; with JWT mode off, JWTs are refused.
func TestStaticToken(t *testing.T) {
	tests := []struct {
		name      string
		jwt       bool
		token     func(w *world) string
		want      int
		wantAuth  string
		wantSub   string
		wantRsn   string
		operation string
	}{
		{name: "static token", token: func(*world) string { return staticToken }, want: 200, wantAuth: admin.AuthStatic, wantSub: "static-token"},
		{name: "wrong static token", token: func(*world) string { return staticToken + "x" }, want: 401, wantAuth: admin.AuthStatic, wantRsn: admin.ReasonBadStaticToken},
		{name: "prefix of the static token", token: func(*world) string { return staticToken[:20] }, want: 401, wantAuth: admin.AuthStatic, wantRsn: admin.ReasonBadStaticToken},
		{name: "JWT with JWT mode off", token: func(w *world) string { return w.jwks.MintToken(sim.Claims{"scope": "read:status"}) }, want: 401, wantAuth: admin.AuthStatic, wantRsn: admin.ReasonBadStaticToken},
		{name: "static token with JWT mode on", jwt: true, token: func(*world) string { return staticToken }, want: 200, wantAuth: admin.AuthStatic, wantSub: "static-token"},
		// Refusals are named for the mode the token was checked in: a wrong
		// static token is no malformed JWT.
		{name: "wrong static token with JWT mode on", jwt: true, token: func(*world) string { return strings.Repeat("0123456789abcdef", 4) }, want: 401, wantAuth: admin.AuthStatic, wantRsn: admin.ReasonBadStaticToken},
		{name: "malformed JWT with both modes on", jwt: true, token: func(*world) string { return "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln" }, want: 401, wantAuth: admin.AuthJWT, wantRsn: admin.ReasonMalformedToken},
		{name: "JWT with both modes on", jwt: true, token: func(w *world) string { return w.jwks.MintToken(sim.Claims{"scope": "read:status"}) }, want: 200, wantAuth: admin.AuthJWT, wantSub: "auth0|sim-operator"},
		{name: "bad JWT with both modes on", jwt: true, token: func(w *world) string { return w.jwks.Expired(sim.Claims{"scope": "read:status"}) }, want: 401, wantAuth: admin.AuthJWT, wantSub: "auth0|sim-operator", wantRsn: admin.ReasonExpired},
	}
	worlds := map[bool]*world{
		false: newWorld(t, worldOpts{noJWT: true, static: true}),
		true:  newWorld(t, worldOpts{static: true}),
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := worlds[tt.jwt]
			tok := tt.token(w)
			resp := w.do(http.MethodGet, "/api/v1/status", tok, nil)
			require.Equal(t, tt.want, resp.status, resp.body)
			e := w.lastAudit()
			requireAuditFields(t, e)
			require.Equal(t, tt.wantAuth, e["auth"])
			require.Equal(t, tt.wantRsn, e["reason"])
			if tt.wantSub != "" {
				require.Equal(t, tt.wantSub, e["sub"])
			}
			require.Equal(t, thumb(tok), e["token_thumbprint"])
		})
	}
	// The static token reaches every operation.
	w := worlds[false]
	resp := w.do(http.MethodGet, "/api/v1/dlq", staticToken, nil)
	require.Equal(t, 200, resp.status, resp.body)
}

// TestJWKSRefresh: keys are cached; an unknown kid fetches the set again,
// at most once per minimum interval; a failed fetch keeps the cached keys;
// no key at all answers 503.
func TestJWKSRefresh(t *testing.T) {
	w := newWorld(t, worldOpts{})
	j := w.jwks
	scope := sim.Claims{"scope": admin.ScopeReadStatus}
	get := func(tok string) response {
		t.Helper()
		return w.do(http.MethodGet, "/api/v1/status", tok, nil)
	}
	fetches := func() int { return j.Stats().Requests }

	require.Equal(t, 200, get(j.MintToken(scope)).status)
	require.Equal(t, 1, fetches())
	require.Equal(t, 200, get(j.MintToken(scope)).status)
	require.Equal(t, 1, fetches(), "cached")

	// A key Auth0 signs with but the cache does not hold.
	w.clock.Advance(31 * time.Second)
	oldKey := j.MintToken(scope)
	j.PendingKey()
	newKey := j.MintToken(scope)
	require.Equal(t, 401, get(newKey).status)
	require.Equal(t, 2, fetches(), "unknown kid fetches the set again")
	require.Equal(t, admin.ReasonUnknownKID, w.lastAudit()["reason"])
	for range 5 {
		require.Equal(t, 401, get(newKey).status)
	}
	require.Equal(t, 2, fetches(), "refreshes are rate-limited")
	j.Publish()
	require.Equal(t, 401, get(newKey).status, "still within the minimum interval")
	require.Equal(t, 2, fetches())
	w.clock.Advance(30 * time.Second)
	require.Equal(t, 200, get(newKey).status)
	require.Equal(t, 3, fetches())
	require.Equal(t, 200, get(oldKey).status, "old keys stay valid while served")
	require.Equal(t, 3, fetches())

	// The set is down: stale keys keep working, one failed fetch per interval.
	j.FailNext(100)
	w.clock.Advance(admin.DefaultJWKSMaxAge)
	require.Equal(t, 200, get(j.MintToken(scope)).status)
	require.Equal(t, 200, get(j.MintToken(scope)).status)
	require.Equal(t, 1, j.Stats().Failed)
	require.EqualValues(t, 1, metricValue(t, w, "authpipe_admin_jwks_refreshes_total", "result", "error"))
	require.EqualValues(t, 3, metricValue(t, w, "authpipe_admin_jwks_refreshes_total", "result", "success"))
	require.Contains(t, w.logs.String(), "fetch admin API signing keys")

	// A worker that never got the keys cannot verify: 503, audited.
	w2 := newWorld(t, worldOpts{})
	w2.jwks.FailNext(100)
	resp := w2.do(http.MethodGet, "/api/v1/status", w2.jwks.MintToken(scope), nil)
	require.Equal(t, 503, resp.status, resp.body)
	require.Equal(t, "30", resp.header.Get("Retry-After"))
	e := w2.lastAudit()
	requireAuditFields(t, e)
	require.Equal(t, admin.ReasonJWKSUnavailable, e["reason"])
	require.Equal(t, admin.OutcomeDenied, e["outcome"])
}
