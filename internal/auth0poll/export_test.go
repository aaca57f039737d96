package auth0poll

import "time"

// LastSuccess returns when Auth0 last answered a logs request with a page
// that decoded (by the injected clock); zero if never.
func (p *Poller) LastSuccess() time.Time {
	n := p.lastSuccess.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
