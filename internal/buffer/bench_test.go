package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// benchPages returns n realistic events from the Auth0 simulator in pages
// of 100, as the poller appends them.
func benchPages(b *testing.B, n int) ([][]auth0log.Log, int64) {
	b.Helper()
	logs, err := sim.GenerateLogs(rand.New(rand.NewPCG(5, 6)), n, time.Now().Add(-time.Hour), time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	var pages [][]auth0log.Log
	var page []auth0log.Log
	var size int64
	for _, l := range logs {
		size += int64(len(l.Raw))
		if page = append(page, l); len(page) == 100 {
			pages = append(pages, page)
			page = nil
		}
	}
	return pages, size / int64(n)
}

// benchBackends runs fn against a fresh Redis buffer and a fresh Bolt buffer.
func benchBackends(b *testing.B, fn func(b *testing.B, buf benchBuffer)) {
	b.Run("redis", func(b *testing.B) {
		r, err := NewRedis(testredis.Client(b), Config{Tenant: testredis.Name(b)}, Deps{})
		if err != nil {
			b.Fatal(err)
		}
		fn(b, r)
	})
	b.Run("bolt", func(b *testing.B) {
		bb, err := OpenBolt(b.TempDir(), Config{Tenant: "bench"}, Deps{})
		if err != nil {
			b.Fatal(err)
		}
		defer bb.Close()
		fn(b, bb)
	})
}

type benchBuffer interface {
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]Entry, error)
	Ack(ctx context.Context, group string, ids ...string) error
}

// redisUsec reads the server-side microseconds spent in a command so far.
func redisUsec(ctx context.Context, b *testing.B, buf benchBuffer, cmd string) (int64, bool) {
	r, ok := buf.(*Redis)
	if !ok {
		return 0, false
	}
	info, err := r.Client().Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":"); ok {
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "usec="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					return n, true
				}
			}
		}
	}
	return 0, true
}

// BenchmarkAppend: pages of 100 events with their checkpoint, as the poller
// appends them (one op = one event). For Redis, redis-µs/event is the time
// Redis itself spent in the append script (shared test server: approximate).
func BenchmarkAppend(b *testing.B) {
	pages, size := benchPages(b, 10_000)
	benchBackends(b, func(b *testing.B, buf benchBuffer) {
		ctx := b.Context()
		before, isRedis := redisUsec(ctx, b, buf, "evalsha")
		b.SetBytes(size)
		b.ReportAllocs()
		b.ResetTimer()
		n := 0
		for i := 0; n < b.N; i++ {
			p := pages[i%len(pages)]
			if i >= len(pages) { // fresh log_ids once the pages are used up
				p = relabel(p, i/len(pages))
			}
			if _, err := buf.Append(ctx, p, p[len(p)-1].ID); err != nil {
				b.Fatal(err)
			}
			n += len(p)
		}
		b.StopTimer()
		if isRedis {
			after, _ := redisUsec(ctx, b, buf, "evalsha")
			b.ReportMetric(float64(after-before)/float64(n), "redis-µs/event")
		}
	})
}

// relabel gives a page new log_ids (round r) so that dedupe keeps them.
func relabel(p []auth0log.Log, r int) []auth0log.Log {
	out := make([]auth0log.Log, len(p))
	for i, l := range p {
		// "900" + time, then the round in the next 10 digits; the
		// simulator's counter (the last digits) keeps them apart.
		l.ID = l.ID[:17] + fmt.Sprintf("%010d", r) + l.ID[27:]
		out[i] = l
	}
	return out
}

// BenchmarkReadAck: reads of 500 and one acknowledgement per read, as the
// forwarder does (one op = one event).
func BenchmarkReadAck(b *testing.B) {
	pages, size := benchPages(b, 10_000)
	benchBackends(b, func(b *testing.B, buf benchBuffer) {
		ctx := b.Context()
		group := "bench"
		if err := buf.EnsureGroup(ctx, group); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		b.ReportAllocs()
		done, appended := 0, 0
		for i := 0; done < b.N; {
			if done == appended { // refill outside the timer
				b.StopTimer()
				for k := 0; k < 50 && appended < b.N+5000; k++ {
					p := relabel(pages[i%len(pages)], 1+i/len(pages))
					i++
					if _, err := buf.Append(ctx, p, ""); err != nil {
						b.Fatal(err)
					}
					appended += len(p)
				}
				b.StartTimer()
			}
			es, err := buf.Read(ctx, group, "c", 500, time.Millisecond)
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]string, len(es))
			for k, e := range es {
				ids[k] = e.ID
			}
			if err := buf.Ack(ctx, group, ids...); err != nil {
				b.Fatal(err)
			}
			done += len(es)
		}
	})
}
