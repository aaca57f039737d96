package buffer

import (
	"errors"
	"strconv"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// The dedupe record (DESIGN.md, delivery contract 5): what lasts for the
// retention window is the knowledge that a log_id was stored, not the log.
// Both backends keep it in hour buckets, named by the hour embedded in the
// log_id (yyyymmddhh, UTC), whose members are log_ids packed to 24 bytes:
// exact (no hash, no filter: a false "seen" would lose an event), about a
// third of the digits' size, and a whole bucket is forgotten at once when
// its last possible log_id has left the retention.

// Packing: a log_id's 56 digits as four groups of 14, each (< 10^14 <
// 2^47) in 6 bytes big-endian. The Redis append script packs the same way
// (Lua's doubles hold 14 digits exactly). The first byte of a packed id is
// below 0x80 (10^14 < 2^47). Leaving out the hour (the bucket names it)
// would save 5 bytes and no memory: Redis allocates a 19- and a 24-byte
// member alike (jemalloc's 32-byte class, measured).
const (
	packedIDLen = 24
	packGroup   = 14
	packBytes   = 6
)

// dedupeMargin is how long a bucket outlives its last log_id's retention:
// slack for the clocks of Auth0, authpipe and Redis. In Redis a bucket also
// lives at least this long after its last write, so logs older than the
// retention (a backfill, a test) are still deduplicated right after they
// were stored.
const dedupeMargin = time.Hour

// errNotPackable: the id is not 56 digits. Such ids never enter the buffer
// (Append rejects them), so no dedupe record holds them.
var errNotPackable = errors.New("not a 56-digit log_id")

// packID packs a log_id for the dedupe record.
func packID(id string) ([]byte, error) {
	if len(id) != auth0log.IDLength {
		return nil, errNotPackable
	}
	out := make([]byte, 0, packedIDLen)
	for g := 0; g < auth0log.IDLength; g += packGroup {
		v, err := strconv.ParseUint(id[g:g+packGroup], 10, 64)
		if err != nil {
			return nil, errNotPackable
		}
		for k := packBytes - 1; k >= 0; k-- {
			out = append(out, byte(v>>(8*k)))
		}
	}
	return out, nil
}

// idHour is the dedupe bucket of a log_id: the hour embedded in it,
// yyyymmddhh. It fails for an id that is not an Auth0 log_id.
func idHour(id string) (string, error) {
	t, err := auth0log.IDTime(id)
	if err != nil {
		return "", err
	}
	return t.Format(hourLayout), nil
}

const hourLayout = "2006010215"

// dedupeKey is where the dedupe record holds a log_id: its hour bucket
// (idHour) and its packed form (packID).
func dedupeKey(id string) (hour string, packed []byte, err error) {
	if hour, err = idHour(id); err == nil {
		packed, err = packID(id)
	}
	return hour, packed, err
}

// bucketExpired reports whether every log_id of the bucket of hour h is
// older than cutoff (now − retention): the bucket can be forgotten.
func bucketExpired(h string, cutoff time.Time) bool {
	t, err := time.ParseInLocation(hourLayout, h, time.UTC)
	if err != nil {
		return false // not a bucket this package wrote: leave it
	}
	return !t.Add(time.Hour).After(cutoff)
}
