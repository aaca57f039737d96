package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.etcd.io/bbolt"
)

// Layout of a Bolt buffer file (one file per tenant, boltFileName in the
// data dir). Every figure that Stats, Full and the gauges report is kept as
// a counter updated in the transaction that changes it, so none of them
// walks the stream.
//
//	meta     tenant, version, checkpoint; last (id of the newest stream
//	         entry), dlqlast (id of the newest dead letter); added (entries
//	         ever added), length (entries in the stream), dlqlen; head (the
//	         highest log_id ever added); dedupe (log_ids in the dedupe
//	         bucket)
//	stream   id → 0xff | len(log_id) | log_id | uvarint len(fields) |
//	         fields | raw (fields: the parsed fields, auth0log.Log.Pack);
//	         entries written before the fields were stored:
//	         len(log_id) | log_id | raw
//	dedupe   hour (yyyymmddhh, of the log_id's time) → bucket: packed
//	         log_id (dedupe.go) → "" (the dedupe record; bolt_dedupe.go)
//	seen     log_id → "": the dedupe record of files written before the
//	         hour buckets; read, and trimmed, until it is empty
//	groups   group → bucket: last (id of the last entry delivered, absent
//	         until the first), read (entries delivered or trimmed before the
//	         group existed), pending (size of pel), pel → bucket:
//	         id → deliveries | last delivery (Unix ms) | consumer
//	dlq      id → JSON boltDeadLetter
//	reasons  id → the consumer's last failure reason
//	behind   second | id → "": entries added below head (backfill,
//	         replayed dead letters, pages after a push went ahead), oldest
//	         log first, until every group has acknowledged them (lossWatch)
//
// An id is 16 bytes, milliseconds and sequence big-endian, so keys sort as
// the ids do; callers see it as "<ms>-<seq>", like a Redis stream id.
var (
	bktMeta    = []byte("meta")
	bktStream  = []byte("stream")
	bktSeen    = []byte("seen")
	bktDedupe  = []byte("dedupe")
	bktGroups  = []byte("groups")
	bktDLQ     = []byte("dlq")
	bktReasons = []byte("reasons")
	bktPEL     = []byte("pel")
	bktBehind  = []byte("behind")

	bkeyTenant     = []byte("tenant")
	bkeyVersion    = []byte("version")
	bkeyCheckpoint = []byte("checkpoint")
	bkeyHead       = []byte("head")
	bkeyLast       = []byte("last")
	bkeyDLQLast    = []byte("dlqlast")
	bkeyAdded      = []byte("added")
	bkeyLength     = []byte("length")
	bkeyDLQLen     = []byte("dlqlen")
	bkeyRead       = []byte("read")
	bkeyPending    = []byte("pending")
	bkeyDedupe     = []byte("dedupe")
)

// boltFileVersion is the layout version stored in meta.
const boltFileVersion = "1"

// streamID is a stream entry id: milliseconds and a sequence number.
type streamID struct{ ms, seq uint64 }

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id streamID) key() []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, id.ms)
	binary.BigEndian.PutUint64(k[8:], id.seq)
	return k
}

func (id streamID) less(o streamID) bool {
	return id.ms < o.ms || (id.ms == o.ms && id.seq < o.seq)
}

// succ returns the smallest id after id.
func (id streamID) succ() streamID {
	if id.seq == math.MaxUint64 {
		return streamID{ms: id.ms + 1}
	}
	return streamID{ms: id.ms, seq: id.seq + 1}
}

// next returns the id of an entry added at nowMS after id, as Redis
// assigns them: the current millisecond, or the last one with the next
// sequence when the clock has not moved on (or went back). Never 0-0.
func (id streamID) next(nowMS uint64) streamID {
	if nowMS > id.ms {
		return streamID{ms: nowMS}
	}
	return id.succ()
}

func idFromKey(k []byte) (streamID, error) {
	if len(k) != 16 {
		return streamID{}, fmt.Errorf("stored id of %d bytes, want 16", len(k))
	}
	return streamID{ms: binary.BigEndian.Uint64(k), seq: binary.BigEndian.Uint64(k[8:])}, nil
}

// mustID decodes a key the package wrote itself (keys of stream, pel, dlq).
func mustID(k []byte) streamID {
	id, _ := idFromKey(k)
	return id
}

// parseID parses "<ms>-<seq>" or "<ms>" (sequence 0), as Redis does.
func parseID(s string) (streamID, error) {
	msPart, seqPart, hasSeq := strings.Cut(s, "-")
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return streamID{}, fmt.Errorf("invalid stream id %q", s)
	}
	var seq uint64
	if hasSeq {
		if seq, err = strconv.ParseUint(seqPart, 10, 64); err != nil {
			return streamID{}, fmt.Errorf("invalid stream id %q", s)
		}
	}
	return streamID{ms: ms, seq: seq}, nil
}

