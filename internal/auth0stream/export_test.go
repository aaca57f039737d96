package auth0stream

import "time"

// LastEvent returns when the receiver last committed a request with events
// for tenant (new or duplicate), and false before the first.
func (r *Receiver) LastEvent(tenant string) (time.Time, bool) {
	t, ok := r.tenants[tenant]
	if !ok {
		return time.Time{}, false
	}
	ns := t.lastNS.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
