// Package buffer is authpipe's durable buffer between the Auth0 poller and
// the consumers of a tenant's log events (the Segment forwarder, the
// threshold checks). Two backends keep the same contract, checked by one
// conformance suite (conformance_suite_test.go) run against both: Redis (one
// stream per tenant, consumer groups for the consumers; see Keys below) and
// Bolt, an embedded single-node backend (see Embedded backend below).
//
// Guarantee (the delivery contract of DESIGN.md, as far as the buffer owns it):
//
//   - Append is atomic. A page of logs and the checkpoint that follows it are
//     written by one Lua script, which Redis runs as one unit and writes to the
//     AOF wrapped in MULTI/EXEC. The script checks every input and every key's
//     type before its first write, so it either writes the whole page and the
//     checkpoint or nothing. After a crash of the worker or of Redis the page
//     and the checkpoint roll back together, and the next poll fetches the
//     page again. (Surviving a Redis crash needs appendonly yes; see
//     FACTS.md for the persistence settings.)
//   - Dedupe. A log is stored once per log_id within the retention: the
//     script adds it to the stream only if its log_id is in neither the
//     dedupe bucket of its hour nor (after an upgrade, until it expires) the
//     previous version's `seen` zset, and records it in the bucket in the
//     same script, so a page polled twice adds nothing the second time, also
//     after its entries left the stream. The record is exact: log_ids packed
//     to 24 bytes (dedupe.go), never hashed. A bucket is forgotten whole once
//     its hour is older than the retention (Trim, by the injected clock; and
//     Redis' EXPIREAT at the hour's end + retention + 1h, at least 1h after
//     its last write, should no authpipe trim). The checkpoint never moves
//     backwards (log_ids compare as fixed-length digit strings).
//   - At-least-once to consumers. An entry stays pending in a group until the
//     consumer acknowledges it (Ack). Pending entries that sit idle are
//     reclaimed (Reclaim) and delivered again; a consumer restarting reads its
//     own pending entries first (ReadPending). A consumer may see an entry
//     more than once; entries carry their delivery count.
//   - Entries leave once done, never while pending or undelivered. Trim
//     removes by MINID every entry below the oldest pending entry of every
//     group and the first entry any group has not been delivered yet:
//     exactly the entries every group has acknowledged, whatever their age
//     (a slow group keeps them); computed and applied in one script. While
//     the stream has no group, only entries older than the retention go.
//     (Redis 7.0 trimming deletes pending entries silently, so this bound is
//     what keeps the contract.) A pending entry found deleted anyway is
//     counted in authpipe_buffer_lost_total and logged at error: that
//     counter must stay 0. So Redis holds the backlog and the dedupe record,
//     not the retention's traffic (DESIGN.md, delivery contract 5).
//   - Fenced appends. With replicas, only the holder of a tenant's poller
//     lease may move the checkpoint: AppendFenced checks, inside the same
//     script and before its first write, that the writer's fencing token is
//     still the lease's current one (the lease's :fence counter, under the
//     tenant's hash tag). A poller that lost its lease — stalled past the
//     TTL, cut off from Redis — gets ErrFenced and writes nothing, so two
//     pollers never both write, even with a request already in flight.
//   - Back-pressure. Full reports whether the slowest group's backlog has
//     reached MaxEvents. The Redis buffer reads the backlog at most once a
//     second while its last reading left room for what it appended since
//     (the backlog only grows by appends); an append error or a group it
//     created makes it read again. Writers in other processes are seen
//     within that second.
//   - Lost data is detected, counted once and recovered (DESIGN.md,
//     delivery contract 7). A buffer remembers, in process memory, what it
//     has seen stored: the highest checkpoint, the stream, the consumer
//     groups its consumers read with (EnsureGroup), the poller lease's
//     highest fencing token, and the delivered watermark — the point up to
//     which every log has been acknowledged by every group (the second of
//     the first entry some group has not acknowledged, lowered for entries
//     added out of log_id order: backfill, replayed dead letters, a page
//     polled after a pushed log went ahead; the checkpoint when everything
//     is acknowledged). CheckLoss (every two
//     seconds in authpipe run), a read that meets NOGROUP, an append that
//     finds the stored checkpoint gone or older than expected (it writes
//     nothing: ErrDataLoss) and a lease that finds its fencing counter gone
//     backwards compare what Redis holds with that memory. Whatever they
//     find at once is one incident, however many components meet it:
//     authpipe_buffer_data_loss_total{tenant} is incremented, one ERROR
//     line names what was found and the window polled again, the
//     authpipe_buffer_data_loss_* gauges describe it (status page, admin
//     API). Recovery: the groups are recreated where delivery stood (at the
//     first unacknowledged entry when the stream still holds it, else at
//     the start of what it holds); when more than groups or the fencing
//     counter was lost, Resume hands the poller the watermark to poll from
//     again (the start of Auth0's retention if nothing was known), and
//     appends that carry a checkpoint are refused until it has taken it.
//     Redis that is slow or cannot be reached is never a sign of loss: a
//     check that gets no answer changes nothing. A fresh install (nothing
//     stored, nothing remembered) is not either. The memory is the
//     process's: a loss while no authpipe runs is noticed only as far as
//     what is left shows it (the dedupe record without the newest entry's
//     log_id, or, when every entry was acknowledged and trimmed, without
//     the highest log_id ever added).
//   - Dead letters keep their reason. An entry delivered more than
//     MaxDeliveries times, or given up by its consumer (DeadLetter), moves to
//     the tenant's dead-letter stream with its log_id, raw event, reason,
//     delivery count and time, and leaves the group's pending list in the same
//     script. Dead letters are never trimmed by this package: an operator
//     lists them (DeadLettersAfter pages on), replays them
//     (ReplayDeadLetters: the raw event back into the stream as a new entry
//     with its log_id, removed from the dead letters in the same script or
//     transaction) or drops them (DropDeadLetters); see dlq.go.
//
// Keys. Every key of a tenant shares one hash tag, authpipe:{tenant}:<name>,
// so every script and transaction also works on Redis Cluster; every script
// declares all the keys it touches:
//
//	authpipe:{t}:stream      the log stream; entry fields id (log_id), raw (JSON),
//	                         f (where the parsed fields lie in raw,
//	                         auth0log.Log.Pack; "" or absent: decode raw)
//	authpipe:{t}:checkpoint  the log_id the next poll starts after
//	authpipe:{t}:seen:<yyyymmddhh>  set of the packed log_ids dated in that
//	                         hour (UTC): the dedupe record; EXPIREAT as above
//	authpipe:{t}:seen:index  zset hour → its Unix time: the buckets, for
//	                         Trim and authpipe_buffer_dedupe_entries
//	authpipe:{t}:seen        zset log_id → its embedded time (ms): the previous
//	                         version's dedupe record, read and trimmed, never
//	                         written, until it is gone
//	authpipe:{t}:dlq         dead letters; fields id, raw, reason, deliveries,
//	                         failed_at (Unix ms), stream_id
//	authpipe:{t}:reasons     hash stream entry id → the consumer's last failure
//	authpipe:{t}:head        the highest log_id ever added to the stream
//	authpipe:{t}:behind      zset stream entry id → its log_id's second
//	                         (YYYYMMDDhhmmss), for entries added below head
//	                         (out of log_id order), until every group has
//	                         acknowledged them
//	authpipe:{t}:lease:poller(:fence)  the poller lease and its fencing
//	                         counter (package lease), read by AppendFenced
//
// Embedded backend. Bolt keeps a tenant's buffer in one bbolt file,
// buffer-<tenant>.db in the data dir (AUTHPIPE_DATA_DIR), with the same
// method set and semantics as Redis for everything the poller and the
// forwarder use; it is the backend when REDIS_URL is unset. Use it for small
// deployments: one container with one volume, one authpipe process. Its
// guarantee:
//
//   - Durable per transaction. Every call that changes the buffer is one
//     bbolt transaction, synced to disk (fdatasync) before the call returns;
//     bbolt's copy-on-write pages and double meta page mean a crash of the
//     process or of the machine leaves the file at the last committed
//     transaction. So an Append (page + checkpoint + dedupe ids), a Read (the
//     entries and the group's progress), an Ack or a dead letter is on disk
//     whole or not at all, and after a restart pending entries come back to
//     their consumer through ReadPending. Work is batched per call (one sync
//     per page appended, per batch read or acknowledged); calls that change
//     nothing commit nothing. The one exception: NoteFailure's reason is
//     written with the next transaction (at the latest by Close), so a crash
//     may forget reasons noted just before it.
//   - Single process. OpenBolt locks the file (flock); a second process (or
//     a second OpenBolt of the same tenant) fails after BoltLockTimeout with
//     "data dir … is in use by another authpipe". No replicas, no scale-out:
//     for those, use Redis.
//   - A file replaced while authpipe is stopped is noticed. Nothing inside
//     the file can tell that it is an older copy, so every CheckLoss and
//     Close records, in buffer-<tenant>.db.state beside it, the file's last
//     bbolt transaction id (which only grows), its checkpoint and the
//     delivered watermark. OpenBolt compares: a file gone, or with an older
//     transaction id or checkpoint, is lost data, handled as on Redis
//     (counted, logged, re-polled from the recorded watermark; a re-poll
//     interrupted by a restart goes on). Limits: a copy taken after the
//     last record (after a crash, the last two seconds or so) or a data dir
//     restored as a whole (file and record together) is not noticed; the
//     restored checkpoint still makes the poller fetch everything after it
//     again. See loss_bolt.go.
//   - Compacted. Trim deletes entries once every group acknowledged them
//     (the rule above) and drops whole hour buckets of the dedupe record
//     (packed log_ids, as on Redis) once older than the retention; bbolt
//     reuses the freed pages, so the file grows to the largest backlog plus
//     a retention's worth of log_ids and no further. bbolt never shrinks a
//     file, so Trim then compacts one of CompactMinBytes or more that is
//     half free: a copy without the free pages, written beside it and
//     renamed over it while both are locked (a crash leaves one complete
//     file). The transaction ids the state record compares count on across
//     compactions.
//   - Same ids and figures. Entry ids are "<ms>-<seq>" from the buffer's
//     clock, strictly ascending (also when the clock goes back), as Redis
//     stream ids read. Idle times for Reclaim follow the injected clock.
//     Stats, Full and the gauges come from counters kept in the same
//     transactions, so the backlog is exact and costs no scan.
//
// Scripts use the `#!lua` shebang (Redis 7.0+): Redis refuses such a write
// script up front when it is out of memory instead of failing it halfway.
package buffer
