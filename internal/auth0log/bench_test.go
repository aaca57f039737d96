package auth0log_test

import (
	"encoding/json"

	"math/rand/v2"

	"testing"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
)

// benchEvents returns n realistic events as the Auth0 simulator serves them.
func benchEvents(b *testing.B, n int) []json.RawMessage {
	b.Helper()
	a := sim.NewAuth0(sim.Auth0Options{})
	a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(1, 2)), n, time.Now().Add(-time.Hour), time.Millisecond)...)
	out := make([]json.RawMessage, 0, n)
	for _, id := range a.LogIDs() {
		raw, _ := a.Log(id)
		out = append(out, raw)
	}
	return out
}

// BenchmarkDecode: one event, as the poller, the forwarder and the
// threshold engine decode it.
func BenchmarkDecode(b *testing.B) {
	evs := benchEvents(b, 1000)
	var size int
	for _, e := range evs {
		size += len(e)
	}
	b.SetBytes(int64(size / len(evs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := auth0log.Decode(evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePage: a page of 100 events as the poller receives it,
// validated, split and decoded.
func BenchmarkDecodePage(b *testing.B) {
	evs := benchEvents(b, 100)
	page, err := json.Marshal(evs)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := auth0log.DecodePage(page); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
}
