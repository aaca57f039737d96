package sim

import (
	"cmp"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jonboulle/clockwork"
)

// JWKSPath is where Auth0 serves a tenant's signing keys.
const JWKSPath = "/.well-known/jwks.json"

// JWKSOptions configure a JWKS issuer.
type JWKSOptions struct {
	// Issuer is the iss claim of minted tokens; Auth0's is
	// "https://<tenant domain>/" (with the trailing slash).
	Issuer string
	// Audience is the aud claim of minted tokens (the API identifier).
	Audience string
	// Clock dates iat, nbf and exp; default the real clock.
	Clock clockwork.Clock
	// TTL is the lifetime of minted tokens; default 1h.
	TTL time.Duration
	// Bits is the RSA key size; default 2048.
	Bits int
}

// JWKS is an Auth0 tenant's token issuer as an API sees it: an http.Handler
// serving the public keys at GET /.well-known/jwks.json (the shape Auth0
// serves: kty, use, alg, kid, n, e), and the minting of RS256 access tokens
// signed with the current key, plus the broken and hostile tokens an API
// must refuse. Faithful: Auth0's JWKS format and its access tokens' claims
// (iss, sub, aud, iat, exp, scope, azp, jti where added). Simplified: no
// x5c/x5t, no key rotation schedule (PendingKey and Publish rotate), tokens are not
// issued over /oauth/token.
type JWKS struct {
	opts  JWKSOptions
	mu    sync.Mutex
	keys  []*jwksKey // served, newest last
	cur   *jwksKey   // signs minted tokens
	stray *jwksKey   // signs unknown-kid tokens; never served
	seq   int
	stats JWKSStats
	fail  int // next fail requests answer 500
}

type jwksKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// JWKSStats counts the key set's requests.
type JWKSStats struct {
	Requests int // GET /.well-known/jwks.json answered 200
	Failed   int // answered 500 by FailNext
}

// NewJWKS returns an issuer with one signing key. It generates RSA keys,
// so it panics only if the system's random source fails.
func NewJWKS(opts JWKSOptions) *JWKS {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	opts.TTL = cmp.Or(opts.TTL, time.Hour)
	opts.Bits = cmp.Or(opts.Bits, 2048)
	j := &JWKS{opts: opts}
	j.cur = j.newKey()
	j.keys = []*jwksKey{j.cur}
	return j
}

func (j *JWKS) newKey() *jwksKey {
	priv, err := rsa.GenerateKey(rand.Reader, j.opts.Bits)
	if err != nil {
		panic(fmt.Sprintf("sim: generate RSA key: %v", err))
	}
	j.seq++
	return &jwksKey{kid: fmt.Sprintf("sim-key-%d-%x", j.seq, priv.N.Bytes()[:4]), priv: priv}
}

// PendingKey creates a key that signs from now on but is served only after
// Publish: a rotation the verifier has not seen yet. It returns the kid.
func (j *JWKS) PendingKey() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cur = j.newKey()
	return j.cur.kid
}

// Publish serves the current signing key if it is not served yet.
func (j *JWKS) Publish() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !slices.Contains(j.keys, j.cur) {
		j.keys = append(j.keys, j.cur)
	}
}

// KID returns the kid of the current signing key.
func (j *JWKS) KID() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cur.kid
}

// PublicKey returns the current signing key's public key.
func (j *JWKS) PublicKey() *rsa.PublicKey {
	j.mu.Lock()
	defer j.mu.Unlock()
	return &j.cur.priv.PublicKey
}

// FailNext makes the next n key set requests answer 500.
func (j *JWKS) FailNext(n int) {
	j.mu.Lock()
	j.fail = n
	j.mu.Unlock()
}

// Stats returns the request counts so far.
func (j *JWKS) Stats() JWKSStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stats
}

// ServeHTTP serves GET /.well-known/jwks.json.
func (j *JWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != JWKSPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	j.mu.Lock()
	if j.fail > 0 {
		j.fail--
		j.stats.Failed++
		j.mu.Unlock()
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	j.stats.Requests++
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range j.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "RS256", Use: "sig"})
	}
	j.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400")
	_ = json.NewEncoder(w).Encode(set)
}

// Claims are a token's claims; Mint fills in the defaults.
type Claims map[string]any