func parseIDs(ids []string) ([]streamID, error) {
	out := make([]streamID, len(ids))
	for i, s := range ids {
		id, err := parseID(s)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

// entryWithFields marks a stream entry stored with its parsed fields. An
// entry without them starts with the length of its log_id, always 56.
const entryWithFields = 0xff

// encodeEntry is a stream entry's value: entryWithFields | len(log_id) |
// log_id | uvarint len(fields) | fields | raw, fields being auth0log's
// stored form of the parsed fields (empty when there are none).
func encodeEntry(logID string, raw, fields []byte) []byte {
	v := make([]byte, 0, 2+len(logID)+binary.MaxVarintLen64+len(fields)+len(raw))
	v = append(v, entryWithFields, byte(len(logID)))
	v = append(v, logID...)
	v = binary.AppendUvarint(v, uint64(len(fields)))
	v = append(append(v, fields...), raw...)
	return v
}

// decodeEntry copies the entry out of the transaction's memory. It reads
// both forms: with fields, and len(log_id) | log_id | raw as written before
// the fields were stored (fields nil).
func decodeEntry(v []byte) (logID string, raw, fields []byte, err error) {
	corrupt := errors.New("corrupt stream entry")
	withFields := len(v) > 0 && v[0] == entryWithFields
	if withFields {
		v = v[1:]
	}
	if len(v) < 1 || len(v) < 1+int(v[0]) {
		return "", nil, nil, corrupt
	}
	n := int(v[0])
	logID, v = string(v[1:1+n]), v[1+n:]
	if withFields {
		m, k := binary.Uvarint(v)
		if k <= 0 || m > uint64(len(v)-k) {
			return "", nil, nil, corrupt
		}
		if m > 0 {
			fields = bytes.Clone(v[k : k+int(m)])
		}
		v = v[k+int(m):]
	}
	return logID, bytes.Clone(v), fields, nil
}

// pelRecord is one pending entry of a group.
type pelRecord struct {
	deliveries int64
	at         int64 // last delivery, Unix ms (the clock's)
	consumer   string
}

func (r pelRecord) encode() []byte {
	v := make([]byte, 16+len(r.consumer))
	binary.BigEndian.PutUint64(v, uint64(r.deliveries))
	binary.BigEndian.PutUint64(v[8:], uint64(r.at))
	copy(v[16:], r.consumer)
	return v
}

func decodePEL(v []byte) (pelRecord, error) {
	if len(v) < 16 {
		return pelRecord{}, errors.New("corrupt pending entry")
	}
	return pelRecord{
		deliveries: int64(binary.BigEndian.Uint64(v)),
		at:         int64(binary.BigEndian.Uint64(v[8:])),
		consumer:   string(v[16:]),
	}, nil
}

// boltDeadLetter is a dead letter as stored; the field names are those of
// the Redis dead-letter stream.
type boltDeadLetter struct {
	StreamID   string `json:"stream_id"`
	LogID      string `json:"id"`
	Raw        []byte `json:"raw"`
	Reason     string `json:"reason"`
	Deliveries int64  `json:"deliveries"`
	FailedAt   int64  `json:"failed_at"` // Unix ms
}

func getCount(b *bbolt.Bucket, key []byte) int64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// addCount adds delta to each of the counters keys.
func addCount(b *bbolt.Bucket, delta int64, keys ...[]byte) error {
	if delta == 0 {
		return nil
	}
	for _, key := range keys {
		v := binary.BigEndian.AppendUint64(nil, uint64(max(getCount(b, key)+delta, 0)))
		if err := b.Put(key, v); err != nil {
			return err
		}
	}
	return nil
}

// group is one consumer group's bucket and pending list.
type group struct {
	b, pel *bbolt.Bucket
}

// errNoGroup carries the word Redis uses, so callers matching NOGROUP
// treat both backends alike.
var errNoGroup = errors.New("NOGROUP no such consumer group")

func openGroup(tx *bbolt.Tx, name string) (group, error) {
	if name == "" {
		return group{}, errNoGroup
	}
	b := tx.Bucket(bktGroups).Bucket([]byte(name))
	if b == nil {
		return group{}, errNoGroup
	}
	pel := b.Bucket(bktPEL)
	if pel == nil {
		return group{}, fmt.Errorf("group %s: no pending list", name)
	}
	return group{b: b, pel: pel}, nil
}

// lastDelivered returns the id of the last entry delivered to the group;
// ok is false when nothing was delivered yet.
func (g group) lastDelivered() (streamID, bool) {
	v := g.b.Get(bkeyLast)
	if v == nil {
		return streamID{}, false
	}
	id, err := idFromKey(v)
	return id, err == nil
}

// backlog is the group's undelivered plus pending entries: exact, from the
// counters (entries are only ever removed from the stream once delivered to
// every group, or before the group existed).
func (g group) backlog(added int64) int64 {
	return max(added-getCount(g.b, bkeyRead), 0) + getCount(g.b, bkeyPending)
}
