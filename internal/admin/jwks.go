package admin

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// maxJWKSBytes bounds a key set response.
	maxJWKSBytes = 1 << 20
	// minRSABits is the smallest RSA key used.
	minRSABits = 2048
)

var (
	errUnknownKID      = errors.New("no key with this kid")
	errJWKSUnavailable = errors.New("signing keys unavailable")
)

// keySet caches the tenant's signing keys. A lookup of a kid it does not
// hold, or with keys older than maxAge, fetches the set again, at most once
// per minRefresh; a failed fetch keeps the keys it had. Fetches are
// serialised: concurrent lookups wait for the one in flight.
type keySet struct {
	url        string
	name       string // url without credentials, for messages
	client     *http.Client
	clock      clockwork.Clock
	minRefresh time.Duration
	maxAge     time.Duration
	log        *slog.Logger
	refreshes  *prometheus.CounterVec

	mu        sync.Mutex
	keys      map[string]*rsa.PublicKey
	fetched   bool // at least one fetch succeeded
	fetchedAt time.Time
	tried     bool
	triedAt   time.Time
}

// get returns the key for kid.
func (s *keySet) get(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	k, ok := s.keys[kid]
	if ok && s.fetched && now.Sub(s.fetchedAt) < s.maxAge {
		return k, nil
	}
	if !s.tried || now.Sub(s.triedAt) >= s.minRefresh {
		s.refresh(ctx, now)
		k, ok = s.keys[kid]
	}
	switch {
	case ok:
		return k, nil // possibly stale, when a refresh failed or was not due
	case !s.fetched:
		return nil, errJWKSUnavailable
	default:
		return nil, errUnknownKID
	}
}

func (s *keySet) refresh(ctx context.Context, now time.Time) {
	s.tried, s.triedAt = true, now
	keys, err := s.fetch(ctx)
	if err != nil {
		s.refreshes.WithLabelValues("error").Inc()
		s.log.Warn("fetch admin API signing keys; keeping the keys cached", "err", err, "keys_cached", len(s.keys))
		return
	}
	s.refreshes.WithLabelValues("success").Inc()
	s.keys, s.fetched, s.fetchedAt = keys, true, now
	s.log.Debug("admin API signing keys fetched", "keys", len(keys))
}

// fetch reads the key set: the RSA signing keys usable for RS256.
func (s *keySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	// A client that hangs up must not waste the rate-limited refresh.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultJWKSTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("build JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get JWKS %s: %w", s.name, redactURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read JWKS %s: %w", s.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get JWKS %s: status %d", s.name, resp.StatusCode)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS %s: larger than %d bytes", s.name, maxJWKSBytes)
	}
	return parseJWKS(body)
}

// parseJWKS returns the usable keys of a JWK set by kid: RSA public keys
// of at least minRSABits, use "sig" or none, alg RS256 or none, with a kid.
// Other keys are skipped; a set without a usable key is an error.
func parseJWKS(body []byte) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue // a key type or parameter we do not use
		}
		pub, ok := k.Public().Key.(*rsa.PublicKey)
		if !ok || k.KeyID == "" || pub.N.BitLen() < minRSABits {
			continue
		}
		if (k.Use != "" && k.Use != "sig") || (k.Algorithm != "" && k.Algorithm != string(jose.RS256)) {
			continue
		}
		keys[k.KeyID] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no RS256 signing key of at least 2048 bits")
	}
	return keys, nil
}

// redactURLError drops the URL net/http repeats in its errors (already
// named by the caller).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}
