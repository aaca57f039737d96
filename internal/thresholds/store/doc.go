// Package store keeps the threshold counts and the active alert state of one
// tenant: in Redis (Redis), shared by replicas, or in memory (Memory), on
// the embedded buffer and for `rules test`. Both implement one counting
// model with the same cap, eviction order and window rules, and
// TestStoresAgree holds them to the same results.
//
// # Counting model
//
// Each rule cuts event time into buckets of Rule.Bucket (window/30, at
// least 1 s); bucket i holds the events dated in [i·b, (i+1)·b). Per rule
// and bucket there are up to four keys,
// authpipe:{tenant}:thr:<rule>:<fp>:<kind>:<bucket>, where fp is the rule's
// CountFingerprint (a rule that changes what it counts starts fresh keys):
//
//	c  sorted set group → count. For a count rule the number of events; for a
//	   distinct rule the number of distinct values in the bucket (the rank
//	   used for the cap); for a ratio rule the numerator.
//	d  distinct rules: sorted set of "group\x1fvalue" members (score 0, so one
//	   group's values are one lexicographic range).
//	o  ratio rules: sorted set group → events of ratio.of (the denominator).
//	x  hash: groups and events cut from this bucket by the cap.
//
// A window at time T sums the buckets from the one holding T−window to the
// one holding T (WindowBuckets): every event of (T−window, T] and at most
// one bucket more. An event dated ahead of the clock counts as now; one
// older than any future window is not counted (OpsFor returns no ops).
//
// Memory is bounded. A bucket's c and o keep at most the engine's max
// groups (Config.MaxGroups, default 1000): a new group arriving at a full
// bucket drops the group with the lowest count (never itself), with its
// distinct values, and the bucket's x counts what was dropped (the
// groups_cut annotation; authpipe_threshold_groups_cut_total). Heavy hitters
// stay; a group whose rate is below the 1000th highest during a flood of
// distinct groups can be missed, and the cut counter says so. A distinct
// rule keeps at most Rule.DistinctCap values of one group per bucket, which
// decides a breach exactly. Every key expires one window plus KeyGrace
// after its bucket ends, so a rule holds at most BucketsPerWindow+2 buckets.
//
// # Counted once
//
// Redis.Count counts and acknowledges in one Lua script on keys under the
// tenant's hash tag: it counts an entry only if its XACK removed it from
// the consumer group's pending list, so an entry redelivered after a crash
// or reclaimed from a dead replica is never counted twice, and an entry is
// never acknowledged without being counted. Memory.Count recognises an
// entry by its id, which it keeps until the buffer has acknowledged it
// (Forget) or its buckets have expired.
//
// # Alert state
//
// The active alerts of a tenant are one hash (authpipe:{tenant}:thr:alerts)
// of AlertField → ActiveAlert. ClaimAlert is HSETNX: of the real-time path
// and the scheduled check, on any replica, one raises an alert. PutAlert
// and DropAlert compare the alert's start first, so a late writer never
// overwrites or removes an alert raised again since. An entry that does
// not decode is dropped when read: it would never resolve.
package store
