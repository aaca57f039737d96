// Package pipeline is authpipe's house: it builds every configured
// tenant's pipeline — buffer, poller under its lease, forwarder, threshold
// engine — and, with AUTHPIPE_STREAM_LISTEN, the Auth0 Log Streams
// receiver on a listener of its own, and runs them, with the maintenance loop, the backfill jobs and
// the HTTP server, as one run group (github.com/oklog/run). `authpipe run`
// and `authpipe demo` run it; the other commands open buffers and pollers
// through Store and NewPoller, the same way.
//
// Guarantees (the delivery contract's items 1 and 6):
//
//   - One poller per tenant writes checkpoints. On Redis, a tenant's
//     poller runs only while this replica holds the tenant's poller lease,
//     and every page it writes with a checkpoint carries the lease's
//     fencing token, checked inside the append script: a poller that lost
//     its lease (a stalled process) can never move the checkpoint. Appends
//     without a checkpoint (backfill, Log Streams) need no lease: the
//     buffer's dedupe by log_id makes concurrent writers of events safe.
//   - Shutdown is ordered and bounded. When the context ends (SIGINT,
//     SIGTERM) or any component fails, /-/ready answers 503 first; then,
//     each step starting only when the one before has ended: stop the
//     reload handlers; stop what writes into the buffers (the pollers,
//     releasing their leases, a running backfill, and the Log Streams
//     receiver, which stops taking requests and finishes the commits in
//     flight: what it did not answer 200 Auth0 pushes again); stop the
//     threshold engines;
//     stop the forwarders, which finish the messages they hold and close
//     their Segment clients; stop the maintenance loop; stop the HTTP
//     server. Then the audit trail writes what it kept and the buffers and
//     the Redis client close. The whole stop is bounded by
//     AUTHPIPE_SHUTDOWN_TIMEOUT: a step still running at the deadline is
//     logged and left behind, and the buffers close anyway. What was not
//     acknowledged stays pending and is delivered after restart (Segment
//     drops the duplicates by messageId); a page polled and not committed
//     is fetched again.
//   - With the Log Streams receiver on, each tenant's poller reads the
//     tenant's auth0stream.Watch, fed every commit of the receiver: it
//     polls at AUTHPIPE_STREAM_POLL_INTERVAL while the stream delivered
//     within AUTHPIPE_STREAM_HEALTHY_WINDOW, and tells the watch the logs
//     it stored first (authpipe_stream_missed_events_total). Pushed logs
//     reach the threshold engines through the buffer, like polled ones:
//     the engine's consumer wakes on the append and checks them at once.
//   - A component that fails, or returns while it should run, stops the
//     app in the same order, and Run returns its error.
//   - Readiness (/-/ready, authpipe_ready) is 1 only while every buffer
//     answers, every tenant's Auth0 has answered this replica's poller (or
//     another replica polls it), and no shutdown has begun.
//   - SIGHUP reloads the threshold rules of every tenant. Signals arriving
//     while a reload runs collapse into one more reload; a failed reload
//     leaves the previous rules in force.
package pipeline
