// Package stream tests, end to end, Auth0 Log Streams pushed into authpipe
// with polling as the completeness backstop (issue 17): `authpipe run` as
// a subprocess with its receiver on (AUTHPIPE_STREAM_LISTEN), the Auth0
// simulator's logs pushed to it by the simulator's Log Stream (the three
// content formats, three tries per delivery, errored deliveries retried,
// a share dropped for good) while its poller polls the same logs, both
// into one real redis-server, forwarded to the Segment simulator. Every
// log must reach Segment once by messageId, the stream's misses must be
// counted exactly, a pushed attack must alert within 2 s, and refusals,
// a full buffer and kill -9 must lose nothing.
//
// A package of its own, so that `go test ./...` runs it beside the
// others.
package stream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
)

const repoRoot = "../../../.."

// streamToken is the Authorization Token of the tenant's Log Stream.
const streamToken = "Bearer e2e-stream-token-DO-NOT-LOG-0123456789abcdef"

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

// world is one tenant: the simulators over real HTTP, authpipe's
// environment with the receiver on, and what its processes print.
type world struct {
	t          *testing.T
	auth0      *sim.Auth0
	segment    *sim.Segment
	env        e2etest.RunEnv
	streamAddr string
	extra      []string
	logs       *e2etest.SyncBuf
	rng        *rand.Rand
}

func newWorld(t *testing.T, redisAddr string, extra ...string) *world {
	t.Helper()
	w := &world{
		t:          t,
		auth0:      sim.NewAuth0(sim.Auth0Options{ClientID: e2etest.ClientID, ClientSecret: e2etest.ClientSecret}),
		segment:    sim.NewSegment(sim.SegmentOptions{WriteKey: e2etest.WriteKey}),
		streamAddr: e2etest.FreeAddr(t),
		logs:       &e2etest.SyncBuf{},
		rng:        rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17)),
	}
	a, s := httptest.NewServer(w.auth0), httptest.NewServer(w.segment)
	t.Cleanup(a.Close)
	t.Cleanup(s.Close)
	w.env = e2etest.RunEnv{Auth0URL: a.URL, SegmentURL: s.URL, RedisAddr: redisAddr,
		Tenant: fmt.Sprintf("e2e%d", rand.Uint32()), Listen: e2etest.FreeAddr(t)}
	w.extra = append([]string{
		"AUTHPIPE_STREAM_LISTEN=" + w.streamAddr,
		"AUTH0_STREAM_TOKEN=" + streamToken,
	}, extra...)
	e2etest.ReportOnFailure(t, w.env.Listen, w.logs.String)
	return w
}

// start runs `authpipe run` and waits until it is ready.
func (w *world) start() *e2etest.Proc {
	w.t.Helper()
	cmd := exec.Command(authpipeBin, "run")
	cmd.Dir = repoRoot
	cmd.Env = append(w.env.List(), w.extra...)
	p := e2etest.Start(w.t, cmd, w.logs)
	p.WaitHTTP(w.t, "http://"+w.env.Listen+"/-/ready", 30*time.Second)
	return p
}

// url is the single tenant's payload URL.
func (w *world) url() string { return "http://" + w.streamAddr + "/auth0/logs" }

func (w *world) metric(name string) float64 {
	w.t.Helper()
	return e2etest.MetricSum(w.t, w.env.Listen, name)
}

// add puts n events dated now into the Auth0 simulator.
func (w *world) add(n int) []string {
	return w.auth0.Add(sim.GenerateEvents(w.rng, n, time.Now(), 100*time.Microsecond)...)
}

// stream is a Log Stream of the simulator pushing to authpipe, running
// until the test ends or stop is called.
type stream struct {
	*sim.Stream
	stop func()
}

func (w *world) newStream(opts sim.StreamOptions) *stream {
	w.t.Helper()
	opts.URL, opts.Authorization = w.url(), streamToken
	s, err := sim.NewStream(opts)
	require.NoError(w.t, err)
	s.Follow(w.auth0)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	w.t.Cleanup(stop)
	return &stream{Stream: s, stop: stop}
}

// warmUp pushes a few logs without drops and waits until authpipe stored
// them: the stream's first delivery, from which its misses count.
func (w *world) warmUp(format sim.StreamFormat) []string {
	w.t.Helper()
	s := w.newStream(sim.StreamOptions{Format: format})
	ids := w.add(10)
	e2etest.WaitFor(w.t, 10*time.Second, func() bool { return s.Stats().Delivered == len(ids) },
		func() string { return fmt.Sprintf("warm-up stream: %+v", s.Stats()) })
	s.stop()
	return ids
}

// post sends body to the receiver with the Authorization header auth and
// returns the status and the answer.
func (w *world) post(auth string, body []byte) (int, string) {
	w.t.Helper()
	req, err := http.NewRequest(http.MethodPost, w.url(), bytes.NewReader(body))
	require.NoError(w.t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(msg)
}

// raws returns the simulator's logs of ids as its stream pushes them.
func (w *world) raws(ids []string) []sim.RawLog {
	out := make([]sim.RawLog, len(ids))
	for i, id := range ids {
		raw, ok := w.auth0.Log(id)
		require.True(w.t, ok, id)
		out[i] = sim.RawLog{ID: id, JSON: raw}
	}
	return out
}

// requireNoStreamSecrets checks that the stream token reached no log line.
func (w *world) requireNoStreamSecrets() {
	w.t.Helper()
	out := w.logs.String()
	e2etest.RequireNoSecrets(w.t, out)
	require.NotContains(w.t, out, strings.TrimPrefix(streamToken, "Bearer "), "the stream token reached the logs")
}

func newRNG() *rand.Rand { return rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 23)) }
