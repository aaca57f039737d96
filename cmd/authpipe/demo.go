package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/alerts"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/freeport"
	"github.com/authpipe/authpipe/internal/pipeline"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/status"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
)

// The demo runs the whole pipeline in one process: the Auth0 simulator with
// steady traffic and scripted attacks, the Segment simulator, the buffer
// (embedded, or Redis when REDIS_URL is set), the forwarder, the threshold
// checks with the shipped rules and the HTTP server.
//
// Its world is durable: the traffic is a function of a seed and a start time
// kept in the data dir, and the messageIds "Segment" accepted are appended
// to a file there before it answers. A demo killed and restarted with the
// same --data-dir regenerates the same events (same log_ids) and proves at
// the end that every one of them reached Segment.

const (
	demoClientID  = "demo-client"
	demoTenant    = "demo"
	worldFile     = "demo-world.json"
	receivedFile  = "demo-segment-received.txt"
	demoLogFile   = "authpipe.log"
	demoRulesFile = "thresholds.yml"
)

const demoUsage = `Usage: authpipe demo [flags]

Runs the whole pipeline on simulators, with no accounts: simulated Auth0
traffic with attacks, the embedded buffer, the Segment simulator, the
shipped threshold rules, and the status page on --listen.
`

func demoCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 0, "generate traffic this long, then drain and stop (0: until Ctrl-C)")
	rate := fs.Float64("rate", 50, "background auth events per second (first run of a data dir)")
	listen := fs.String("listen", "127.0.0.1:9464", "address of the status page, /metrics and the probes")
	dataDir := fs.String("data-dir", "", "buffer and demo state (default: a new temporary directory)")
	streamDrop := fs.Float64("stream-drop", 0.02, "share of the simulated Log Stream's deliveries dropped for good (the poller finds them); 0 to 1")
	if code, done := parseFlags(fs, demoUsage, args, stdout); done {
		return code
	}
	if fs.NArg() > 0 || *rate <= 0 || *rate > 100000 || *duration < 0 || !(*streamDrop >= 0 && *streamDrop <= 1) {
		fmt.Fprintln(stderr, "authpipe demo: flags: --duration D --rate N (0 < N ≤ 100000) --listen ADDR --data-dir DIR --stream-drop S (0 ≤ S ≤ 1)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &demo{out: stdout, duration: *duration, listen: *listen, dir: *dataDir, rate: *rate, streamDrop: *streamDrop}
	if err := d.run(ctx); err != nil {
		fmt.Fprintln(stderr, "authpipe demo:", err)
		return 1
	}
	if !d.ok {
		return 1
	}
	return 0
}

type demo struct {
	out      io.Writer
	duration time.Duration
	listen   string
	dir      string
	rate     float64

	streamDrop float64
	stream     *sim.Stream // the simulated Log Stream pushing to the receiver
	world      sim.World
	auth0      *sim.Auth0
	segment    *sim.Segment
	received   *os.File
	alerts     alertLog
	ok         bool
}

func (d *demo) run(ctx context.Context) error {
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "authpipe-demo-")
		if err != nil {
			return err
		}
		d.dir = dir
	}
	if err := os.MkdirAll(d.dir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := d.loadWorld(); err != nil {
		return err
	}
	secret := fmt.Sprintf("demo-%016x", rand.Uint64())
	writeKey := fmt.Sprintf("demo-%016x", rand.Uint64())
	d.auth0 = sim.NewAuth0(sim.Auth0Options{ClientID: demoClientID, ClientSecret: secret, Burst: 50, PerMinute: 6000})
	if err := d.openSegment(writeKey); err != nil {
		return err
	}
	defer d.received.Close()

	auth0URL, stopAuth0, err := serve(d.auth0)
	if err != nil {
		return err
	}
	defer stopAuth0()
	segURL, stopSeg, err := serve(d.segment)
	if err != nil {
		return err
	}
	defer stopSeg()
	hookURL, stopHook, err := serve(&d.alerts)
	if err != nil {
		return err
	}
	defer stopHook()

	streamToken := fmt.Sprintf("Bearer demo-%016x%016x", rand.Uint64(), rand.Uint64())
	port, err := freeport.Pick() // the receiver listens on it once the app runs
	if err != nil {
		return err
	}
	streamAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg, err := d.config(auth0URL, segURL, hookURL, secret, writeKey, streamAddr, streamToken)
	if err != nil {
		return err
	}
	// Auth0's Log Stream: every log the simulator stores is pushed to the
	// receiver, a share of the deliveries dropped for good.
	d.stream, err = sim.NewStream(sim.StreamOptions{URL: "http://" + streamAddr + "/auth0/logs", Authorization: streamToken,
		DropRate: d.streamDrop, KeepFirst: 3, Seed: d.world.Seed, ErroredRetry: 2 * time.Second})
	if err != nil {
		return err
	}
	d.stream.Follow(d.auth0)
	logf, err := os.OpenFile(filepath.Join(d.dir, demoLogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	defer logf.Close()
	logger := slog.New(componentHandler{Handler: slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo})})
	reg := newRegistry()
	app, err := pipeline.New(cfg, pipeline.Deps{Logger: logger, Registry: reg, Version: version})
	if err != nil {
		return err
	}

	buffer := "embedded (bbolt, in the data dir)"
	if cfg.Redis.URL != "" {
		buffer = "Redis at REDIS_URL"
	}
	fmt.Fprintf(d.out, "authpipe demo: the whole pipeline on the Auth0 and Segment simulators\n")
	fmt.Fprintf(d.out, "  buffer       %s; threshold rules: the shipped alerts/thresholds.yml\n", buffer)
	fmt.Fprintf(d.out, "  status page  http://%s/   metrics http://%s/metrics\n", d.listen, d.listen)
	fmt.Fprintf(d.out, "  data dir     %s (logs in %s)\n", d.dir, demoLogFile)
	fmt.Fprintf(d.out, "  traffic      %.0f events/s; attacks every %s: brute force (and Auth0 blocking it), credential stuffing, password spray\n", d.world.Rate, sim.AttackCycle)
	fmt.Fprintf(d.out, "  sources      a Log Stream pushes every log to http://%s/auth0/logs (%.0f%% of its deliveries dropped); the poller is the proof\n", streamAddr, 100*d.streamDrop)
	if d.duration > 0 {
		fmt.Fprintf(d.out, "  stops after  %s, once every generated event is in Segment (Ctrl-C stops early)\n\n", d.duration)
	} else {
		fmt.Fprintf(d.out, "  Ctrl-C stops it\n\n")
	}

	appCtx, stopApp := context.WithCancel(context.Background())
	defer stopApp()
	appDone := make(chan error, 1)
	go func() { appDone <- app.Run(appCtx, nil) }()
	// The stream pushes once the receiver listens: authpipe counts as
	// missed only logs dated after the stream's first delivery, so the
	// first ones must not wait in the simulated stream's queue.
	waitListening(streamAddr, 30*time.Second)
	pushCtx, stopPush := context.WithCancel(context.Background())
	defer stopPush()
	pushDone := make(chan struct{})
	go func() {
		defer close(pushDone)
		_ = d.stream.Run(pushCtx)
	}()

	genCtx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	if d.duration > 0 {
		genCtx, stopGen = context.WithTimeout(ctx, d.duration)
		defer stopGen()
	}
	began := time.Now()
	d.generate(genCtx, reg, began)
	generatedUntil := time.Now() // the attacks expected are those generated

	// Drain: wait until Segment holds every generated event.
	drainCtx, stopDrain := context.WithTimeout(context.Background(), time.Minute)
	defer stopDrain()
	if ctx.Err() == nil {
		fmt.Fprintln(d.out, "\ntraffic stopped; waiting until Segment holds every generated event…")
	}
	d.waitDelivered(drainCtx, reg, began)
	d.waitMissed(drainCtx, reg, cfg.Stream.HealthyWindow+cfg.Stream.PollInterval)
	stopPush()
	<-pushDone

	stopApp()
	var runErr error
	select {
	case runErr = <-appDone:
	case <-time.After(cfg.ShutdownTimeout + 2*time.Second):
		runErr = errors.New("authpipe did not stop in time")
	}
	d.summary(began, generatedUntil, reg)
	return runErr
}

