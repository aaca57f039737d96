// Package forward moves buffered Auth0 log events to Segment.
//
// Guarantee: at-least-once delivery with duplicates absorbed by Segment.
//
//   - An entry of the buffer is acknowledged (XACK) only after analytics-go
//     reported Success for its message, i.e. after Segment answered 2xx for a
//     batch that contained it. Every other outcome leaves the entry pending in
//     the consumer group: it is retried in process, and whatever this process
//     does not resolve (crash, shutdown, Redis errors) is redelivered later,
//     from this consumer's own pending list at restart or by any replica's
//     reclaim once it has been idle for ReclaimIdle.
//   - The Segment messageId is derived only from the tenant and the log_id
//     (MessageID), never from the attempt, so Segment drops the copies that
//     redelivery produces (it dedupes on messageId for at least 24 hours).
//   - Messages are validated before they are handed to analytics-go (event
//     name, identity, the 32 000-byte message limit measured exactly as
//     analytics-go measures it), because Segment answers 200 and silently drops
//     a message without event or identity.
//   - One bad event never blocks the others: a batch that Segment rejects
//     permanently (400, 413, other 4xx) is split and each of its messages is
//     re-sent alone through an isolation client; the message that is rejected
//     alone is dead-lettered with its reason ("segment_rejected: 400 …"), the
//     others flow. Undecodable events ("invalid: …") and events that are too
//     big even without their details ("oversize: …") are dead-lettered before
//     sending. Transient failures (5xx, 408, 429, network, bad write key) are
//     never dead-lettered by this package: they are retried with backoff,
//     noting the reason on the entry for the buffer's max-deliveries policy.
//   - A consumer group lost with Redis' data (NOGROUP) is recreated by the
//     buffer where delivery stood, and the read goes on (see
//     buffer.Redis.CheckLoss); entries in flight then are acknowledged to a
//     group that no longer holds them (a no-op) and delivered again, under
//     the same messageId.
//
// Segment traffic goes through a classifying http.RoundTripper that owns retry
// timing (analytics-go itself retries every status, ignores Retry-After and
// would retry a 400 for minutes): it honours 429 Retry-After for all requests,
// backs off per batch body on 5xx/408/network errors, short-circuits repeated
// attempts of a permanently rejected body, and pauses for a minute when
// Segment rejects the write key.
//
// Memory is bounded by Config.MaxInFlight: the entries held — read from the
// buffer and not yet resolved, including the batch read ahead while the
// previous one is mapped — never exceed it; reading waits for room.
//
// Mapping of a log to a Segment track call is Map; see its documentation.
//
// Two policies decide what leaves for Segment, never whether an event is
// delivered by accident:
//
//   - Filter (include and exclude lists of Auth0 type codes): an event it
//     leaves out is acknowledged without being sent and counted in
//     authpipe_forward_events_filtered_total{tenant,reason}; in the stage
//     counters it is received and acked, never written. Other consumer
//     groups of the buffer (the threshold checks') still read it.
//   - PIIPolicy (per kind: user_name, e-mail addresses, IP addresses, user
//     agent; keep, hash or drop; by default user_id is kept as the userId and
//     the rest hashed with a keyed HMAC) is applied by Map to every field of the
//     message, so no address leaves in clear unless the policy keeps it. The
//     buffer and the dead-letter stream keep events as Auth0 logged them.
package forward
