package forward

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
)

// benchLogs returns n realistic decoded events from the Auth0 simulator.
func benchLogs(b *testing.B, n int) []auth0log.Log {
	b.Helper()
	logs, err := sim.GenerateLogs(rand.New(rand.NewPCG(3, 4)), n, time.Now().Add(-time.Hour), time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	return logs
}

func avgRaw(logs []auth0log.Log) int64 {
	var n int
	for _, l := range logs {
		n += len(l.Raw)
	}
	return int64(n / len(logs))
}

// BenchmarkMap: one event mapped to its Segment message (decode, PII
// policy, size check), under the default policy (hash) and with every
// field kept.
func BenchmarkMap(b *testing.B) {
	logs := benchLogs(b, 1000)
	for _, tc := range []struct {
		name   string
		policy PIIPolicy
	}{
		{"hash", PIIPolicy{}},
		{"keep", PIIPolicy{UserName: PIIKeep, Email: PIIKeep, IP: PIIKeep, UserAgent: PIIKeep}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newMapper("bench", []byte("bench-hash-key"), tc.policy)
			b.SetBytes(avgRaw(logs))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, _, err := m.mapLog(logs[i%len(logs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeMessage: what analytics-go does with each message it is
// given (json.Marshal of the Track, in makeMessage).
func BenchmarkEncodeMessage(b *testing.B) {
	logs := benchLogs(b, 1000)
	m := newMapper("bench", []byte("bench-hash-key"), PIIPolicy{})
	tracks := make([]analytics.Track, len(logs))
	for i, l := range logs {
		var err error
		if tracks[i], _, err = m.mapLog(l); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(avgRaw(logs))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := json.Marshal(tracks[i%len(tracks)]); err != nil {
			b.Fatal(err)
		}
	}
}

// preencoded stands for analytics-go's message: JSON encoded once, written
// into the batch by MarshalJSON (encoding/json then compacts it).
type preencoded []byte

func (p preencoded) MarshalJSON() ([]byte, error) { return p, nil }

// BenchmarkEncodeBatch: what analytics-go does per batch of 250 messages
// (json.Marshal of the batch, which re-scans every message).
func BenchmarkEncodeBatch(b *testing.B) {
	logs := benchLogs(b, DefaultBatchSize)
	m := newMapper("bench", []byte("bench-hash-key"), PIIPolicy{})
	msgs := make([]preencoded, len(logs))
	var size int
	for i, l := range logs {
		t, _, err := m.mapLog(l)
		if err != nil {
			b.Fatal(err)
		}
		if msgs[i], err = json.Marshal(t); err != nil {
			b.Fatal(err)
		}
		size += len(msgs[i])
	}
	type batch struct {
		MessageID string       `json:"messageId"`
		SentAt    time.Time    `json:"sentAt"`
		Messages  []preencoded `json:"batch"`
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(batch{MessageID: "x", SentAt: time.Now(), Messages: msgs}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "messages/s")
}

// BenchmarkEventPath: every parse of the events of one page in the worker
// (µs/event reports it per event):
// the poller's page (auth0log.DecodePage), the stored form of its fields
// (Pack), the forwarder's and the threshold engine's reads of the buffered
// entry (Unpack, twice) and the mapping (default policy).
func BenchmarkEventPath(b *testing.B) {
	logs := benchLogs(b, 100)
	raws := make([]json.RawMessage, len(logs))
	for i, l := range logs {
		raws[i] = l.Raw
	}
	page, err := json.Marshal(raws)
	if err != nil {
		b.Fatal(err)
	}
	m := newMapper("bench", []byte("bench-hash-key"), PIIPolicy{})
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		logs, err := auth0log.DecodePage(page)
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range logs {
			packed := l.Pack()
			for range 2 {
				if l, err = auth0log.Unpack(l.ID, packed, l.Raw); err != nil {
					b.Fatal(err)
				}
			}
			if _, _, err := m.mapLog(l); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(logs))/1000, "µs/event")
}
