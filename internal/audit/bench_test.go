package audit_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/authpipe/authpipe/internal/audit"
)

// BenchmarkRecord: one entry stored in an fsynced file and the Redis
// stream, as an admin request does before it answers.
func BenchmarkRecord(b *testing.B) {
	rdb, keys := redisWorld(b)
	file, err := audit.NewFileSink(filepath.Join(b.TempDir(), "audit.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := audit.NewTrail([]audit.Sink{file, audit.NewRedisSink(rdb, keys, time.Hour, nil)}, audit.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	e := entry("dlq_list")
	for i := range 50 {
		e.Records = append(e.Records, audit.Record{ID: "1764111111111-" + string(rune('0'+i%10)), LogID: "90020260101000000000000000000000000000000000000000000001"})
	}
	b.ResetTimer()
	for b.Loop() {
		if err := tr.Record(b.Context(), e); err != nil {
			b.Fatal(err)
		}
	}
}
