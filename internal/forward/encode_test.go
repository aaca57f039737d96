package forward

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/sim"
)

// TestEncodedSizeIsExact: encodedSize (which counts the properties with
// jsonscan.EncodedLen) measures exactly the length of json.Marshal of the
// message, as analytics-go measures it, for realistic events under every
// policy and for odd ones.
func TestEncodedSizeIsExact(t *testing.T) {
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
			size, err := encodedSize(tr)
			require.NoError(t, err)
			require.Equal(t, len(want), size, "%s", raw)
		}
	}
}
