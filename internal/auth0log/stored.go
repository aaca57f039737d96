package auth0log

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The stored form of a Log's parsed fields, kept by the buffer beside the
// raw event (Pack, Unpack): a version byte, then for each field in the
// order of Log.spans the uvarint offset of its text in Raw plus one (0:
// absent), followed, when present, by the uvarint length of the text. An
// event of 1 KB stores in about 20 bytes: offsets rather than copies keep
// the buffer's memory per event close to the raw event alone.
const packVersion = 1

// Pack returns the stored form of l's parsed fields, or nil when l cannot
// be packed: it was not decoded by this package, or one of its fields is
// not its own text in Raw (a string with escapes or invalid UTF-8). A log
// stored without fields is decoded again when it is read (Unpack).
func (l Log) Pack() []byte {
	for f := range fID + 3 { // log_id, date and type: always there when decoded
		if l.spans[f].off == 0 {
			return nil
		}
	}
	out := make([]byte, 1, 1+numFields*4)
	out[0] = packVersion
	for _, s := range l.spans {
		if s.n < 0 {
			return nil
		}
		out = binary.AppendUvarint(out, uint64(s.off))
		if s.off > 0 {
			out = binary.AppendUvarint(out, uint64(s.n))
		}
	}
	return out
}

// Unpack returns the log stored under log_id id with the raw event raw and
// the stored fields packed (Pack). Fields stored by an earlier version are
// absent (packed empty), and fields that do not fit raw (a stored entry
// that was altered) are ignored: then raw is decoded once, as Decode does.
// Either way the event's log_id must be id. The returned Log's Raw is raw.
func Unpack(id string, packed, raw []byte) (Log, error) {
	if l, ok := unpack(id, packed, raw); ok {
		return l, nil
	}
	l, err := DecodeShared(raw)
	if err != nil {
		return Log{}, err
	}
	if l.ID != id {
		return Log{}, fmt.Errorf("log %s: stored under log_id %s", l.ID, truncate(id))
	}
	return l, nil
}

func unpack(id string, packed, raw []byte) (Log, bool) {
	if len(packed) == 0 || packed[0] != packVersion {
		return Log{}, false
	}
	l := Log{Raw: raw}
	var vals [numFields]string
	p := packed[1:]
	for f := range numFields {
		off, k := binary.Uvarint(p)
		if k <= 0 {
			return Log{}, false
		}
		p = p[k:]
		if off == 0 {
			continue
		}
		n, k := binary.Uvarint(p)
		if k <= 0 || off >= uint64(len(raw)) || n >= uint64(len(raw))-off {
			return Log{}, false
		}
		p = p[k:]
		start, end := int(off), int(off+n)
		// The text of a JSON string: between quotes in raw.
		if raw[start-1] != '"' || raw[end] != '"' {
			return Log{}, false
		}
		l.spans[f] = span{off: start, n: end - start}
		if f == fID {
			if string(raw[start:end]) != id {
				return Log{}, false
			}
			vals[f] = id
			continue
		}
		vals[f] = string(raw[start:end])
	}
	if len(p) != 0 || vals[fID] == "" || vals[fType] == "" || vals[fDate] == "" {
		return Log{}, false
	}
	l.setFields(vals)
	t, err := time.Parse(time.RFC3339Nano, vals[fDate])
	if err != nil {
		return Log{}, false
	}
	l.Date = t.UTC()
	return l, true
}
