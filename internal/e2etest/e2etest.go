// Package e2etest runs the external processes of authpipe's end-to-end
// tests: the authpipe binary (built once per test binary), `authpipe run`
// and `authpipe sim`, and Prometheus and Alertmanager from their Debian
// packages, each on free loopback ports and stopped when its test ends. It
// is for tests only, like testredis; the test packages that use it
// (cmd/authpipe/e2e/…, one per topic so that `go test ./...` runs them in
// parallel) share its helpers instead of copying them: Harness is one
// tenant's world for `authpipe run`.
package e2etest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/freeport"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// EnvRequireTools names the variable that turns a missing external tool
// from a skip into a failure (`make test` sets it after installing them).
const EnvRequireTools = "AUTHPIPE_TEST_REQUIRE_TOOLS"

// Credentials the simulators accept and tests check never reach a log.
const (
	ClientID     = "e2e-client"
	ClientSecret = "e2e-client-secret-DO-NOT-LOG"
	WriteKey     = "e2e-write-key-DO-NOT-LOG"
	// AdminStaticToken is an AUTHPIPE_ADMIN_STATIC_TOKEN for tests that
	// turn the admin API on.
	AdminStaticToken = "e2e-static-token-DO-NOT-LOG-0123456789"
)

// Main is a test package's TestMain: it builds authpipe (race detector on,
// as the tests run) with the given -ldflags into a temporary directory,
// sets *bin to the binary's path, runs the tests and removes the directory.
// It returns the exit code for os.Exit.
func Main(m *testing.M, ldflags string, bin *string) int {
	dir, err := os.MkdirTemp("", "authpipe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = filepath.Join(dir, "authpipe")
	build := exec.Command("go", "build", "-race", "-ldflags", ldflags, "-o", *bin, "github.com/authpipe/authpipe/cmd/authpipe")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build authpipe:", err)
		return 1
	}
	return m.Run()
}

// NeedTool returns the path of an external tool, skipping the test when it
// is missing unless EnvRequireTools is set.
func NeedTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(EnvRequireTools) != "" {
			t.Fatalf("%s not found: make test installs it (Debian packages prometheus, prometheus-alertmanager)", name)
		}
		t.Skipf("%s not found; `make test` installs it", name)
	}
	return p
}

// FreeAddr returns a loopback address nothing listens on, below the
// kernel's ephemeral ports (freeport.Pick says why).
func FreeAddr(t *testing.T) string {
	t.Helper()
	port, err := freeport.Pick()
	require.NoError(t, err)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// Tail returns the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// WaitFor polls cond until it holds or timeout passes, then fails with msg().
func WaitFor(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, msg())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// SyncBuf is a bytes.Buffer safe for a process' output and a reader.
type SyncBuf = testlogs.Buffer

// Proc is a running process started by a test, killed when the test ends.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *SyncBuf // stdout and stderr, line by line
	done chan struct{}
	err  error
}

// Start starts cmd with its stdout and stderr going, line by line, to the
// returned Proc's Out (and to also, if set), and kills it when t ends.
func Start(t *testing.T, cmd *exec.Cmd, also io.Writer) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Out: &SyncBuf{}, done: make(chan struct{})}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	require.NoError(t, cmd.Start())
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := append(sc.Bytes(), '\n')
			_, _ = p.Out.Write(line)
			if also != nil {
				_, _ = also.Write(line)
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() {
		p.err = cmd.Wait()
		_ = w.Close()
		<-lines
		close(p.done)
	}()
	t.Cleanup(p.Kill)
	return p
}

// Done is closed when the process has exited and its output is read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process' exit error, once Done is closed.
func (p *Proc) Err() error { return p.err }

// Kill ends the process with SIGKILL, unless it has exited.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// WaitHTTP waits until GET url answers 200, failing if p exits first.
func (p *Proc) WaitHTTP(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered: %v\n%s", p.Cmd.Path, url, p.err, Tail(p.Out.String(), 6000))
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer 200 within %s:\n%s", url, timeout, Tail(p.Out.String(), 6000))
}

// Scrape returns the body of GET http://addr/metrics.
func Scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// MetricSum sums the samples of a scrape of addr whose line starts with
// name: a metric name, or a name and the start of its labels
// (`authpipe_x{code="429"`).
func MetricSum(t *testing.T, addr, name string) float64 {
	t.Helper()
	total := 0.0
	for _, line := range strings.Split(Scrape(t, addr), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") ||
			(strings.Contains(name, "{") && strings.HasPrefix(line, name)) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(t, err)
			total += v
		}
	}
	return total
}

// Sim is a running `authpipe sim`.
type Sim struct {
	*Proc
	Auth0URL, SegmentURL string
}

var simAddrRE = regexp.MustCompile(`(?m)^  (Auth0|Segment) +(http://\S+)`)

// StartSim runs `authpipe sim` (bin) on loopback ports with the e2e
// credentials, reporting every second, and waits until it prints where it
// listens.
func StartSim(t *testing.T, bin string, args ...string) *Sim {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"sim", "--auth0-listen", "127.0.0.1:0",
		"--segment-listen", "127.0.0.1:0", "--report", "1s"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "AUTH0_CLIENT_ID=" + ClientID,
		"AUTH0_CLIENT_SECRET=" + ClientSecret, "SEGMENT_WRITE_KEY=" + WriteKey}
	s := &Sim{Proc: Start(t, cmd, nil)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("authpipe sim output:\n%s", Tail(s.Out.String(), 4000))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if m := simAddrRE.FindAllStringSubmatch(s.Out.String(), -1); len(m) == 2 {
			s.Auth0URL, s.SegmentURL = m[0][2], m[1][2]
			return s
		}
		select {
		case <-s.Done():
			t.Fatalf("authpipe sim exited: %v\n%s", s.Err(), s.Out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("authpipe sim did not print its addresses:\n%s", s.Out.String())
	return nil
}

// Generated is how many events the sim has generated (GET /-/stats).
func (s *Sim) Generated(t *testing.T) int64 {
	t.Helper()
	resp, err := http.Get(s.Auth0URL + "/-/stats")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st struct {
		Generated int64 `json:"generated"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st.Generated
}