// waitListening waits, at most timeout, until addr accepts connections.
func waitListening(addr string, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			return
		}
	}
}

// waitMissed waits, at most wait, until the stream's missed counter has
// counted every log the simulated stream dropped: a dropped log counts
// once the grace after its date has passed.
func (d *demo) waitMissed(ctx context.Context, reg prometheus.Gatherer, wait time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		s, _ := status.Snapshot(reg)
		if len(s.Tenants) == 0 || s.Tenants[0].Stream == nil || s.Tenants[0].Stream.Missed >= float64(len(d.stream.Dropped())) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *demo) loadWorld() error {
	p := filepath.Join(d.dir, worldFile)
	b, err := os.ReadFile(p)
	if err == nil {
		if err := json.Unmarshal(b, &d.world); err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d.world = sim.World{Seed: rand.Uint64(), Start: time.Now().UTC().Truncate(time.Second), Rate: d.rate}
	b, _ = json.Marshal(d.world)
	return writeFileSync(p, b)
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// openSegment starts the Segment simulator with what earlier runs of this
// data dir delivered, and records every newly accepted messageId durably
// before the simulator answers 200.
func (d *demo) openSegment(writeKey string) error {
	p := filepath.Join(d.dir, receivedFile)
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	earlier := strings.Fields(string(b)) // one messageId a line
	f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	d.received = f
	var mu sync.Mutex
	d.segment = sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey, OnAccept: func(ids []string) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := f.WriteString(strings.Join(ids, "\n") + "\n"); err != nil {
			return err
		}
		return f.Sync()
	}})
	d.segment.Preload(earlier)
	return nil
}

