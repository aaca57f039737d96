// Package testredis gives tests a real redis-server over TCP: no mocks.
//
// Under `make test` the script starts one throwaway server and exports its
// address as AUTHPIPE_TEST_REDIS_ADDR; tests share it and keep apart through
// unique key names (Name). Run outside make, the first test that asks starts
// a private server itself, so `go test ./...` works anywhere redis-server is
// installed. Tests that kill or restart Redis start their own with Start.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvAddr names the variable that points tests at a running server.
const EnvAddr = "AUTHPIPE_TEST_REDIS_ADDR"

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
	seq        atomic.Int64
)

// Addr returns the address of the shared test server.
func Addr(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv(EnvAddr); addr != "" {
		return addr
	}
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "authpipe-testredis-")
		if err != nil {
			sharedErr = err
			return
		}
		shared = &Server{dir: dir}
		sharedErr = shared.start()
	})
	if sharedErr != nil {
		t.Fatalf("no Redis for tests: set %s or install redis-server: %v", EnvAddr, sharedErr)
	}
	return shared.Addr
}

// Client returns a client of the shared server, closed when the test ends.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: Addr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// Name returns a name unique to this test run, for tenants and keys, so
// tests sharing one server never see each other's data.
func Name(t testing.TB) string {
	base := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	return fmt.Sprintf("t%d_%d_%s", os.Getpid(), seq.Add(1), base)
}

// Server is a redis-server process owned by one test.
type Server struct {
	Addr string
	dir  string
	port int
	cmd  *exec.Cmd
	mu   sync.Mutex
}

// Start runs a private redis-server with its own data dir and append-only
// persistence, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir()}
	if err := s.start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	if s.port == 0 {
		if s.port, err = freePort(); err != nil {
			return err
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	}
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--appendonly", "yes", "--appendfsync", "everysec",
		"--save", "", "--daemonize", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	s.cmd = exec.Command(bin, args...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	return waitReady(s.Addr, 10*time.Second)
}

// Kill ends the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts the server again on the same port and data dir.
func (s *Server) Restart() error { return s.start() }

// Stop ends the server.
func (s *Server) Stop() { s.Kill() }

func waitReady(addr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil || (err != nil && !isStarting(err) && time.Now().After(deadline)) {
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isStarting(err error) bool {
	return strings.Contains(err.Error(), "LOADING") || strings.Contains(err.Error(), "connection refused")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
