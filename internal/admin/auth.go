package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/jonboulle/clockwork"

	"github.com/authpipe/authpipe/internal/audit"
)

// Scopes, one per operation (see the package doc).
const (
	ScopeReadStatus    = "read:status"
	ScopeReadRules     = "read:rules"
	ScopeWriteRules    = "write:rules"
	ScopeReadDLQ       = "read:dlq"
	ScopeWriteDLQ      = "write:dlq"
	ScopeReadBackfill  = "read:backfill"
	ScopeWriteBackfill = "write:backfill"
)

// AllScopes lists every scope, for the API registered in Auth0.
var AllScopes = []string{
	ScopeReadStatus, ScopeReadRules, ScopeWriteRules, ScopeReadDLQ, ScopeWriteDLQ, ScopeReadBackfill, ScopeWriteBackfill,
}

// Denial reasons of the audit entry.
const (
	ReasonMissingToken      = "missing_token"
	ReasonMalformedToken    = "malformed_token"
	ReasonBadAlgorithm      = "bad_algorithm"
	ReasonUnknownKID        = "unknown_kid"
	ReasonBadSignature      = "bad_signature"
	ReasonExpired           = "expired"
	ReasonNotYetValid       = "not_yet_valid"
	ReasonBadIssuer         = "bad_issuer"
	ReasonBadAudience       = "bad_audience"
	ReasonMissingClaims     = "missing_claims"
	ReasonInvalidToken      = "invalid_token"
	ReasonBadStaticToken    = "bad_static_token"
	ReasonJWKSUnavailable   = "jwks_unavailable"
	ReasonInsufficientScope = "insufficient_scope"
	ReasonNotFound          = "not_found"
	ReasonMethodNotAllowed  = "method_not_allowed"
)

// Authentication methods of the audit entry.
const (
	AuthJWT    = audit.AuthJWT
	AuthStatic = audit.AuthStatic
	AuthNone   = audit.AuthNone
)

const (
	// staticSubject is the sub of static-token requests.
	staticSubject = "static-token"
	// maxTokenBytes bounds a bearer token; longer ones are malformed.
	maxTokenBytes = 16 << 10
	// maxClaimBytes bounds a claim copied into the audit entry.
	maxClaimBytes = 256
)

// b64token is RFC 6750's token68 syntax.
var b64token = regexp.MustCompile(`^[A-Za-z0-9\-._~+/]+=*$`)

// identity is who sent a request, as far as it is known.
type identity struct {
	auth       string // AuthJWT, AuthStatic or AuthNone
	sub, jti   string
	exp        *time.Time
	verified   bool // sub, jti and exp come from a verified token
	thumbprint string
	scopes     map[string]bool
}

func (id identity) has(scope string) bool { return id.scopes[scope] }

// denial is why a request was refused.
type denial struct {
	reason string
	status int
	desc   string // error_description: fixed text, never token content
}

var denials = map[string]denial{
	ReasonMissingToken:    {ReasonMissingToken, http.StatusUnauthorized, "a Bearer access token is required"},
	ReasonMalformedToken:  {ReasonMalformedToken, http.StatusUnauthorized, "the access token is not a well-formed JWT"},
	ReasonBadAlgorithm:    {ReasonBadAlgorithm, http.StatusUnauthorized, "the access token must be signed with RS256"},
	ReasonUnknownKID:      {ReasonUnknownKID, http.StatusUnauthorized, "the access token is signed with an unknown key"},
	ReasonBadSignature:    {ReasonBadSignature, http.StatusUnauthorized, "the access token's signature is invalid"},
	ReasonExpired:         {ReasonExpired, http.StatusUnauthorized, "the access token expired"},
	ReasonNotYetValid:     {ReasonNotYetValid, http.StatusUnauthorized, "the access token is not valid yet"},
	ReasonBadIssuer:       {ReasonBadIssuer, http.StatusUnauthorized, "the access token is from another issuer"},
	ReasonBadAudience:     {ReasonBadAudience, http.StatusUnauthorized, "the access token is for another audience"},
	ReasonMissingClaims:   {ReasonMissingClaims, http.StatusUnauthorized, "the access token lacks the jti, sub or exp claim"},
	ReasonInvalidToken:    {ReasonInvalidToken, http.StatusUnauthorized, "the access token is not valid"},
	ReasonBadStaticToken:  {ReasonBadStaticToken, http.StatusUnauthorized, "the token is not the static token"},
	ReasonJWKSUnavailable: {ReasonJWKSUnavailable, http.StatusServiceUnavailable, "the signing keys cannot be fetched; try again later"},
}

// authenticator checks a request's Bearer token.
type authenticator struct {
	cfg       Config
	clock     clockwork.Clock
	keys      *keySet // nil without JWT mode
	static    [sha256.Size]byte
	hasStatic bool
}

