// Package auth0poll polls one tenant's Auth0 logs in checkpoint mode
// (GET /api/v2/logs?from=<log_id>&take=N) and hands every page to the
// buffer together with the checkpoint that follows it.
//
// Guarantee (DESIGN.md, delivery contract 1 and 4):
//
//   - The checkpoint never advances past data that is not durably buffered.
//     A page and its checkpoint (the page's last log_id) are written by one
//     atomic Buffer.Append; only after it succeeds does the poller move on.
//     After a crash of the worker or of Redis the two roll back together and
//     the page is fetched again (the buffer dedupes by log_id).
//   - No page is ever skipped. Every failure — an error status, no response,
//     a failing token endpoint, a page that is not valid JSON or holds an
//     event that does not decode, a buffer error — is counted, logged, and
//     followed by a retry of the same page after exponential backoff with
//     jitter (capped at Config.MaxBackoff). A 429 is waited out until the
//     rate-limit reset. Only cancelling Run's context stops the retries.
//   - While catching up, the page after a full page is asked for while that
//     page is appended (one request at a time still, paced like every
//     request); it is used only if it starts at the checkpoint the append
//     left, and dropped otherwise. No prefetch is made while failures
//     repeat.
//   - On first start (no checkpoint in the buffer) polling begins at
//     now − Config.Retention, so everything Auth0 still holds is backfilled.
//   - Loss the poller cannot prevent is detected and reported: when the point
//     up to which every log is known to be buffered (see lag below) is older
//     than now − Config.Retention, Auth0 has deleted logs that were never
//     polled. This is checked before every attempt, also while polling is
//     paused or failing, so a gap is reported when it begins:
//     authpipe_auth0_gaps_total is incremented once per such episode and the
//     lost interval is logged at error level ("lost_from", "lost_until");
//     when polling gets through again it continues from the oldest log
//     Auth0 still holds and logs where it resumed. After a restart only the
//     stored checkpoint is known, so on a tenant that was silent for longer
//     than the retention the gap reported is an upper bound. The alert is
//     the Prometheus rule AuthpipeRetentionGap on the counter.
//   - A buffer that lost data is polled into again from the last point known
//     delivered. With a buffer that detects its own lost data (Recovering:
//     the Redis and embedded buffers), the poller asks it where to continue
//     (Resume) instead of reading the checkpoint — at start, and whenever
//     its loss generation changes. After lost data the answer is the point
//     up to which every event was known acknowledged by every consumer
//     group (the start of Auth0's retention when nothing was known), so the
//     events that were buffered but not yet delivered are fetched again,
//     and not the whole retention (Segment dedupes messageIds for 24 hours
//     only). A page fetched from the old position is dropped; an append the
//     buffer refused because it found the loss is not counted as a failure.
//   - While the buffer reports Full, polling pauses (authpipe_auth0_paused 1)
//     and is re-checked every Config.PollInterval: Auth0 keeps the logs
//     meanwhile, and the lag metric shows how close that comes to retention.
//
// Checkpoint lag (authpipe_auth0_checkpoint_lag_seconds) is now minus the
// later of the checkpoint's embedded time and the start of the last poll that
// returned a page that was not full. The checkpoint alone is not enough: it
// moves only when logs arrive, so on a quiet tenant it would age — and alert —
// although nothing is waiting in Auth0. A short page proves that Auth0 had
// nothing more at the time the request was sent, so that time is a point up
// to which everything is buffered. Taking the later of the two keeps the
// metric honest both ways: a backlog (only full pages) shows as the
// checkpoint's age, a quiet tenant shows as the age of the last poll.
//
// Checkpoint lag is exported next to the retention
// (authpipe_auth0_log_retention_seconds) and the share of it at which
// operators want to hear about it (authpipe_auth0_lag_alert_ratio,
// Config.LagAlertRatio), so that one Prometheus rule serves every tenant and
// plan.
//
// Rate limit: all Management API clients of a tenant draw on one token
// bucket. The poller mirrors it from the x-ratelimit-* headers of every
// response and paces itself to at most Config.RateLimitShare of it (default
// 80 %): it never takes the bucket below (1 − share) of its size, and once
// it has measured the bucket's refill rate — while draining a backlog, from
// the headers alone — it spaces requests to use at most that share of the
// refill. Full pages are fetched back to back only as far as that allows.
// See rateLimit for the rules and the measurement.
//
// Backfill re-polls a window within the retention into the buffer with the
// same client and pacing, appending without a checkpoint (the tenant's
// checkpoint never moves; the buffer's dedupe absorbs repeats). Run itself
// knows nothing of replicas: with several, the caller runs it only while it
// holds the tenant's poller lease and hands it a buffer that fences the
// checkpoint writes (see cmd/authpipe).
//
// With a Log Stream (Deps.Stream: the tenant's logs are also pushed, see
// package auth0stream) polling stays the proof that nothing was missed.
// After a poll that found Auth0 caught up, the poller waits
// Config.StreamPollInterval (default 5m) instead of PollInterval while the
// stream delivered within Config.StreamHealthyWindow (default 2m); it
// decides again when that window ends, so a stream that falls silent
// brings polling back to PollInterval at once, not after the slow wait.
// authpipe_auth0_poll_interval_seconds shows the interval in force. Before
// each append the poller asks the buffer which log_ids of the page it
// holds (Seer) and, once the page is stored, tells the stream the others
// (Stream.PolledFirst): the logs the stream had not delivered, from which
// it counts its misses. A page polled again after the buffer lost data is
// left out up to the loss (its dedupe record went too). The dedupe read
// never holds the append up: when it fails, the page is only left out of
// the count. authpipe_auth0_events_first_total counts the polled logs the
// buffer did not hold, with or without a stream.
//
// The management client is go-auth0 with client credentials, its own retries
// off (this loop owns retries), and a transport that reads the x-ratelimit-*
// headers of every attempt. Pages are read by auth0log.DecodePage from the
// raw body, so that every field of an event is kept and each event is parsed
// once: the fields the later stages read travel with it through the buffer.
package auth0poll