func (d *demo) config(auth0URL, segURL, hookURL, secret, writeKey, streamAddr, streamToken string) (*config.Config, error) {
	cfg := config.Default()
	cfg.Tenant = demoTenant
	cfg.Auth0.Domain = auth0URL
	cfg.Auth0.ClientID = demoClientID
	cfg.Auth0.ClientSecret = config.Secret(secret)
	cfg.Auth0.PollInterval = 500 * time.Millisecond
	cfg.Segment.WriteKey = config.Secret(writeKey)
	cfg.Segment.Endpoint = segURL
	cfg.Segment.FlushInterval = 500 * time.Millisecond
	cfg.Redis.URL = config.Secret(os.Getenv("REDIS_URL"))
	cfg.DataDir = d.dir
	cfg.Listen = d.listen
	cfg.Buffer.Consumer = "demo"
	cfg.Buffer.ReclaimIdle = 10 * time.Second
	cfg.AlertWebhookURL = hookURL
	cfg.Stream.Listen = streamAddr
	cfg.Auth0.StreamToken = config.Secret(streamToken)
	// Short enough that the demo shows the poller finding what the stream
	// dropped, and the miss counted, within its run.
	cfg.Stream.PollInterval = 5 * time.Second
	cfg.Stream.HealthyWindow = 10 * time.Second
	cfg.AlertmanagerURL = os.Getenv("ALERTMANAGER_URL")
	cfg.RulesPath = filepath.Join(d.dir, demoRulesFile)
	if err := writeFileSync(cfg.RulesPath, alerts.Thresholds); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// serve runs h on a free loopback port.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// generate adds the world's events to the Auth0 simulator as their time
// comes, and prints the live view once a second, until ctx ends.
func (d *demo) generate(ctx context.Context, reg prometheus.Gatherer, began time.Time) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	cursor := d.world.Start // events before it are in the simulator
	lastView := time.Time{}
	var prev status.Summary
	for {
		now := time.Now()
		if batch := d.world.EventsBetween(cursor, now); len(batch) > 0 {
			d.auth0.Add(batch...)
		}
		cursor = now
		if now.Sub(lastView) >= time.Second {
			prev = d.view(reg, began, prev, now.Sub(lastView))
			lastView = now
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// view prints one line of the live view.
func (d *demo) view(reg prometheus.Gatherer, began time.Time, prev status.Summary, elapsed time.Duration) status.Summary {
	s, _ := status.Snapshot(reg)
	if len(prev.Tenants) > 0 {
		s.SetRates(prev, elapsed)
	}
	var t status.Tenant
	if len(s.Tenants) > 0 {
		t = s.Tenants[0]
	}
	rate := 0.0
	for _, st := range t.Stages {
		if st.Name == "forward" {
			rate = st.RatePerSec
		}
	}
	firing := d.alerts.firing()
	fmt.Fprintf(d.out, "%6s  polled %6.0f  forwarded %6.0f (%4.0f/s)  backlog %5.0f  dead letters %.0f  lag %5s  alerts firing: %s\n",
		time.Since(began).Round(time.Second), t.Polled, t.Acked, rate, t.Backlog, t.DeadLetters,
		time.Duration(t.CheckpointLagSeconds*float64(time.Second)).Round(time.Second), orNone(firing))
	return s
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// missing returns the generated log_ids Segment does not hold.
func (d *demo) missing() []string {
	got := d.segment.MessageIDs()
	var out []string
	for _, id := range d.auth0.LogIDs() {
		if got[demoTenant+"-"+id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

func (d *demo) waitDelivered(ctx context.Context, reg prometheus.Gatherer, began time.Time) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastView := time.Now()
	var prev status.Summary
	want := d.world.ExpectedAlerts(time.Now())
	var deliveredAt time.Time
	for {
		if deliveredAt.IsZero() && len(d.missing()) == 0 {
			deliveredAt = time.Now()
		}
		// Alerts come from the counting path, which runs beside delivery:
		// give them a few seconds after the last event is in Segment.
		if !deliveredAt.IsZero() && (d.alerts.firedAll(want) || time.Since(deliveredAt) > 10*time.Second) {
			return
		}
		if time.Since(lastView) >= time.Second {
			prev = d.view(reg, began, prev, time.Since(lastView))
			lastView = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (d *demo) summary(began, generatedUntil time.Time, reg prometheus.Gatherer) {
	generated := d.auth0.LogIDs()
	missing := d.missing()
	st := d.segment.Stats()
	fired := d.alerts.fired()
	want := d.world.ExpectedAlerts(generatedUntil)
	fmt.Fprintf(d.out, "\nsummary after %s (data dir %s)\n", time.Since(began).Round(time.Second), d.dir)
	fmt.Fprintf(d.out, "  events generated   %d (since the data dir was created)\n", len(generated))
	fmt.Fprintf(d.out, "  in Segment         %d (duplicates absorbed by messageId: %d)\n", len(generated)-len(missing), st.Duplicates)
	if s, _ := status.Snapshot(reg); len(s.Tenants) > 0 && s.Tenants[0].Stream != nil {
		t := s.Tenants[0]
		sf, pf, _ := t.FirstShares()
		fmt.Fprintf(d.out, "  delivered first    by the Log Stream %.0f (%.1f%%), by the poller %.0f (%.1f%%)\n", t.Stream.First, 100*sf, t.PolledFirst, 100*pf)
		fmt.Fprintf(d.out, "  stream missed      %.0f (the simulated stream dropped %d; the poller stored them; logs dated before the stream's first delivery are not counted)\n",
			t.Stream.Missed, len(d.stream.Dropped()))
	}
	fmt.Fprintf(d.out, "  alerts fired       %s\n", orNone(fired))
	d.ok = len(missing) == 0
	if d.ok {
		fmt.Fprintln(d.out, "  nothing lost: every generated event reached Segment")
	} else {
		fmt.Fprintf(d.out, "  NOT DELIVERED      %d events, e.g. log_id %s\n", len(missing), missing[0])
	}
	for _, name := range want {
		if !slices.Contains(fired, name) {
			d.ok = false
			fmt.Fprintf(d.out, "  MISSING ALERT      %s: its attack ran but it did not fire\n", name)
		}
	}
}

// alertLog receives the threshold engine's webhook notifications.
type alertLog struct {
	mu     sync.Mutex
	active map[string]bool // alertname/group → firing
	names  map[string]bool // alertnames that fired at least once
}

func (l *alertLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p notify.WebhookPayload
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active == nil {
		l.active, l.names = map[string]bool{}, map[string]bool{}
	}
	for _, a := range p.Alerts {
		name := a.Labels["alertname"]
		key := name + "\x00" + alertGroup(a.Labels)
		if a.Status == "firing" {
			l.active[key] = true
			l.names[name] = true
		} else {
			delete(l.active, key)
		}
	}
}

// alertGroup is the group value of an alert: its labels other than the
// rule's own (alertname, severity, tenant, category…) are the group.
func alertGroup(labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (l *alertLog) firing() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	count := map[string]int{}
	for key := range l.active {
		count[strings.SplitN(key, "\x00", 2)[0]]++
	}
	var out []string
	for name, n := range count {
		out = append(out, fmt.Sprintf("%s×%d", name, n))
	}
	sort.Strings(out)
	return out
}

func (l *alertLog) firedAll(names []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !slices.ContainsFunc(names, func(n string) bool { return !l.names[n] })
}

func (l *alertLog) fired() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(maps.Keys(l.names))
}
