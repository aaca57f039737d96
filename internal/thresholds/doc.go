// Package thresholds is authpipe's threshold engine for one tenant: it
// counts the tenant's buffered Auth0 sign-on and failure events with its own
// consumer group, checks the rules on schedule (gocron v2) and in real time,
// keeps the breach metrics, and runs the alert lifecycle. Its parts live in
// packages of their own:
//
//	rules   the rule file format, its validation, `authpipe rules check`
//	store   the counting model; counts and alert state in Redis or in memory
//	notify  delivery to Alertmanager (API v2) and to a generic webhook
//
// `authpipe rules test` (TestFiles, unittest.go) and Replay run this
// package's evaluation in memory, on the model the engine runs.
//
// One engine (New) serves both buffer backends, with the same rules,
// counting model, evaluation and alert lifecycle; only where the counts and
// the alert state live, and who evaluates, differ:
//
//	                 Config.Buffer (*buffer.Redis)     Config.Local (*buffer.Bolt)
//	counts, alerts   Redis, shared by replicas          memory of the one process
//	count + ack      one Lua script (XACK decides)      count in memory, then Ack
//	expiry           Redis key TTLs                     pruned by the same TTLs
//	after a restart  still in Redis                     rebuilt from the buffer
//	evaluates        the holder of the Redis lease      always (one process)
//
// # Counting, and why it has its own consumer group
//
// On either backend the engine reads the tenant's stream with its own
// consumer group, "thresholds", not inside the buffer's append transaction
// and not behind the Segment forwarder:
//
//   - It is independent of Segment's health: a Segment outage, which leaves
//     the forwarder's entries pending for hours, neither delays nor blocks
//     counting, and a slow rule never slows the poller's append.
//   - It is real time: XREADGROUP (or the embedded buffer's Read) blocks
//     until the poller appends, so an event is counted within milliseconds
//     of reaching the buffer.
//   - On Redis, replicas share one count: every replica is a consumer of the
//     group, each entry goes to one of them, and the counts live in Redis.
//   - On Redis, nothing is lost or counted twice: counting and XACK are one
//     Lua script (store.Redis), so an entry redelivered after a crash
//     (ReadPending) or reclaimed from a dead replica (Reclaim) is never
//     counted twice, and an entry is never acknowledged without being
//     counted. Undecodable entries are acknowledged and counted in
//     authpipe_threshold_events_total{result="invalid"}.
//
// The group also holds back the buffer's trimming while it lags; a replica
// that stops for good leaves its pending entries to the others after
// Config.ReclaimIdle.
//
// # Counting on the embedded buffer
//
// With Config.Local (the bbolt buffer, used when REDIS_URL is unset) there
// is one process, so counts and alert state are kept in memory
// (store.Memory, the model that `rules test` runs and that TestStoresAgree
// holds to Redis' results), and the engine always evaluates
// (authpipe_threshold_leader 1). Durability comes from the buffer, not
// from the counts:
//
//   - Count, then acknowledge. A batch is counted in memory, then
//     acknowledged in one buffer transaction. An Ack that fails leaves the entries
//     pending; they are delivered again (ReadPending) and recognised by
//     their ids, which the store keeps until the Ack succeeds: counted once.
//   - Rebuilt at start. Memory does not survive a restart, but the events
//     do: the buffer keeps raw logs for its retention (AUTH0_LOG_RETENTION,
//     6 days by default), longer than the windows of the shipped rules. At
//     start, before the first check, the engine resets its group to the
//     rebuild horizon (buffer.Bolt.ResetGroup: the longest window plus one bucket
//     plus twice store.KeyGrace, in append time; entries appended earlier hold
//     events dated earlier still and are skipped with one seek), reads it
//     to the end and counts it again, with the real-time path off. A crash
//     between counting and acknowledging therefore counts nothing twice:
//     the counts die with the process and the restart counts every retained
//     entry once. A retention shorter than the horizon is logged at start:
//     the rebuilt counts then miss the oldest part of the longest windows.
//   - Alerts after a restart. Alert state is not kept either: the first
//     checks after the rebuild raise the alerts that still breach again,
//     with a new startsAt (Alertmanager identifies alerts by their labels
//     and merges them with the ones it holds; a webhook receiver sees a new
//     firing notification). An alert that stopped breaching while the
//     process was down is not resolved explicitly: Alertmanager resolves it
//     when its endsAt (four re-send intervals) passes.
//   - Bounded. Memory keys expire as Redis keys do (store.NewLocal), so
//     memory stays bounded whatever the run's length.
//
// Counts are kept per rule in event-time buckets, bounded in number and in
// groups per bucket: package store describes the model and its bounds.
//
// # Evaluation
//
// Scheduled: each rule is a gocron job on its every or cron, in singleton
// mode (LimitModeReschedule: a check still running skips the next), started
// immediately. On Redis the scheduler is given a Redis lease (package lease)
// as its distributed elector: exactly one replica runs the checks; if it
// dies, or loses Redis, another takes over within one lease period
// (Config.LeaseTTL). On the embedded buffer there is no elector: the one
// process runs them.
// A check computes every group's value (candidates at or over the
// threshold, up to 200, plus the top offenders, plus the groups with active
// alerts), sets authpipe_threshold_value{rule} (the highest value),
// authpipe_threshold_breached{rule} and
// authpipe_threshold_last_check_timestamp_seconds{rule}, raises alerts for
// newly breaching groups (at most Config.MaxAlertsPerRule per rule),
// refreshes the active ones and resolves those below the threshold, on live
// counts only (see Outages). Group values never become metric labels; they
// appear only in alerts.
//
// Real time: count and distinct rules are also evaluated, for the groups a
// batch touched, right after the batch is counted, so a breach raises its
// alert within a second of the event reaching the buffer, on whichever
// replica counted it. The scheduled check stays the source of truth: it
// alone evaluates ratio rules and resolves alerts.
//
// # Alerts
//
// Active alerts are shared state in Redis (authpipe:{tenant}:thr:alerts),
// or in memory on the embedded buffer: raising is a claim (HSETNX), so the
// real-time path and the scheduled check, on any replica, raise an alert
// once. Alerts carry the labels alertname (the rule), severity, tenant, the
// rule's labels and the group value under the group_by field's name
// (ip="203.0.113.7"), and the annotations value, threshold, window,
// top_offenders (the alert's own group first, then the highest others;
// groups_cut when the cap dropped groups) plus the rule's own. They go to
// Alertmanager and/or the webhook (package notify) with endsAt four re-send
// intervals ahead, are re-sent every Config.ResendInterval while active, and
// resolved with endsAt = now. This is the only path a breach takes to
// Alertmanager: the shipped Prometheus rules watch authpipe's health, not
// authpipe_threshold_breached (docs/runbook.md, "Alert paths").
//
// # Outages
//
// A buffer outage (Redis unreachable) is never read as an all-clear:
//
//   - Alerts stay firing. Every replica keeps a copy of the active alerts
//     as it last saw them in Redis. While Redis does not answer, the replica
//     that held the lease last re-sends them from that copy every
//     re-send interval, same startsAt, so Alertmanager never times them out.
//     Once Redis answers, the lease holder re-sends from Redis as before:
//     the same alerts, the same startsAt, no second notification.
//   - Breach gauges keep their value. Losing the lease (it runs out when
//     Redis does not answer) changes authpipe_threshold_leader only;
//     authpipe_threshold_breached and _value keep the last check's values,
//     and authpipe_threshold_last_check_timestamp_seconds says how old they
//     are. A replica zeroes them, and forgets its copy, only when Redis
//     shows that another replica took the lease (its fencing counter grew).
//   - Resolving waits for live counts. After a buffer error, and at start,
//     the counts lack what reached Auth0 meanwhile until the poller has
//     caught up, so a window can only look smaller than it is. A check then
//     raises new alerts but resolves none (they count as breached and as
//     held in CheckResult) until the counts are live: an event dated at or
//     after the last error has been counted (the poller appends in log_id
//     order, so everything before it is in), or Config.ResolveHold (5m)
//     has passed without one (a quiet tenant). authpipe_threshold_counts_live
//     says which, authpipe_threshold_newest_event_timestamp_seconds how far
//     counting has got.
//
// A replica cut off from Redis while another still reaches it (a network
// partition) keeps re-sending its copy: an alert the other replica resolved
// may fire again at Alertmanager until the partition heals, never the
// reverse. On the embedded buffer there is no outage of this kind: one
// process keeps counts and alerts in memory, and the counts start live.
//
// # Reload
//
// Reload (SIGHUP) and a poll of the rule files' sizes and modification
// times (Config.ReloadInterval) load the rules again. A reload builds and
// checks everything of the new rules that can fail before it touches the
// running ones: the files' decoding and validation, annotation templates
// included (package rules), then a scheduler with a job per rule. Only a
// complete result replaces the old: the old scheduler stops, the new rule
// set replaces the old one (one atomic pointer, which every check and the
// counting read), the new scheduler starts and checks every rule at once,
// and authpipe_rules_last_reload_successful is 1. A file that does not
// load or a job that cannot be scheduled keeps the old rules and their
// schedule running and sets it to 0. The receivers are configuration, not
// rules: a reload leaves them as they are. Alerts of removed or redefined
// rules are resolved.
package thresholds
