// Package audit is authpipe's audit trail: the entries the admin API and
// the commands that read or change data (authpipe dlq, authpipe backfill)
// write, the sinks that store them, their hash chain, and its verification.
//
// Guarantee: the trail is fail-closed and tamper-evident.
//
//   - Trail.Record returns nil only once at least one sink stored every
//     part of an entry durably (a file: written in one write and fsynced;
//     Redis: the append script answered). Callers act, and show data, only
//     then; otherwise they refuse (the admin API answers 503, a command
//     exits 1) and record the refusal with Defer.
//   - A sink that fails keeps the entries it missed, in memory, up to
//     MaxPending, and writes them in order, before anything newer, once it
//     works again (next Record, Defer or Flush). Beyond MaxPending the
//     oldest are dropped and a "gap" entry in their place says how many.
//     What a sink still holds when the process exits is lost (logged).
//     Writing is at least once: a Redis append whose reply is lost is
//     retried, so an entry may appear twice in the stream (same id, both
//     on the chain).
//   - Each sink is one hash chain: every entry carries seq (its position,
//     from 1) and prev (the hash of the entry before it in that sink:
//     base64url, unpadded, SHA-256 of that entry's line exactly as stored).
//     Deleting or editing an entry breaks the link of the entry after it,
//     which VerifyFile and VerifyRedis name. The chain is per sink, not per
//     writer: the file sink serialises every process appending to it with
//     flock and chains to the file's last line; the Redis sink appends
//     through a compare-and-append script that chains to the stream's last
//     entry, whichever replica wrote it. A writer that lost the race reads
//     the new end and tries again. So however many replicas and commands
//     write, each sink holds one linear chain, verifiable on its own.
//   - The Redis stream (DefaultKeys: one for the deployment) is trimmed by
//     age from the head only; each trim of an intact head records in
//     the chain record where the chain now starts, and each append where it ends.
//     VerifyRedis accepts a head trimmed that way and nothing else: an
//     entry missing at the head, in the middle or at the end is reported.
//     A file's head may be trimmed by rotation: VerifyFile accepts any
//     start and checks every link after it.
//   - The chain detects changes by anyone who does not rewrite every entry
//     after the one changed (and, on Redis, the chain record). It is not a
//     signature: someone able to rewrite the whole sink can forge a
//     consistent chain. Keep the file on storage the worker can append to
//     but others cannot rewrite, or ship it off the host.
//
// # Entry
//
// One JSON object per line (a file), or the field "entry" of a stream
// entry (Redis). Fields in this order; those down to latency_seconds are
// always present:
//
//	seq               position in this sink's chain, from 1
//	prev              hash of the previous entry of this sink ("" for seq 1)
//	id                request id (16 hex): shared by the parts and the result of one request
//	kind              request: written before anything is done or shown;
//	                  result: the outcome of a change, after it took effect;
//	                  gap: stands for entries this sink lost (affected: how many)
//	part, parts       part of parts: a long list is split over entries sharing id
//	time              request time, RFC 3339 UTC
//	host              host name of the writer (worker replica or command line)
//	remote_addr       client address of an HTTP request; "" for a command
//	auth              jwt, static, os (a command: sub is the OS user) or none
//	sub, jti, exp     the token's subject, id and expiry (exp null when unknown)
//	token_thumbprint  base64url SHA-256 of the compact Bearer token; "" otherwise
//	claims_verified   false when sub, jti and exp come from a refused token
//	method            HTTP method, or CLI
//	path              request path or command (segments masked, see Masker)
//	query             query parameters or command flags (masked), {} when none
//	operation         status, rules_list, rules_reload, breaches, dlq_list,
//	                  dlq_replay, dlq_drop, backfill_start, backfill_progress, unknown
//	resource          what is read or changed: tenants/<t>/dlq, rules, backfill, …
//	outcome           allowed, denied, or refused (no sink took the entry: 503)
//	reason            why denied or refused; "" when allowed
//	status            HTTP status (a command: its exit status); null in the
//	                  request entry of a change: its result entry has it
//	latency_seconds   time from the request to this entry
//
// and, when the operation has them:
//
//	tenants           tenants read or changed
//	records           dead letters returned or about to change: {id, log_id}
//	missing           ids asked for that are not dead letters
//	window            a backfill's window: {since, until} (until null: now)
//	rule_files        rule files with their SHA-256: {path, sha256, error}
//	rules             rule names read
//	backfill_id       the backfill started or read
//	affected          records changed (a result), or entries lost (a gap)
package audit