// authenticate returns the request's identity, or why it is refused (with
// as much of the identity as is known, for the audit).
//
// A token is checked in one mode, and refused with that mode's reasons:
// the static token when static-token mode is on and the token is not
// shaped like a JWT (or JWT mode is off), else a JWT. The thumbprint is
// taken of Bearer tokens only: another scheme's credentials (Basic: a
// password) are not hashed into the trail.
func (a *authenticator) authenticate(ctx context.Context, r *http.Request) (identity, *denial) {
	id := identity{auth: AuthNone}
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return id, deny(ReasonMissingToken)
	}
	if len(values) > 1 {
		return id, deny(ReasonMalformedToken)
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimLeft(token, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return id, deny(ReasonMalformedToken)
	}
	if token == "" {
		return id, deny(ReasonMissingToken)
	}
	id.thumbprint = audit.Thumbprint(token)
	if a.hasStatic {
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], a.static[:]) == 1 {
			id.auth, id.sub, id.verified = AuthStatic, staticSubject, true
			id.scopes = map[string]bool{}
			for _, s := range AllScopes {
				id.scopes[s] = true
			}
			return id, nil
		}
		if a.keys == nil || !jwtShaped(token) {
			id.auth = AuthStatic
			return id, deny(ReasonBadStaticToken)
		}
	}
	id.auth = AuthJWT
	if len(token) > maxTokenBytes || !b64token.MatchString(token) {
		return id, deny(ReasonMalformedToken)
	}
	return a.verifyJWT(ctx, token, id)
}

// jwtShaped reports whether token looks like a compact JWS: three
// base64url segments, the first a JSON object.
func jwtShaped(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > maxTokenBytes {
		return false
	}
	var head map[string]any
	return decodeSegment(parts[0], &head) == nil
}

func deny(reason string) *denial {
	d := denials[reason]
	return &d
}

// verifyJWT checks an RS256 JWT: algorithm, key, signature, claims.
func (a *authenticator) verifyJWT(ctx context.Context, token string, id identity) (identity, *denial) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return id, deny(ReasonMalformedToken)
	}
	var head struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &head); err != nil {
		return id, deny(ReasonMalformedToken)
	}
	// What a refused token claims, for the audit (claims_verified false).
	var unverified struct {
		Sub any `json:"sub"`
		JTI any `json:"jti"`
		Exp any `json:"exp"`
	}
	if decodeSegment(parts[1], &unverified) == nil {
		id.sub, id.jti = claimString(unverified.Sub), claimString(unverified.JTI)
		if f, ok := unverified.Exp.(float64); ok && f > 0 && f < 1e11 {
			t := time.Unix(int64(f), 0).UTC()
			id.exp = &t
		}
	}
	if head.Alg != string(jose.RS256) {
		return id, deny(ReasonBadAlgorithm)
	}
	// The allowlist again, in the library: nothing but RS256 is ever verified.
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		// Auth0 names the signing key of every token it issues.
		return id, deny(ReasonMalformedToken)
	}
	key, err := a.keys.get(ctx, tok.Headers[0].KeyID)
	switch {
	case errors.Is(err, errJWKSUnavailable):
		return id, deny(ReasonJWKSUnavailable)
	case err != nil:
		return id, deny(ReasonUnknownKID)
	}
	var std jwt.Claims
	var extra struct {
		Scope       string   `json:"scope"`
		Permissions []string `json:"permissions"`
	}
	if err := tok.Claims(key, &std, &extra); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return id, deny(ReasonBadSignature)
		}
		return id, deny(ReasonMalformedToken)
	}
	// Verified from here on: the audit takes the claims as they are.
	id.verified = true
	id.sub, id.jti, id.exp = clip(std.Subject), clip(std.ID), nil
	if std.Expiry != nil {
		t := std.Expiry.Time().UTC()
		id.exp = &t
	}
	if std.Expiry == nil || std.Subject == "" || std.ID == "" {
		// Every action must be traceable to a person and a token.
		return id, deny(ReasonMissingClaims)
	}
	err = std.ValidateWithLeeway(jwt.Expected{
		Issuer:      a.cfg.Issuer,
		AnyAudience: jwt.Audience{a.cfg.Audience},
		Time:        a.clock.Now(),
	}, a.cfg.Leeway)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return id, deny(ReasonBadIssuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return id, deny(ReasonBadAudience)
	case errors.Is(err, jwt.ErrExpired):
		return id, deny(ReasonExpired)
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return id, deny(ReasonNotYetValid)
	default:
		return id, deny(ReasonInvalidToken)
	}
	id.scopes = map[string]bool{}
	for _, s := range strings.Fields(extra.Scope) {
		id.scopes[s] = true
	}
	for _, s := range extra.Permissions {
		id.scopes[s] = true
	}
	return id, nil
}

// decodeSegment decodes one base64url (unpadded) JSON segment of a JWT.
func decodeSegment(seg string, v any) error {
	data, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// claimString returns a string claim, clipped; other types give "".
func claimString(v any) string {
	s, _ := v.(string)
	return clip(s)
}

// clip bounds a claim copied into the audit entry, on a character
// boundary.
func clip(s string) string {
	if len(s) <= maxClaimBytes {
		return s
	}
	cut := maxClaimBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
