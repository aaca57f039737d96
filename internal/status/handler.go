package status

import (
	"bytes"
	"cmp"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// refreshSeconds is how often the page reloads itself.
	refreshSeconds = 2
	// minRateInterval is the shortest time over which a rate is measured:
	// a view sooner after the previous one (a second tab) shows the rates
	// of the previous view rather than the noise of a few milliseconds.
	minRateInterval = time.Second
	// maxRateAge is the longest time over which a rate is measured: after
	// a longer pause the next view starts afresh and shows no rates, rather
	// than an average over the pause presented as current.
	maxRateAge = time.Minute
)

// Options configure the status page.
type Options struct {
	// Title heads the page; default "authpipe".
	Title string
	// Retention is Auth0's log retention (AUTH0_LOG_RETENTION), against
	// which the checkpoint lag is drawn; 0 shows the lag without a bar.
	Retention time.Duration
	// Clock gives the time of a view; default time.Now.
	Clock func() time.Time
}

// NewHandler returns the status page: GET and HEAD of / render the page
// from g; other paths are 404, other methods 405.
func NewHandler(g prometheus.Gatherer, opts Options) http.Handler {
	opts.Title = cmp.Or(opts.Title, "authpipe")
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	opts.Retention = max(opts.Retention, 0)
	return &handler{g: g, opts: opts}
}

type handler struct {
	g    prometheus.Gatherer
	opts Options

	mu sync.Mutex
	// base is the snapshot rates are measured from, taken at baseAt.
	base    Summary
	baseAt  time.Time
	hasBase bool
	// last is the latest snapshot with rates, reused by views that come
	// sooner than minRateInterval after base.
	last    Summary
	hasLast bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}

	now := h.opts.Clock()
	s, err := Snapshot(h.g)
	for i := range s.Tenants {
		s.Tenants[i].RetentionSeconds = h.opts.Retention.Seconds()
	}
	// A HEAD (a probe) does not move the rate baseline of the people watching.
	s = h.withRates(s, now, r.Method == http.MethodGet)

	var body bytes.Buffer
	if err := pageTemplate.Execute(&body, newPageView(h.opts.Title, now, s, err)); err != nil {
		http.Error(w, "render status page", http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	_, _ = w.Write(body.Bytes())
}

// withRates sets the rates of cur, taken at now, from the stored baseline,
// and with advance makes cur the new baseline when it was used. cur must
// not be modified once stored: other views read it.
func (h *handler) withRates(cur Summary, now time.Time, advance bool) Summary {
	h.mu.Lock()
	defer h.mu.Unlock()
	elapsed := now.Sub(h.baseAt)
	switch {
	case !h.hasBase || elapsed < 0 || elapsed > maxRateAge:
		if advance {
			h.base, h.baseAt, h.hasBase = cur, now, true
			h.last, h.hasLast = Summary{}, false
		}
	case elapsed >= minRateInterval:
		cur.SetRates(h.base, elapsed)
		if advance {
			h.base, h.baseAt = cur, now
			h.last, h.hasLast = cur, true
		}
	case h.hasLast:
		copyRates(&cur, h.last)
	}
	return cur
}

// copyRates gives cur the rates measured for from.
func copyRates(cur *Summary, from Summary) {
	rates := byStage(from, func(st Stage) float64 { return st.RatePerSec })
	for i := range cur.Tenants {
		t := &cur.Tenants[i]
		for j := range t.Stages {
			t.Stages[j].RatePerSec = rates[stageKey{t.Name, t.Stages[j].Name}]
		}
	}
	cur.RateInterval = from.RateInterval
}
