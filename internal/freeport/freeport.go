// Package freeport picks loopback TCP ports for servers started in another
// process (redis-server in tests, the worker in the benchmark), where the
// port must be chosen before the server binds it.
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Pick returns a loopback TCP port nothing listens on, for a server
// started in another process. It is picked below the kernel's
// ephemeral range: a port the kernel hands out (bind to :0, or the local
// end of any outgoing connection, and the test packages make thousands)
// can be taken by someone else between this check and the server's bind,
// which failed a CI run ("bind: address already in use"); below the range
// only another Pick can take it, at random among some 10,000 ports.
func Pick() (int, error) {
	lo := ephemeralLow()
	for range 100 {
		port := lo - 1 - rand.IntN(min(lo-minFreePort, 12_000))
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	// The range below is crowded: fall back to the kernel's choice.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// minFreePort keeps Pick above the well-known and registered ports
// that system services use.
const minFreePort = 10_000

// ephemeralLow returns the low end of the kernel's ephemeral port range
// (32768 when it cannot be read, Linux's default).
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return linuxDefault
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= minFreePort+1000 {
		return linuxDefault
	}
	return lo
}
