package forward

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
)

// TestSizeBound: sizeBound is never below the length of json.Marshal of
// the message, as analytics-go measures it, for realistic events under
// every policy and for odd ones (escapes that expand six times, HTML
// characters, invalid UTF-8); and encodedSize is exact where the bound
// does not settle it.
func TestSizeBound(t *testing.T) {
	a := sim.NewAuth0(sim.Auth0Options{})
	a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(9, 9)), 300, time.Now().Add(-time.Hour), time.Second)...)
	var raws [][]byte
	for _, id := range a.LogIDs() {
		raw, _ := a.Log(id)
		raws = append(raws, raw)
	}
	raws = append(raws,
		[]byte(`{"log_id":"`+testLogID+`","date":"2026-11-25T10:14:58.123Z","type":"fp","description":"<b>&amp;</b> \u2028 \u00e9 \ud800","details":{"z":1.50,"a":[1e3,-0,{"b":null}],"x\u0000y":"\t"},"n":12345678901234567890}`),
		[]byte(`{"log_id":"`+testLogID+`","date":"2026-11-25T10:14:58Z","type":"zz_unknown","ip":"2001:db8::1","user_agent":"curl/8","user_name":"A@Example.COM"}`),
		[]byte(`{"log_id":"`+testLogID+`","date":"2026-11-25T10:14:58Z","type":"s","user_agent":"<<<\u0001\u0001","k\u0001":["\u0002",[true,false,null,1]],"b":"`+"\xff\xfe"+`"}`),
	)
	for _, policy := range []PIIPolicy{{}, keepAll, dropAll} {
		m := newMapper("acme", testKey, policy)
		for _, raw := range raws {
			l, err := auth0log.Decode(raw)
			require.NoError(t, err)
			tr, _, err := m.mapLog(l)
			require.NoError(t, err)
			want, err := json.Marshal(tr)
			require.NoError(t, err)
			require.GreaterOrEqual(t, sizeBound(tr), len(want), "%s", raw)
		}
	}
}

// TestEncodedSizeNearTheLimit: where the bound exceeds MaxMessageBytes,
// encodedSize is the exact length.
func TestEncodedSizeNearTheLimit(t *testing.T) {
	l := decodeLog(t, map[string]any{"type": "s", "user_id": "u", "pad": strings.Repeat("<", 5200)})
	tr, _, err := newMapper("acme", testKey, PIIPolicy{}).mapLog(l)
	require.NoError(t, err)
	want, err := json.Marshal(tr)
	require.NoError(t, err)
	require.Greater(t, sizeBound(tr), MaxMessageBytes)
	size, err := encodedSize(tr)
	require.NoError(t, err)
	require.Equal(t, len(want), size)
}
