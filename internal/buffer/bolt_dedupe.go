package buffer

import (
	"bytes"
	"time"

	"go.etcd.io/bbolt"
)

// The embedded buffer's dedupe record (see dedupe.go): bucket dedupe holds
// one bucket per hour (yyyymmddhh) of packed log_ids. Trim deletes a whole
// hour bucket once its last possible log_id is older than the retention;
// bbolt puts the freed pages on its freelist and reuses them for later
// writes, so the file stops growing at what a retention's worth of log_ids
// and the backlog need. Files written before hold a flat bucket seen
// (log_id → ""): it is still read, and trimmed by log_id, until it is
// empty.

// boltDedupe is the dedupe record inside one transaction.
type boltDedupe struct {
	hours  *bbolt.Bucket // hour → packed log_id → ""
	legacy *bbolt.Bucket // log_id → "" (files of the previous version)
}

func dedupeOf(tx *bbolt.Tx) boltDedupe {
	return boltDedupe{hours: tx.Bucket(bktDedupe), legacy: tx.Bucket(bktSeen)}
}

// has reports whether the record holds id.
func (d boltDedupe) has(id string) bool {
	h, packed, err := dedupeKey(id)
	if err != nil {
		return false // never stored: Append refuses such ids
	}
	if hb := d.hours.Bucket([]byte(h)); hb != nil && hb.Get(packed) != nil {
		return true
	}
	return d.legacy.Get([]byte(id)) != nil
}

// add records id (a valid log_id: Append checked it).
func (d boltDedupe) add(id string) error {
	h, packed, err := dedupeKey(id)
	if err != nil {
		return err
	}
	hb, err := d.hours.CreateBucketIfNotExists([]byte(h))
	if err != nil {
		return err
	}
	hb.FillPercent = 1 // log_ids mostly arrive in order: pack the pages
	return hb.Put(packed, []byte{})
}

// dropExpired deletes the hour buckets whose log_ids are all older than
// cutoff, up to trimChunk log_ids' worth per call (a bucket is dropped
// whole), and takes them off meta's count. It returns how many log_ids it
// forgot and how many buckets it dropped.
func (d boltDedupe) dropExpired(meta *bbolt.Bucket, cutoff time.Time) (forgotten, dropped int, err error) {
	var drop [][]byte
	c := d.hours.Cursor()
	for k, _ := c.First(); k != nil && forgotten < trimChunk; k, _ = c.Next() {
		if !bucketExpired(string(k), cutoff) {
			break // hours sort in time order
		}
		drop = append(drop, bytes.Clone(k))
		forgotten += d.hours.Bucket(k).Stats().KeyN
	}
	for _, k := range drop {
		if err := d.hours.DeleteBucket(k); err != nil {
			return 0, 0, err
		}
	}
	return forgotten, len(drop), addCount(meta, -int64(forgotten), bkeyDedupe)
}

// count is the number of log_ids in the record: the hour buckets' count
// kept in meta (Append adds, Trim takes off), and, in a file of the
// previous layout until it is trimmed empty, the flat bucket's keys
// (counted by walking it).
func (d boltDedupe) count(meta *bbolt.Bucket) int64 {
	n := getCount(meta, bkeyDedupe)
	if k, _ := d.legacy.Cursor().First(); k != nil {
		n += int64(d.legacy.Stats().KeyN)
	}
	return n
}
