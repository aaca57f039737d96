package bench

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/freeport"
)

// procStats is what /proc says about one process.
type procStats struct {
	HWM  int64 // peak resident set (VmHWM), bytes
	Anon int64 // anonymous resident memory (RssAnon), bytes
	File int64 // file-backed resident memory (RssFile: mmapped files), bytes
	CPU  time.Duration
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat.
func readProc(pid int) (procStats, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procStats{}, err
	}
	status, err := p.NewStatus()
	if err != nil {
		return procStats{}, err
	}
	stat, err := p.Stat()
	if err != nil {
		return procStats{}, err
	}
	return procStats{HWM: int64(status.VmHWM), Anon: int64(status.RssAnon), File: int64(status.RssFile),
		CPU: time.Duration(stat.CPUTime() * float64(time.Second)).Round(time.Millisecond)}, nil
}

// redisServer is a private redis-server with production persistence
// (append-only file, fsync every second), as scripts/test.sh starts one.
type redisServer struct {
	Addr string
	cmd  *exec.Cmd
}

func startRedis(ctx context.Context, bin, dir string) (*redisServer, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, fmt.Errorf("find redis-server: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &redisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.cmd = exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--appendonly", "yes", "--appendfsync", "everysec",
		"--save", "", "--daemonize", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer: %w", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *redisServer) Pid() int { return s.cmd.Process.Pid }

func (s *redisServer) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func freePort() (int, error) { return freeport.Pick() }

// selfCPU is this process's CPU time so far (user + system, every thread).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
