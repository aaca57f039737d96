package config

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// Stream configures the Auth0 Log Streams receiver (package auth0stream)
// and how polling relies on it. The receiver is off unless Listen is set;
// each tenant's Authorization token is its Auth0.StreamToken.
type Stream struct {
	// Listen is the address of the receiver's own listener (it faces the
	// internet, behind a TLS proxy; /metrics and the admin API must not).
	Listen string
	// HealthyWindow: the stream counts as healthy while it delivered
	// events within this window.
	HealthyWindow time.Duration
	// PollInterval replaces AUTH0_POLL_INTERVAL while the stream is
	// healthy: polling stays the proof that nothing was missed, at a pace
	// that spares the tenant's rate limit.
	PollInterval time.Duration
}

// Enabled reports whether the receiver is served.
func (s Stream) Enabled() bool { return s.Listen != "" }

// minStreamToken is the shortest Authorization token accepted: the header
// is the only credential of a listener that faces the internet.
const minStreamToken = 32

// checkStreamToken never quotes the token. Auth0 sends it verbatim as the
// Authorization header, so it must be a valid header value that HTTP does
// not alter: printable ASCII (spaces inside allowed, as in "Bearer …"),
// no white space at either end.
func checkStreamToken(v string) string {
	const hint = " (e.g. Bearer followed by the output of: openssl rand -hex 32)"
	if len(v) < minStreamToken {
		return fmt.Sprintf("must be at least %d characters%s", minStreamToken, hint)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < ' ' || v[i] > '~' {
			return "must be printable ASCII: Auth0 sends it as an HTTP header" + hint
		}
	}
	if strings.TrimSpace(v) != v {
		return "must not begin or end with a space: HTTP drops it from the header" + hint
	}
	return ""
}

// streamProblems checks what the Log Streams settings require of each
// other and of every tenant once the receiver is on: a listener of its
// own, a token for each tenant, different tokens, and a healthy-stream
// poll interval no shorter than the tenant's normal one.
func (c *Config) streamProblems() []string {
	if !c.Stream.Enabled() {
		return nil
	}
	var problems []string
	if sameListener(c.Stream.Listen, c.Listen) {
		problems = append(problems, fmt.Sprintf("AUTHPIPE_STREAM_LISTEN: %q is the address of AUTHPIPE_LISTEN %q: the receiver needs a listener of its own (it faces the internet; /metrics and the admin API must not)",
			c.Stream.Listen, c.Listen))
	}
	byToken := map[Secret]string{}
	for i, t := range c.AllTenants() {
		name, where := "AUTH0_STREAM_TOKEN", "AUTH0_STREAM_TOKEN or AUTH0_STREAM_TOKEN_FILE"
		if len(c.Tenants) > 0 {
			env := TenantEnv("AUTH0_STREAM_TOKEN", t.Name)
			name = fmt.Sprintf("%s[%d].auth0.stream_token", keyTenants, i)
			where = fmt.Sprintf("in the file, or %s or %s_FILE", env, env)
		}
		switch other, dup := byToken[t.Auth0.StreamToken]; {
		case t.Auth0.StreamToken == "":
			problems = append(problems, fmt.Sprintf("%s is required when AUTHPIPE_STREAM_LISTEN is set (%s): the Authorization Token of the tenant's Log Stream", name, where))
		case dup:
			problems = append(problems, fmt.Sprintf("%s is also the stream token of tenant %q: give each tenant's stream its own, or one could write into the other's buffer", name, other))
		default:
			byToken[t.Auth0.StreamToken] = t.Name
		}
		if c.Stream.PollInterval < t.Auth0.PollInterval {
			problems = append(problems, fmt.Sprintf("AUTHPIPE_STREAM_POLL_INTERVAL: %s is shorter than the poll interval %s of tenant %q (AUTH0_POLL_INTERVAL): polling while the stream is healthy should be slower, not faster",
				formatDuration(c.Stream.PollInterval), formatDuration(t.Auth0.PollInterval), t.Name))
		}
		if c.Stream.PollInterval > t.Auth0.LogRetention/2 {
			problems = append(problems, fmt.Sprintf("AUTHPIPE_STREAM_POLL_INTERVAL: %s is more than half the log retention %s of tenant %q (AUTH0_LOG_RETENTION): logs the stream missed could expire before a poll",
				formatDuration(c.Stream.PollInterval), formatDuration(t.Auth0.LogRetention), t.Name))
		}
	}
	return problems
}

// sameListener reports whether two host:port listen addresses would
// collide: the same port, and the same host or a wildcard on either side.
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}
