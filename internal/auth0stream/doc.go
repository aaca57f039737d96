// Package auth0stream receives Auth0 Log Streams (custom webhook): the
// logs Auth0 pushes within seconds of writing them, stored in the same
// buffer as the polled ones and deduplicated with them by log_id. The
// poller keeps running as the proof that nothing was missed; pushing only
// makes logs arrive sooner.
//
// Receiver is an http.Handler for a listener of its own (NewServer), which
// faces the internet behind a TLS proxy: it serves POST /auth0/logs (the
// single tenant's stream) and POST /auth0/logs/{tenant} (each tenant's),
// nothing else (404, or 405 for another method on a tenant's path).
//
// Guarantee (the delivery contract's item 8): a request is answered 200
// only after every record in it is committed to its tenant's buffer — the
// Redis append script executed, or the Bolt transaction synced — each
// log_id once, deduplicated with every log polled or pushed before (the
// buffer's one dedupe record), and appended without a checkpoint, so the
// poller's checkpoint never moves for pushed logs. Any other answer
// acknowledges nothing, and what Auth0 does with it is what keeps the
// contract: it retries the delivery up to three times, then marks it
// errored in the stream's Health tab and retries errored logs until the
// problem is resolved (a stream failing for 7 consecutive days is paused
// until resumed by hand). Meanwhile the poller fetches the same logs from
// the Management API, so a log the stream never delivers is still stored.
//
//	200  every record committed (new or already stored). Body
//	     {"records":N,"new":M}.
//	400  the body is none of the formats, or a record is bad: not an
//	     object, no log_id or no data, a log_id that is not Auth0's, an
//	     event auth0log.Decode refuses, or log_id ≠ data.log_id. The
//	     message names the first bad record (counted from 0) and why;
//	     nothing of the request is stored. Auth0's retries fail the same
//	     way: the poller stores those logs (or fails on them just as
//	     loudly).
//	401  the Authorization header is missing, repeated or not exactly the
//	     tenant's token. The body is not read.
//	413  the body is over Config.MaxBodyBytes (default 10 MiB); nothing
//	     stored.
//	503  the buffer is full (back-pressure: Buffer.Full, as the poller
//	     pauses), failed, or did not finish within Config.CommitTimeout
//	     (default 10 s), or MaxInFlight commits were already running.
//	     Nothing is acknowledged. A commit that times out may still
//	     complete afterwards: the retry then finds every log a duplicate.
//
// Formats. The three Content Formats are told apart by the body, so a
// stream may switch format without a change here: a body starting with
// '[' is JSONARRAY, [record, …]; a body that is one JSON object with a
// "logs" member is JSONOBJECT, {"logs":[record, …]}; any other body
// starting with '{' is JSONLINES, one record per line (a single record
// alone is accepted as one line). Each record is {"log_id": L, "data": E},
// E the log event as GET /api/v2/logs returns it, stored verbatim; other
// members are ignored. Auth0's documentation names JSONOBJECT ("Receive
// data in JSON lines, arrays, or objects") but does not show its body: the
// "logs" wrapper is what handlers written against real Auth0 streams read
// (two public code bases iterate body.logs[].data), so it is inferred, not
// documented. When L and E's own log_id differ the record is refused:
// nothing says which of the two Auth0 meant, and storing either could
// lose the other event.
//
// Which source came first. Before its append, a request reads which of
// its log_ids the dedupe record already holds (Buffer.Seen); Commit.New
// marks the others, the logs the stream delivered first, and Commit.Added
// is the append's exact count of new logs. Another writer storing some of
// the same logs between the read and the append makes Added smaller than
// the marked count; Commit.Uncertain says by how much.
//
// Bounds. Bodies are read through http.MaxBytesReader (a Content-Length
// over the bound is refused without reading); the server
// (NewServer) bounds headers (64 KiB), reading a request (30 s), answering
// it (60 s) and idle connections (2 m). Each commit runs in a goroutine of
// its own, at most MaxInFlight (default 16) at once, so a hung buffer
// holds no request past CommitTimeout, whatever its client's timeouts,
// and memory stays within MaxInFlight bodies.
//
// Security. Tokens are per tenant and must differ between tenants (one
// tenant's stream could otherwise write into another's buffer); the
// header is compared with the token through SHA-256 digests in constant
// time, so neither its content nor its length leaks through timing.
// Tokens are never logged. An unknown tenant in the path is a 404, counted
// with the requests that reach no tenant: names from the internet never
// become label values.
//
// The stream against the poller. Watch (one per tenant, fed every Commit)
// is the poller's view of the stream (auth0poll.Stream): when it last
// delivered, which sets the poll interval, and the logs the poller stored
// first, from which it counts authpipe_stream_missed_events_total{tenant}
// — logs dated after the stream's first delivery in this process that it
// did not deliver within the grace (default 2m) of their date. See Watch
// for what is and is not counted.
//
// Metrics: authpipe_stream_requests_total{tenant,code,outcome},
// authpipe_stream_events_total{tenant,outcome} (new, duplicate, full,
// unavailable: events of a 400 or 413 are not counted, the body did not
// yield them) and authpipe_stream_last_event_timestamp_seconds{tenant},
// every series created at zero. The receiver registers them without the
// tenant label: each tenant's go to its Tenant.Registerer, the requests
// that reach no tenant to Deps.Registerer, and the caller's registerers
// add the label (metrics.Tenant, in package pipeline; tenant
// "" for no tenant). Refused requests are logged once per
// episode and outcome, repeats summarised (package logrepeat), the first
// 200 after them logged as the recovery.
package auth0stream
