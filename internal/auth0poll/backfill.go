package auth0poll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/auth0/go-auth0/management"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/logrepeat"
)

// backfillMaxAttempts bounds the attempts at one page of a backfill: it is
// an operator's one-off job, which reports the failure (and can simply be run
// again, dedupe makes that safe) rather than retry for ever like Run.
const backfillMaxAttempts = 8

// ErrBeyondRetention is returned (wrapped) by Backfill for a window that
// starts before Auth0's retention: those logs are gone.
var ErrBeyondRetention = errors.New("starts before Auth0's log retention")

// BackfillResult is the progress of a Backfill.
type BackfillResult struct {
	Since, Until time.Time // the window
	Pages        int       // pages fetched and appended
	Fetched      int       // logs of the window fetched
	Added        int       // of those, new to the buffer; the rest were buffered already
	Position     time.Time // time of the last log_id handled; Since before the first page
	Done         bool      // the whole window was fetched
}

// Backfill polls the window [since, until) of the tenant's logs again into
// the buffer, with the same client, rate-limit pacing and page decoding as
// Run. It pages in checkpoint mode from a synthetic checkpoint at since
// (auth0log.CheckpointAt) and appends every page with no checkpoint, so the
// tenant's stored checkpoint never moves; the buffer's dedupe by log_id
// absorbs whatever was buffered already, so running it over a window that
// was polled before, twice, or while Run polls the same tenant, adds each
// log at most once. It stops at the first log_id at or after until (zero:
// now) or at the newest log.
//
// since must lie within the retention (now − Config.Retention): older logs
// are gone, and Auth0 would silently answer with the oldest retained ones
// (ErrBeyondRetention). A failing page is retried with backoff, at most
// backfillMaxAttempts times; then Backfill returns the error with the
// progress so far. progress, if not nil, is called after every page.
// Backfilled logs count in the buffer's metrics, not in
// authpipe_auth0_events_polled_total. Backfill may run while Run runs.
func (p *Poller) Backfill(ctx context.Context, since, until time.Time, progress func(BackfillResult)) (BackfillResult, error) {
	now := p.clock.Now()
	if until.IsZero() {
		until = now
	}
	res := BackfillResult{Since: since.UTC(), Until: until.UTC(), Position: since.UTC()}
	// A minute's slack: "--since 144h" is computed a moment before this
	// check, and retention is not exact to the second anyway.
	if horizon := now.Add(-p.cfg.Retention); since.Before(horizon.Add(-gapSlack)) {
		return res, fmt.Errorf("backfill from %s: %w (%s: nothing before %s)",
			since.UTC().Format(time.RFC3339), ErrBeyondRetention, p.cfg.Retention, horizon.UTC().Format(time.RFC3339))
	}
	if !since.Before(until) {
		return res, fmt.Errorf("backfill: since %s is not before until %s",
			since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
	}
	api, err := p.newAPI(ctx)
	if err != nil {
		return res, fmt.Errorf("backfill: build management client: %w", err)
	}
	from, stop := auth0log.CheckpointAt(since), auth0log.CheckpointAt(until)
	log := p.log.With("backfill_since", res.Since, "backfill_until", res.Until)
	log.Info("auth0 backfill started")
	started := p.clock.Now()
	rep := logrepeat.New(log, p.clock, 0)
	bo := backoff{base: minBackoff, max: p.cfg.MaxBackoff}
	attempts := 0
	for {
		if d := p.rl.wait(p.clock.Now()); d > 0 && !p.sleep(ctx, d) {
			return res, ctx.Err()
		}
		logs, err := fetchPage(ctx, api, from, p.cfg.PageSize)
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			attempts++
			var apiErr management.Error
			wait := bo.next()
			if errors.As(err, &apiErr) && apiErr.Status() == http.StatusTooManyRequests {
				wait = max(wait, p.rl.after429(p.clock.Now()))
			}
			if attempts >= backfillMaxAttempts {
				return res, fmt.Errorf("backfill: fetch logs after %s: %d attempts failed: %s", from, attempts, p.redact(err))
			}
			rep.Fail(ctx, "page", slog.LevelWarn, "auth0 backfill page failed; retrying", errors.New(p.redact(err)),
				"from", from, "attempt", attempts, "retry_in", wait.String())
			if !p.sleep(ctx, wait) {
				return res, ctx.Err()
			}
			continue
		}
		attempts = 0
		bo.reset()
		rep.OK(ctx, "page")

		inWindow := logs
		if i := slices.IndexFunc(logs, func(l auth0log.Log) bool { return l.ID >= stop }); i >= 0 {
			inWindow = logs[:i]
		}
		if len(inWindow) > 0 {
			added, err := p.buf.Append(ctx, inWindow, "")
			if err != nil {
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				return res, fmt.Errorf("backfill: append page after %s: %w", from, err)
			}
			last := inWindow[len(inWindow)-1].ID
			from = last
			res.Pages++
			res.Fetched += len(inWindow)
			res.Added += added
			if t, err := auth0log.IDTime(last); err == nil {
				res.Position = t.UTC()
			}
		}
		res.Done = len(inWindow) < len(logs) || len(logs) < p.cfg.PageSize
		if res.Done {
			res.Position = res.Until
		}
		if progress != nil {
			progress(res)
		}
		if res.Done {
			log.Info("auth0 backfill done", "pages", res.Pages, "fetched", res.Fetched, "added", res.Added,
				"duplicates", res.Fetched-res.Added, "took", p.clock.Since(started).Round(time.Millisecond).String())
			return res, nil
		}
	}
}
