package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/sim"
)

// pushToken is the worker's AUTH0_STREAM_TOKEN in the push runs.
const pushToken = "Bearer bench-stream-token-0123456789abcdef"

// Push is the Log Streams receiver's figures, with the Redis buffer. The
// pushed logs exist only in the stream (the worker's Auth0 simulator is
// empty and it polls every hour): every figure is the pushed path's.
type Push struct {
	// Accepted: Events logs pushed as fast as the receiver answers, in
	// requests of BatchSize records by Concurrency pushers; Elapsed runs
	// from the first request until the last was answered 200.
	Events, BatchSize, Concurrency int
	Elapsed                        time.Duration
	Retries                        int // requests answered other than 200 and sent again
	// Latency: Rate logs a second for For, in requests of BatchSize; each
	// log's latency runs from the start of its push request to the moment
	// the Segment simulator first accepted its messageId.
	Rate      int
	For       time.Duration
	Latencies []time.Duration // sorted
	Missing   int
}

// AcceptedRate is the logs per second the receiver answered 200 for.
func (p Push) AcceptedRate() float64 { return rate(p.Events, p.Elapsed) }

// Percentile of the push → Segment latencies.
func (p Push) Percentile(q float64) time.Duration {
	return Steady{Latencies: p.Latencies}.Percentile(q)
}

// pushLogs returns n logs as a stream would push them, from a simulator
// of their own.
func pushLogs(n int) []sim.RawLog {
	a := sim.NewAuth0(sim.Auth0Options{})
	ids := a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(9, 9)), n, time.Now(), time.Millisecond)...)
	out := make([]sim.RawLog, n)
	for i, id := range ids {
		raw, _ := a.Log(id)
		out[i] = sim.RawLog{ID: id, JSON: raw}
	}
	return out
}

// startPushWorker starts a worker with the receiver on and waits until it
// is ready; its Auth0 simulator holds nothing.
func startPushWorker(ctx context.Context, opts Options, env workerEnv) (*worker, *sim.Segment, string, func(), error) {
	auth0Srv := httptest.NewServer(sim.NewAuth0(sim.Auth0Options{ClientID: benchClientID, ClientSecret: benchClientSecret}))
	seg, segSrv, _ := newSegment()
	port, err := freePort()
	if err != nil {
		return nil, nil, "", nil, err
	}
	streamAddr := "127.0.0.1:" + strconv.Itoa(port)
	env.auth0URL, env.segmentURL = auth0Srv.URL, segSrv.URL
	env.extra = append(slices.Clip(env.extra), "AUTHPIPE_STREAM_LISTEN="+streamAddr, "AUTH0_STREAM_TOKEN="+pushToken,
		"AUTHPIPE_STREAM_POLL_INTERVAL=1h")
	w, err := startWorker(opts.Authpipe, env)
	cleanup := func() {
		if w != nil {
			w.kill()
		}
		auth0Srv.Close()
		segSrv.Close()
	}
	if err != nil {
		cleanup()
		return nil, nil, "", nil, err
	}
	if err := w.waitReady(ctx, time.Minute); err != nil {
		cleanup()
		return nil, nil, "", nil, err
	}
	return w, seg, "http://" + streamAddr + "/auth0/logs", cleanup, nil
}

// pushOnce posts body until it is answered 200 and returns how many
// answers were not.
func pushOnce(ctx context.Context, c *http.Client, url string, body []byte) (int, error) {
	for retries := 0; ; retries++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return retries, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", pushToken)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return retries, nil
			}
		}
		if ctx.Err() != nil || retries > 100 {
			return retries, fmt.Errorf("push: not accepted after %d tries (last: %v)", retries+1, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runPush measures the receiver: the accepted rate, then the latency at
// opts.PushRate, each on a worker of its own.
func runPush(ctx context.Context, opts Options, env workerEnv) (Push, error) {
	const batch, pushers = 100, 4
	res := Push{Events: opts.PushEvents, BatchSize: batch, Concurrency: pushers, Rate: opts.PushRate, For: opts.PushFor}

	// Accepted rate.
	logs := pushLogs(opts.PushEvents)
	bodies := make([][]byte, 0, len(logs)/batch+1)
	for i := 0; i < len(logs); i += batch {
		bodies = append(bodies, sim.StreamBody(sim.StreamJSONLines, logs[i:min(i+batch, len(logs))]))
	}
	env.tenant += "-accept"
	w, _, url, cleanup, err := startPushWorker(ctx, opts, env)
	if err != nil {
		return res, err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: pushers}}
	var next, retries atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range pushers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(bodies) {
					return
				}
				n, err := pushOnce(ctx, client, url, bodies[i])
				retries.Add(int64(n))
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	res.Elapsed, res.Retries = time.Since(start), int(retries.Load())
	if firstErr == nil {
		firstErr = w.stop()
	}
	cleanup()
	if firstErr != nil {
		return res, firstErr
	}

	// Latency at a steady rate: a request of batch logs every batch/rate.
	total := int(float64(opts.PushRate) * opts.PushFor.Seconds())
	logs = pushLogs(total)
	env.tenant = env.tenant[:len(env.tenant)-len("-accept")] + "-latency"
	w, seg, url, cleanup, err := startPushWorker(ctx, opts, env)
	if err != nil {
		return res, err
	}
	defer cleanup()
	sent := make([]time.Time, total)
	every := time.Duration(float64(time.Second) * batch / float64(opts.PushRate))
	tick := time.NewTicker(every)
	var pwg sync.WaitGroup
	for i := 0; i < total; i += batch {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		part := logs[i:min(i+batch, total)]
		now := time.Now()
		for j := range part {
			sent[i+j] = now
		}
		pwg.Go(func() {
			if _, err := pushOnce(ctx, client, url, sim.StreamBody(sim.StreamJSONLines, part)); err != nil {
				once.Do(func() { firstErr = err })
			}
		})
	}
	tick.Stop()
	pwg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	deadline := time.Now().Add(30 * time.Second)
	for seg.Count() < total && time.Now().Before(deadline) {
		if err := w.exited(); err != nil {
			return res, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, l := range logs {
		at, ok := seg.FirstSeen(forward.MessageID(env.tenant, l.ID))
		if !ok {
			res.Missing++
			continue
		}
		res.Latencies = append(res.Latencies, at.Sub(sent[i]))
	}
	slices.Sort(res.Latencies)
	return res, w.stop()
}
