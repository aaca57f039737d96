package config

import (
	"strings"
	"time"
	"unicode"
)

// Admin configures the admin API under /api/v1/ (package admin). It is off
// unless Audience (Auth0-issued JWTs) or StaticToken (local use) is set.
type Admin struct {
	// Audience is the identifier of the API registered in Auth0 for
	// authpipe; setting it turns JWT authentication on.
	Audience string
	// Issuer overrides the expected iss; default "https://<auth0.domain>/"
	// (of the first tenant). See AdminIssuer.
	Issuer string
	// JWKSURL overrides where the signing keys are; default
	// AdminIssuer() + ".well-known/jwks.json". See AdminJWKSURL.
	JWKSURL string
	// StaticToken, when set, is a Bearer token allowed every operation.
	StaticToken Secret
	// AuditLog is the audit sink: "stdout" or a file path.
	AuditLog string
	// AuditRetention bounds the Redis audit stream by age.
	AuditRetention time.Duration
}

// Enabled reports whether the admin API is served.
func (a Admin) Enabled() bool { return a.Audience != "" || a.StaticToken != "" }

// AdminIssuer returns the issuer admin tokens must carry: Admin.Issuer when
// set, else Auth0's issuer of the (first) tenant's domain,
// "https://<host>/" ("http://<host>/" for a plain-HTTP simulator); "" when
// neither is known.
func (c *Config) AdminIssuer() string {
	if c.Admin.Issuer != "" {
		return c.Admin.Issuer
	}
	ts := c.AllTenants()
	if len(ts) == 0 || ts[0].Auth0.Domain == "" {
		return ""
	}
	scheme := "https://"
	if ts[0].Auth0.Insecure() {
		scheme = "http://"
	}
	return scheme + ts[0].Auth0.Host() + "/"
}

// AdminJWKSURL returns where the admin tokens' signing keys are:
// Admin.JWKSURL when set, else the issuer's /.well-known/jwks.json; "" when
// the issuer is unknown.
func (c *Config) AdminJWKSURL() string {
	if c.Admin.JWKSURL != "" {
		return c.Admin.JWKSURL
	}
	iss := c.AdminIssuer()
	if iss == "" {
		return ""
	}
	return strings.TrimSuffix(iss, "/") + "/.well-known/jwks.json"
}

// adminAudience is AUTHPIPE_ADMIN_AUDIENCE: it also checks that the issuer
// can be known.
func adminAudience() setting {
	s := optional(text("AUTHPIPE_ADMIN_AUDIENCE", "admin.audience", func(c *Config) *string { return &c.Admin.Audience }, checkNoSpace))
	check := s.check
	s.check = func(c *Config) string {
		if msg := check(c); msg != "" {
			return msg
		}
		if c.AdminIssuer() == "" {
			return "needs the token issuer: set AUTHPIPE_ADMIN_ISSUER (or auth0.domain)"
		}
		return ""
	}
	return s
}

// Secrets returns the value of every secret set (every tenant's client
// secret, write key and Log Stream token, the Redis URL and its passwords,
// the hash key, the admin static token), for masking: a path or query segment equal to one
// is never written to the audit trail or the log.
func (c *Config) Secrets() []Secret {
	var out []Secret
	add := func(s Secret) {
		if s != "" {
			out = append(out, s)
		}
	}
	// A stream token is a whole Authorization header ("Bearer xyz"): its
	// credential alone is masked too, wherever it shows without the scheme.
	addStream := func(s Secret) {
		add(s)
		if _, cred, ok := strings.Cut(s.Reveal(), " "); ok {
			add(Secret(strings.TrimSpace(cred)))
		}
	}
	add(c.Auth0.ClientSecret)
	add(c.Segment.WriteKey)
	addStream(c.Auth0.StreamToken)
	for _, t := range c.Tenants {
		add(t.Auth0.ClientSecret)
		add(t.WriteKey)
		addStream(t.Auth0.StreamToken)
	}
	add(c.Redis.URL)
	if opts, _, err := RedisOptions(c.Redis.URL.Reveal()); err == nil {
		add(Secret(opts.Password))
		add(Secret(opts.SentinelPassword))
	}
	add(c.HashKey)
	add(c.Admin.StaticToken)
	return out
}

// checkStaticToken never quotes the token.
func checkStaticToken(v string) string {
	if len(v) < 32 {
		return "must be at least 32 characters (e.g. the output of: openssl rand -hex 32)"
	}
	if strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r > unicode.MaxASCII }) >= 0 {
		return "must be printable ASCII without spaces (e.g. the output of: openssl rand -hex 32)"
	}
	return ""
}

// checkAuditLog accepts "stdout" or a file path.
func checkAuditLog(v string) string {
	if strings.ContainsAny(v, "\r\n\x00") {
		return "must be stdout or a file path"
	}
	return ""
}
