package sim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

// TestJWKS: the key set is served in Auth0's shape, minted tokens verify
// against it with their kid, and each hostile token is what it says.
func TestJWKS(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	j := NewJWKS(JWKSOptions{Issuer: "https://t.eu.auth0.com/", Audience: "https://api", Clock: clock})
	srv := httptest.NewServer(j)
	t.Cleanup(srv.Close)

	fetch := func() map[string]*rsa.PublicKey {
		resp, err := http.Get(srv.URL + JWKSPath)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		var set struct {
			Keys []struct{ Kty, Use, Alg, Kid, N, E string }
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&set))
		keys := map[string]*rsa.PublicKey{}
		for _, k := range set.Keys {
			require.Equal(t, "RSA", k.Kty)
			require.Equal(t, "sig", k.Use)
			require.Equal(t, "RS256", k.Alg)
			n, err := base64.RawURLEncoding.DecodeString(k.N)
			require.NoError(t, err)
			e, err := base64.RawURLEncoding.DecodeString(k.E)
			require.NoError(t, err)
			keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		}
		return keys
	}
	parse := func(tok string) (head, claims map[string]any, verify func(*rsa.PublicKey) error) {
		parts := strings.Split(tok, ".")
		require.Len(t, parts, 3)
		for i, dst := range []*map[string]any{&head, &claims} {
			data, err := base64.RawURLEncoding.DecodeString(parts[i])
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(data, dst))
		}
		return head, claims, func(k *rsa.PublicKey) error {
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil {
				return err
			}
			sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
			return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig)
		}
	}

	keys := fetch()
	require.Len(t, keys, 1)
	head, claims, verify := parse(j.MintToken(Claims{"scope": "read:status", "sub": nil}))
	require.Equal(t, "RS256", head["alg"])
	require.Equal(t, j.KID(), head["kid"])
	require.NoError(t, verify(keys[j.KID()]))
	require.Equal(t, "https://t.eu.auth0.com/", claims["iss"])
	require.Equal(t, "https://api", claims["aud"])
	require.Equal(t, "read:status", claims["scope"])
	require.NotContains(t, claims, "sub", "nil removes a claim")
	require.EqualValues(t, clock.Now().Add(time.Hour).Unix(), claims["exp"])
	require.NotEmpty(t, claims["jti"])

	_, claims, _ = parse(j.Expired(nil))
	require.Less(t, claims["exp"].(float64), float64(clock.Now().Unix()))
	_, claims, _ = parse(j.NotYetValid(nil))
	require.Greater(t, claims["nbf"].(float64), float64(clock.Now().Unix()))
	_, claims, _ = parse(j.WrongAudience(nil))
	require.NotEqual(t, "https://api", claims["aud"])
	_, claims, _ = parse(j.WrongIssuer(nil))
	require.NotEqual(t, "https://t.eu.auth0.com/", claims["iss"])
	head, _, verify = parse(j.UnknownKID(nil))
	require.NotContains(t, keys, head["kid"])
	require.Error(t, verify(keys[j.KID()]))
	none := j.AlgNone(nil)
	require.True(t, strings.HasSuffix(none, "."))
	head, _, _ = parse(none)
	require.Equal(t, "none", head["alg"])
	head, _, _ = parse(j.HS256WithPublicKey(nil))
	require.Equal(t, "HS256", head["alg"])
	require.Equal(t, j.KID(), head["kid"])
	_, claims, verify = parse(j.Tampered(Claims{"scope": "read:status"}))
	require.Contains(t, claims["scope"], "write:dlq")
	require.Error(t, verify(keys[j.KID()]))

	// Rotation: a pending key signs before it is served.
	old := j.KID()
	kid := j.PendingKey()
	require.NotContains(t, fetch(), kid)
	j.Publish()
	keys = fetch()
	require.Contains(t, keys, kid)
	require.Contains(t, keys, old)
	_, _, verify = parse(j.MintToken(nil))
	require.NoError(t, verify(keys[kid]))

	j.FailNext(1)
	resp, err := http.Get(srv.URL + JWKSPath)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 500, resp.StatusCode)
	require.Equal(t, JWKSStats{Requests: 3, Failed: 1}, j.Stats())
}
