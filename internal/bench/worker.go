package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// worker is one `authpipe run` subprocess.
type worker struct {
	backend string
	listen  string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	waitErr error

	mu   sync.Mutex
	logs []string // last lines of its output
	http *http.Client
}

// workerEnv is the environment of one authpipe run: a clean one, so that
// the caller's AUTH0_* or REDIS_URL cannot leak in.
type workerEnv struct {
	backend      string // "redis" or "bolt"
	tenant       string
	auth0URL     string
	segmentURL   string
	redisAddr    string
	dataDir      string
	rules        string
	pollInterval time.Duration
	extra        []string
}

func (e workerEnv) environ(listen string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"AUTHPIPE_TENANT=" + e.tenant,
		"AUTHPIPE_LISTEN=" + listen,
		"AUTHPIPE_RULES=" + e.rules,
		"AUTHPIPE_LOG_LEVEL=warn",
		"AUTHPIPE_HASH_KEY=bench-hash-key-0123456789abcdef0123456789",
		"AUTH0_DOMAIN=" + e.auth0URL,
		"AUTH0_CLIENT_ID=" + benchClientID,
		"AUTH0_CLIENT_SECRET=" + benchClientSecret,
		"AUTH0_POLL_INTERVAL=" + e.pollInterval.String(),
		"SEGMENT_WRITE_KEY=" + benchWriteKey,
		"SEGMENT_ENDPOINT=" + e.segmentURL,
	}
	if e.backend == "redis" {
		env = append(env, "REDIS_URL=redis://"+e.redisAddr+"/0")
	} else {
		env = append(env, "AUTHPIPE_DATA_DIR="+e.dataDir)
	}
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		env = append(env, "GOMAXPROCS="+v)
	}
	return append(env, e.extra...)
}

func startWorker(bin string, e workerEnv) (*worker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	w := &worker{
		backend: e.backend,
		listen:  "127.0.0.1:" + strconv.Itoa(port),
		done:    make(chan struct{}),
		http:    &http.Client{Timeout: 5 * time.Second},
	}
	w.cmd = exec.Command(bin, "run")
	w.cmd.Env = e.environ(w.listen)
	out, err := w.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	w.cmd.Stdout = w.cmd.Stderr
	w.started = time.Now()
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s run: %w", bin, err)
	}
	go w.collect(out)
	go func() {
		w.waitErr = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

func (w *worker) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		w.mu.Lock()
		w.logs = append(w.logs, sc.Text())
		if len(w.logs) > 200 {
			w.logs = w.logs[len(w.logs)-100:]
		}
		w.mu.Unlock()
	}
}

// tail returns the last lines the worker printed.
func (w *worker) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := max(len(w.logs)-20, 0)
	return strings.Join(w.logs[n:], "\n")
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

// exited reports an early exit as an error.
func (w *worker) exited() error {
	select {
	case <-w.done:
		return fmt.Errorf("authpipe (%s) exited early: %v\n%s", w.backend, w.waitErr, w.tail())
	default:
		return nil
	}
}

// kill ends a worker that still runs, without the ordered shutdown.
func (w *worker) kill() {
	if w.exited() == nil {
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

// stop sends SIGTERM and waits for the ordered shutdown.
func (w *worker) stop() error {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		w.kill()
		return fmt.Errorf("authpipe (%s) did not stop within 30s of SIGTERM", w.backend)
	}
	var ee *exec.ExitError
	if w.waitErr != nil && !errors.As(w.waitErr, &ee) {
		return w.waitErr
	}
	if w.cmd.ProcessState.ExitCode() != 0 {
		return fmt.Errorf("authpipe (%s) exited with %d:\n%s", w.backend, w.cmd.ProcessState.ExitCode(), w.tail())
	}
	return nil
}

// waitReady waits until /-/ready answers 200 (the buffer and Auth0 have
// answered).
func (w *worker) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := w.exited(); err != nil {
			return err
		}
		resp, err := w.http.Get("http://" + w.listen + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("authpipe (%s) not ready after %s:\n%s", w.backend, timeout, w.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metric returns the sum of the samples of a metric family on /metrics.
func (w *worker) metric(name string) (float64, error) {
	resp, err := w.http.Get("http://" + w.listen + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, m := range families[name].GetMetric() {
		// A sample is a counter, a gauge or untyped: the others read 0.
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return sum, nil
}

// profile writes a CPU profile of the worker, from after until after+d, to
// path (the worker must run with AUTHPIPE_PPROF=true); failures go to logw.
func (w *worker) profile(path string, after, d time.Duration, logw io.Writer) {
	time.Sleep(after)
	c := &http.Client{Timeout: d + 10*time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", w.listen, int(d.Seconds())))
	if err != nil {
		fmt.Fprintln(logw, "worker profile:", err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, data)
	}
	if err == nil {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(logw, "worker profile:", err)
	}
}
