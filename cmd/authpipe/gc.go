package main

import (
	"runtime/debug"
)

// Go runtime memory settings of `authpipe run`, applied unless GOGC or
// GOMEMLIMIT are set in the environment (which then win, as always).
const (
	// gcPercent lets the heap grow to five times the live data between
	// collections (Go's default is twice). The worker's live heap is small
	// — the events in flight to Segment, about 20 MB at the default
	// SEGMENT_MAX_IN_FLIGHT — and its allocation rate high (every event is
	// decoded, mapped and encoded), so collecting less often saves about a
	// fifth of its CPU at full speed (BENCHMARKS.md).
	gcPercent = 400
	// memoryLimit is the soft limit on the Go runtime's memory: above it
	// the collector runs as often as needed, whatever gcPercent says, so
	// the trade above never costs more than this.
	memoryLimit = 96 << 20
)

// tuneGC applies gcPercent and memoryLimit where the environment does not
// set GOGC and GOMEMLIMIT.
func tuneGC(lookup func(string) (string, bool)) {
	if _, set := lookup("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if _, set := lookup("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
}