// defaults returns the claims of a valid token at the clock's now: iss,
// aud, sub, iat, exp, jti.
func (j *JWKS) defaults() Claims {
	now := j.opts.Clock.Now()
	j.seq++
	return Claims{
		"iss": j.opts.Issuer,
		"aud": j.opts.Audience,
		"sub": "auth0|sim-operator",
		"azp": "sim-client",
		"iat": now.Unix(),
		"exp": now.Add(j.opts.TTL).Unix(),
		"jti": fmt.Sprintf("sim-jti-%d-%d", now.UnixNano(), j.seq),
	}
}

// merge returns the defaults overridden by claims; a nil value removes
// the claim.
func (j *JWKS) merge(claims Claims) Claims {
	c := j.defaults()
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// MintToken returns a valid RS256 access token signed with the current
// key: the default claims (iss, aud, sub, azp, iat, exp, jti) overridden by
// claims (a nil value removes one). Give scopes as claims{"scope": "read:status write:dlq"}.
func (j *JWKS) MintToken(claims Claims) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return signRS256(j.cur, j.merge(claims))
}

// Expired returns a token that expired an hour ago.
func (j *JWKS) Expired(claims Claims) string {
	now := j.opts.Clock.Now()
	return j.MintToken(with(claims, Claims{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}))
}

// NotYetValid returns a token whose nbf is an hour ahead.
func (j *JWKS) NotYetValid(claims Claims) string {
	now := j.opts.Clock.Now()
	return j.MintToken(with(claims, Claims{"nbf": now.Add(time.Hour).Unix()}))
}

// WrongAudience returns a token for another API.
func (j *JWKS) WrongAudience(claims Claims) string {
	return j.MintToken(with(claims, Claims{"aud": "https://another-api.example.com/"}))
}

// WrongIssuer returns a token from another tenant's issuer URL (signed by
// this key set).
func (j *JWKS) WrongIssuer(claims Claims) string {
	return j.MintToken(with(claims, Claims{"iss": "https://another-tenant.eu.auth0.com/"}))
}

// UnknownKID returns a token signed with a key the set never serves,
// under a kid nobody knows.
func (j *JWKS) UnknownKID(claims Claims) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stray == nil {
		j.stray = j.newKey()
		j.stray.kid = "stray-" + j.stray.kid
	}
	return signRS256(j.stray, j.merge(claims))
}

// AlgNone returns an unsigned token (alg "none", empty signature) with the
// current kid.
func (j *JWKS) AlgNone(claims Claims) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	head := map[string]any{"alg": "none", "typ": "JWT", "kid": j.cur.kid}
	return encodeSegment(head) + "." + encodeSegment(j.merge(claims)) + "."
}

// HS256WithPublicKey returns the algorithm-confusion attack: a token with
// alg HS256 and the current kid, "signed" by HMAC-SHA256 keyed with the
// current public key as PEM (what a verifier that lets the token pick the
// algorithm would use as the HMAC secret).
func (j *JWKS) HS256WithPublicKey(claims Claims) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(&j.cur.priv.PublicKey)
	if err != nil {
		panic(fmt.Sprintf("sim: marshal public key: %v", err))
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	head := map[string]any{"alg": "HS256", "typ": "JWT", "kid": j.cur.kid}
	signing := encodeSegment(head) + "." + encodeSegment(j.merge(claims))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + b64(mac.Sum(nil))
}

// Tampered returns a valid token whose payload was changed after signing
// (the scope widened): the signature no longer matches.
func (j *JWKS) Tampered(claims Claims) string {
	tok := j.MintToken(claims)
	parts := strings.Split(tok, ".")
	var c Claims
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(payload, &c)
	c["scope"] = "read:status read:rules write:rules read:dlq write:dlq read:backfill write:backfill"
	return parts[0] + "." + encodeSegment(c) + "." + parts[2]
}

func with(claims, extra Claims) Claims {
	out := maps.Clone(claims)
	if out == nil {
		out = Claims{}
	}
	maps.Copy(out, extra)
	return out
}

func signRS256(k *jwksKey, claims Claims) string {
	head := map[string]any{"alg": "RS256", "typ": "JWT", "kid": k.kid}
	signing := encodeSegment(head) + "." + encodeSegment(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.priv, crypto.SHA256, sum[:])
	if err != nil {
		panic(fmt.Sprintf("sim: sign token: %v", err))
	}
	return signing + "." + b64(sig)
}

func encodeSegment(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sim: encode token segment: %v", err))
	}
	return b64(data)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
