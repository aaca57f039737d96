package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPickBelowTheEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		port, err := Pick()
		require.NoError(t, err)
		require.Less(t, port, lo, "below the kernel's ephemeral ports")
		require.GreaterOrEqual(t, port, minFreePort)
		seen[port] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err, "the port is free to bind")
		l.Close()
	}
	require.Greater(t, len(seen), 40, "picked at random, not one port over and over")
}

func TestPickSkipsAPortInUse(t *testing.T) {
	// Hold each port Pick returns: it must never return one held.
	var held []net.Listener
	t.Cleanup(func() {
		for _, l := range held {
			l.Close()
		}
	})
	taken := map[int]bool{}
	for range 200 {
		port, err := Pick()
		require.NoError(t, err)
		require.False(t, taken[port], "port %d is held by this test", port)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err)
		held = append(held, l)
		taken[port] = true
	}
}
