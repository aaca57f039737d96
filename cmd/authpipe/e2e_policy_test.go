package main

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/testredis"
)

// TestE2EPIIHashedAndTypesFiltered runs the binary with the default PII
// policy and an exclude filter: excluded types are acknowledged unsent and
// counted, everything else arrives, and no e-mail or IP address of the
// simulator reaches Segment in clear.
func TestE2EPIIHashedAndTypesFiltered(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	h.extraEnv = append(h.extraEnv, "AUTHPIPE_FORWARD_EXCLUDE_TYPES=fsa,slo")
	ids := h.addEvents(400)
	var sent []string
	excluded := 0
	inClear := map[string]bool{}
	emailRE := regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)
	ipv4RE := regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b`)
	for _, id := range ids {
		raw, ok := h.auth0.Log(id)
		require.True(t, ok)
		l, err := auth0log.Decode(raw)
		require.NoError(t, err)
		if l.Type == "fsa" || l.Type == "slo" {
			excluded++
		} else {
			sent = append(sent, id)
		}
		for _, a := range append(emailRE.FindAllString(string(raw), -1), ipv4RE.FindAllString(string(raw), -1)...) {
			inClear[a] = true
		}
	}
	require.NotZero(t, excluded)
	require.NotEmpty(t, inClear)

	p := h.start()
	h.waitReady(p, 20*time.Second)
	h.waitDelivered(sent, 30*time.Second)
	require.Eventually(t, func() bool {
		return h.metric(`authpipe_forward_events_filtered_total{reason="exclude"`) == float64(excluded)
	}, 20*time.Second, 100*time.Millisecond)
	require.Zero(t, h.metric(`authpipe_forward_events_filtered_total{reason="include"`))
	require.Eventually(t, func() bool { return h.metric("authpipe_buffer_backlog_events") == 0 }, 20*time.Second, 100*time.Millisecond)
	require.Len(t, h.segment.MessageIDs(), len(sent), "excluded types are not sent")

	for _, raw := range h.segment.Messages() {
		msg := string(raw)
		require.Empty(t, emailRE.FindAllString(msg, -1), msg)
		for _, c := range ipv4RE.FindAllString(msg, -1) {
			_, err := netip.ParseAddr(c)
			require.Error(t, err, "IP address in clear: %s", msg)
		}
		for a := range inClear {
			require.NotContains(t, strings.ToLower(msg), strings.ToLower(a))
		}
	}
	h.requireNoSecretsLogged()
}
