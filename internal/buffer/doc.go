// Package buffer is authpipe's durable buffer between the Auth0 poller and
// the consumers of a tenant's log events (the Segment forwarder, the
// threshold checks). Two backends keep the same contract, checked by one
// conformance suite (package buffertest) run against both: Redis (one
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
//   - Dedupe. A log is stored once per log_id: the script adds it to the
//     stream only if ZADD NX on the `seen` set added its log_id, so a page
//     polled twice adds nothing the second time. The checkpoint never moves
//     backwards (log_ids compare as fixed-length digit strings).
//   - At-least-once to consumers. An entry stays pending in a group until the
//     consumer acknowledges it (Ack). Pending entries that sit idle are
//     reclaimed (Reclaim) and delivered again; a consumer restarting reads its
//     own pending entries first (ReadPending). A consumer may see an entry
//     more than once; entries carry their delivery count.
//   - Nothing is trimmed while pending or undelivered. Trim removes entries by
//     MINID no further than the retention, the oldest pending entry of every
//     group and the first entry any group has not been delivered yet, computed
//     and applied in one script. (Redis 7.0 trimming deletes pending entries
//     silently, so this bound is what keeps the contract.) A pending entry
//     found deleted anyway is counted in authpipe_buffer_lost_total and
//     logged at error: that counter must stay 0.
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
//	authpipe:{t}:stream      the log stream; entry fields id (log_id), raw (JSON)
//	authpipe:{t}:checkpoint  the log_id the next poll starts after
//	authpipe:{t}:seen        zset log_id → its embedded time (ms), for dedupe
//	authpipe:{t}:dlq         dead letters; fields id, raw, reason, deliveries,
//	                         failed_at (Unix ms), stream_id
//	authpipe:{t}:reasons     hash stream entry id → the consumer's last failure
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
//   - Same ids and figures. Entry ids are "<ms>-<seq>" from the buffer's
//     clock, strictly ascending (also when the clock goes back), as Redis
//     stream ids read. Idle times for Reclaim follow the injected clock.
//     Stats, Full and the gauges come from counters kept in the same
//     transactions, so the backlog is exact and costs no scan.
//
// Scripts use the `#!lua` shebang (Redis 7.0+): Redis refuses such a write
// script up front when it is out of memory instead of failing it halfway.
package buffer
