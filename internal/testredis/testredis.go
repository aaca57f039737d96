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
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/freeport"
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
// tests sharing one server never see each other's data. It is a valid
// tenant name (config.CheckTenant: lower case, at most 32 characters) of at
// most 24, so that a test can add a suffix for a second tenant.
func Name(t testing.TB) string {
	prefix := fmt.Sprintf("t%d_%d_", os.Getpid(), seq.Add(1))
	base := strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "_"))
	if n := max(24-len(prefix), 0); len(base) > n {
		base = base[len(base)-n:]
	}
	return prefix + base
}

// Server is a redis-server process owned by one test.
type Server struct {
	Addr string
	dir  string
	port int
	args []string // extra redis-server arguments, after the defaults
	cmd  *exec.Cmd
	mu   sync.Mutex
}

// Start runs a private redis-server with its own data dir and append-only
// persistence, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t)
}

// StartWith is Start with extra redis-server arguments, which override the
// defaults (e.g. "--appendonly", "no", or "--rename-command", "CONFIG", "").
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), args: args}
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
		if s.port, err = FreePort(); err != nil {
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
	args = append(args, s.args...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.SysProcAttr = diesWithUs()
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

// RestartEmpty kills the server, empties its data dir and starts it again
// on the same port: what a replica promoted before it had synced, or a
// lost volume, looks like to a client.
func (s *Server) RestartEmpty() error {
	s.Kill()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == "redis.log" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			return err
		}
	}
	return s.start()
}

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

// FreePort returns a loopback TCP port nothing listens on (freeport.Pick).
func FreePort() (int, error) { return freeport.Pick() }

// Cluster is a local Redis Cluster of three masters (no replicas) owned by
// one test: real redis-server processes with --cluster-enabled, joined by
// redis-cli --cluster create, each with its own data dir and append-only
// persistence.
type Cluster struct {
	Addrs []string
	nodes []*clusterNode
}

type clusterNode struct {
	addr string
	cmd  *exec.Cmd
}

// StartCluster starts a three-node Redis Cluster and waits until every node
// reports cluster_state:ok; it is stopped when the test ends. It fails the
// test, like Addr, when redis-server or redis-cli is missing.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{}
	t.Cleanup(c.stop)
	if err := c.start(t.TempDir()); err != nil {
		t.Fatalf("start redis cluster (needs redis-server and redis-cli): %v", err)
	}
	return c
}

// Client returns a cluster client (contexts bound blocking commands, as
// authpipe run configures it), closed when the test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// URL returns the cluster as a REDIS_URL: redis-cluster://host:port,….
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs, ",") }

func (c *Cluster) start(dir string) error {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return err
	}
	for i := range 3 {
		port, err := FreePort()
		if err != nil {
			return err
		}
		bus, err := FreePort()
		if err != nil {
			return err
		}
		nodeDir := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(nodeDir, 0o750); err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(server,
			"--port", strconv.Itoa(port), "--cluster-port", strconv.Itoa(bus), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(nodeDir, "nodes.conf"),
			"--cluster-node-timeout", "5000",
			"--dir", nodeDir, "--appendonly", "yes", "--appendfsync", "everysec",
			"--save", "", "--daemonize", "no", "--loglevel", "warning",
			"--logfile", filepath.Join(nodeDir, "redis.log"))
		cmd.SysProcAttr = diesWithUs()
		if err := cmd.Start(); err != nil {
			return err
		}
		c.nodes = append(c.nodes, &clusterNode{addr: addr, cmd: cmd})
		c.Addrs = append(c.Addrs, addr)
	}
	for _, n := range c.nodes {
		if err := waitReady(n.addr, 10*time.Second); err != nil {
			return fmt.Errorf("node %s: %w", n.addr, err)
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	return c.waitOK(20 * time.Second)
}

// waitOK waits until every node reports cluster_state:ok and knows all
// three masters.
func (c *Cluster) waitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := rdb.ClusterInfo(ctx).Result()
			cancel()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			if time.Now().After(deadline) {
				_ = rdb.Close()
				return fmt.Errorf("node %s: cluster not ok within %s: %v %s", n.addr, timeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = rdb.Close()
	}
	return nil
}

func (c *Cluster) stop() {
	for _, n := range c.nodes {
		if n.cmd.Process != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
		}
	}
}

// Sentinel is a Redis master watched by one Sentinel (quorum 1), owned by
// one test: enough for clients that find the master through Sentinel.
type Sentinel struct {
	Master       *Server
	SentinelAddr string
	MasterName   string
	cmd          *exec.Cmd
}

// StartSentinel starts a master (as Start does) and a Sentinel that
// monitors it as "authpipe", and waits until the Sentinel names the master;
// both are stopped when the test ends.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{Master: Start(t), MasterName: "authpipe"}
	t.Cleanup(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
	if err := s.start(t.TempDir()); err != nil {
		t.Fatalf("start redis sentinel: %v", err)
	}
	return s
}

// URL returns the REDIS_URL that reaches the master through the Sentinel.
func (s *Sentinel) URL() string {
	return "redis-sentinel://" + s.SentinelAddr + "?master=" + s.MasterName
}

func (s *Sentinel) start(dir string) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	s.SentinelAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	host, masterPort, err := net.SplitHostPort(s.Master.Addr)
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), s.MasterName, host, masterPort, s.MasterName)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	s.cmd = exec.Command(bin, conf, "--sentinel")
	s.cmd.SysProcAttr = diesWithUs()
	if err := s.cmd.Start(); err != nil {
		return err
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addr, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		cancel()
		if err == nil && len(addr) == 2 && net.JoinHostPort(addr[0], addr[1]) == s.Master.Addr {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sentinel %s does not name the master %s: %v %v", s.SentinelAddr, s.Master.Addr, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diesWithUs makes a server die with the test process, even when the
// process is killed before its cleanups run (the shared server has none).
func diesWithUs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
