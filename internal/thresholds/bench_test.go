package thresholds

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// benchBatch is the consumer's batch size (DefaultReadCount).
const benchBatch = 100

// BenchmarkCount: the counting path of one event (one op), in batches of
// 100 as the consumer reads them, under the shipped rules: the log read
// from the buffer's entry with the fields parsed when it was buffered, the increments,
// then the real-time evaluation of the groups the batch touched. memory:
// the embedded buffer's store (count, then forget the acknowledged ids);
// redis: the count-and-XACK script on the shared test server, with the
// batch made pending before each op's timing starts (noisy: a shared
// machine and a shared Redis).
func BenchmarkCount(b *testing.B) {
	rs, err := rules.Load("../../alerts/thresholds.yml")
	if err != nil {
		b.Fatal(err)
	}
	// A day-aligned start: the same bucket boundaries, hence the same work, on every run.
	start := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	logs, err := sim.GenerateLogs(rand.New(rand.NewPCG(7, 8)), 10_000, start, time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(start.Add(15 * time.Second))
	newEvaluator := func(st stateStore) *evaluator {
		return newMemoryEvaluator(rs, "bench", st, clock, notify.Fanout(nil), true)
	}
	count := func(b *testing.B, ev *evaluator, events []store.Event) {
		if err := ev.countBatch(b.Context(), events, nil, ev.realtime); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("memory", func(b *testing.B) {
		mem := store.NewLocal(clock)
		ev := newEvaluator(mem)
		packed := make([][]byte, len(logs)) // as the embedded buffer stores them
		for i, l := range logs {
			packed[i] = l.Pack()
		}
		ids, events := make([]string, benchBatch), make([]store.Event, benchBatch)
		b.ReportAllocs()
		b.ResetTimer()
		for n := 0; n < b.N; n += benchBatch {
			for i := range benchBatch {
				ids[i] = strconv.Itoa(n + i)
				k := (n + i) % len(logs)
				l, err := auth0log.Unpack(logs[k].ID, packed[k], logs[k].Raw) // Entry.Log
				if err != nil {
					b.Fatal(err)
				}
				events[i] = store.NewEvent(ids[i], l)
			}
			count(b, ev, events)
			mem.Forget(ids)
		}
	})

	b.Run("redis", func(b *testing.B) {
		buf := thtest.RedisBuffer(b, testredis.Client(b), testredis.Name(b), clock)
		if err := buf.EnsureGroup(b.Context(), DefaultGroup); err != nil {
			b.Fatal(err)
		}
		ev := newEvaluator(store.NewRedis(buf.Client(), buf.Key(""), buf.StreamKey(), DefaultGroup))
		events := make([]store.Event, 0, benchBatch)
		b.ReportAllocs()
		b.ResetTimer()
		for n := 0; n < b.N; n += benchBatch {
			b.StopTimer()
			page := make([]auth0log.Log, benchBatch)
			for i := range page {
				l := logs[(n+i)%len(logs)]
				// A fresh log_id each round, so that dedupe keeps the page.
				id := l.ID[:17] + fmt.Sprintf("%010d", (n+i)/len(logs)) + l.ID[27:]
				l, err := auth0log.Decode(bytes.Replace(l.Raw, []byte(l.ID), []byte(id), 1))
				if err != nil {
					b.Fatal(err)
				}
				page[i] = l
			}
			if _, err := buf.Append(b.Context(), page, ""); err != nil {
				b.Fatal(err)
			}
			entries, err := buf.Read(b.Context(), DefaultGroup, "bench", benchBatch, time.Second)
			if err != nil || len(entries) != benchBatch {
				b.Fatalf("read %d entries: %v", len(entries), err)
			}
			b.StartTimer()
			events = events[:0]
			for _, en := range entries {
				l, err := en.Log()
				if err != nil {
					b.Fatal(err)
				}
				events = append(events, store.NewEvent(en.ID, l))
			}
			count(b, ev, events)
		}
	})
}
