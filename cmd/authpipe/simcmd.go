package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/authpipe/authpipe/internal/sim"
)

// `authpipe sim` serves the Auth0 and Segment simulators as a standalone
// process, with the demo's generated traffic (steady sign-ons and the
// scripted attacks of sim.World), so that `authpipe run` — in the compose
// demo profile, or by hand — works without any account.

// simSegmentKeep bounds the messages the Segment simulator keeps: past it
// the recorded messages are forgotten (the totals are kept), so a sim left
// running does not grow without bound.
const simSegmentKeep = 100_000

const simUsage = `Usage: authpipe sim [flags]

Serves the Auth0 and Segment simulators, with background traffic and
scripted attacks, so that authpipe run works without any account: point
AUTH0_DOMAIN and SEGMENT_ENDPOINT at them. With --stream-url it also
pushes every log to that URL as an Auth0 custom webhook Log Stream does
(authpipe's receiver: http://HOST:9465/auth0/logs, AUTHPIPE_STREAM_LISTEN).
`

func simCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	auth0Listen := fs.String("auth0-listen", ":8081", "address of the Auth0 simulator (AUTH0_DOMAIN=http://HOST:PORT)")
	segmentListen := fs.String("segment-listen", ":8082", "address of the Segment simulator (SEGMENT_ENDPOINT=http://HOST:PORT)")
	clientID := fs.String("client-id", "", "Auth0 client id to accept (default $AUTH0_CLIENT_ID)")
	clientSecret := fs.String("client-secret", "", "Auth0 client secret to accept (default $AUTH0_CLIENT_SECRET)")
	writeKey := fs.String("write-key", "", "Segment write key to accept (default $SEGMENT_WRITE_KEY)")
	rate := fs.Float64("rate", 20, "background auth events per second; attacks come on top, every "+sim.AttackCycle.String())
	seed := fs.Uint64("seed", 0, "traffic seed (0: random)")
	retention := fs.Duration("retention", sim.DefaultRetention, "how long the Auth0 simulator keeps logs (memory grows with rate × retention)")
	burst := fs.Int("auth0-burst", 50, "Auth0 rate-limit bucket size (0: unlimited)")
	perMinute := fs.Int("auth0-per-minute", 6000, "Auth0 rate-limit refill per minute")
	report := fs.Duration("report", 30*time.Second, "print a status line this often (0: never)")
	streamURL := fs.String("stream-url", "", "push every log to this URL as an Auth0 Log Stream (custom webhook) does; unset: no push")
	streamToken := fs.String("stream-token", "", "Authorization header of the pushes, verbatim (default $AUTH0_STREAM_TOKEN)")
	streamFormat := fs.String("stream-format", string(sim.StreamJSONLines), "content format of the pushes: JSONLINES, JSONARRAY or JSONOBJECT")
	streamDrop := fs.Float64("stream-drop", 0, "share of push deliveries dropped for good, 0 to 1 (the poller must find them)")
	if code, done := parseFlags(fs, simUsage, args, stdout); done {
		return code
	}
	orEnv := func(v *string, env string) {
		if *v == "" {
			*v = os.Getenv(env)
		}
	}
	orEnv(clientID, "AUTH0_CLIENT_ID")
	orEnv(clientSecret, "AUTH0_CLIENT_SECRET")
	orEnv(writeKey, "SEGMENT_WRITE_KEY")
	pushFlags := *streamDrop != 0 || *streamToken != ""
	orEnv(streamToken, "AUTH0_STREAM_TOKEN")
	var problems []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("takes no arguments (got %q)", fs.Args()))
	}
	if *clientID == "" || *clientSecret == "" || *writeKey == "" {
		problems = append(problems, "set the credentials to accept: --client-id, --client-secret and --write-key, or AUTH0_CLIENT_ID, AUTH0_CLIENT_SECRET and SEGMENT_WRITE_KEY")
	}
	if !(*rate > 0 && *rate <= 100000) {
		problems = append(problems, "--rate must be in (0, 100000]")
	}
	if *retention < time.Minute || *burst < 0 || *perMinute < 0 || *report < 0 {
		problems = append(problems, "--retention must be at least 1m; --auth0-burst, --auth0-per-minute and --report must not be negative")
	}
	var stream *sim.Stream
	if *streamURL != "" {
		var err error
		stream, err = sim.NewStream(sim.StreamOptions{URL: *streamURL, Authorization: *streamToken,
			Format: sim.StreamFormat(*streamFormat), DropRate: *streamDrop, Seed: *seed})
		if err != nil {
			problems = append(problems, "--stream-url, --stream-format or --stream-drop: "+err.Error())
		}
	} else if pushFlags {
		problems = append(problems, "--stream-token and --stream-drop need --stream-url")
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "authpipe sim:", p)
		}
		return 2
	}
	if *seed == 0 {
		*seed = rand.Uint64()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s := &simProcess{
		out:   stdout,
		world: sim.World{Seed: *seed, Start: time.Now().UTC().Truncate(time.Second), Rate: *rate},
		auth0: sim.NewAuth0(sim.Auth0Options{ClientID: *clientID, ClientSecret: *clientSecret,
			Retention: *retention, Burst: *burst, PerMinute: *perMinute}),
		segment: sim.NewSegment(sim.SegmentOptions{WriteKey: *writeKey}),
		report:  *report,
		stream:  stream,
	}
	if err := s.run(ctx, *auth0Listen, *segmentListen, *clientID); err != nil {
		fmt.Fprintln(stderr, "authpipe sim:", err)
		return 1
	}
	return 0
}

type simProcess struct {
	out     io.Writer
	world   sim.World
	auth0   *sim.Auth0
	segment *sim.Segment
	report  time.Duration
	stream  *sim.Stream // pushes every log; nil without --stream-url

	generated atomic.Int64
	mu        sync.Mutex
	forgotten sim.SegmentStats // totals of the messages forgotten at simSegmentKeep
}

// simStats is what GET /-/stats answers on either listener.
type simStats struct {
	Generated int64            `json:"generated"`
	Auth0     sim.Auth0Stats   `json:"auth0"`
	Segment   sim.SegmentStats `json:"segment"`
	Stream    *sim.StreamStats `json:"stream,omitempty"`
}

func (s *simProcess) stats() simStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg := s.segment.Stats()
	addSegmentStats(&seg, s.forgotten)
	st := simStats{Generated: s.generated.Load(), Auth0: s.auth0.Stats(), Segment: seg}
	if s.stream != nil {
		ss := s.stream.Stats()
		st.Stream = &ss
	}
	return st
}

// forgetSegment drops the Segment simulator's recorded messages once there
// are more than simSegmentKeep, keeping the totals.
func (s *simProcess) forgetSegment() {
	if s.segment.Count() <= simSegmentKeep {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	addSegmentStats(&s.forgotten, s.segment.Stats())
	s.segment.Reset()
}

// addSegmentStats adds the counts of src to dst.
func addSegmentStats(dst *sim.SegmentStats, src sim.SegmentStats) {
	dst.Requests += src.Requests
	dst.Batches += src.Batches
	dst.Accepted += src.Accepted
	dst.Duplicates += src.Duplicates
	dst.Dropped += src.Dropped
	if dst.Status == nil {
		dst.Status = map[int]int{}
	}
	for code, n := range src.Status {
		dst.Status[code] += n
	}
}

// handler serves h plus the sim's own /-/healthy and /-/stats.
func (s *simProcess) handler(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "authpipe sim is healthy")
	})
	mux.HandleFunc("GET /-/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.stats())
	})
	mux.Handle("/", h)
	return mux
}

func (s *simProcess) run(ctx context.Context, auth0Listen, segmentListen, clientID string) error {
	aln, err := net.Listen("tcp", auth0Listen)
	if err != nil {
		return fmt.Errorf("listen on --auth0-listen: %w", err)
	}
	sln, err := net.Listen("tcp", segmentListen)
	if err != nil {
		aln.Close()
		return fmt.Errorf("listen on --segment-listen: %w", err)
	}
	servers := []*http.Server{
		{Handler: s.handler(s.auth0), ReadHeaderTimeout: 5 * time.Second},
		{Handler: s.handler(s.segment), ReadHeaderTimeout: 5 * time.Second},
	}
	failed := make(chan error, 2)
	for i, ln := range []net.Listener{aln, sln} {
		go func() {
			if err := servers[i].Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed <- err
			}
		}()
	}

	fmt.Fprintf(s.out, "authpipe sim: Auth0 and Segment simulators\n")
	fmt.Fprintf(s.out, "  Auth0    http://%s   (AUTH0_DOMAIN; client id %s)\n", aln.Addr(), clientID)
	fmt.Fprintf(s.out, "  Segment  http://%s   (SEGMENT_ENDPOINT)\n", sln.Addr())
	fmt.Fprintf(s.out, "  traffic  %g events/s from %s; attacks every %s from +%s: brute force (and Auth0 blocking it), credential stuffing, password spray\n",
		s.world.Rate, s.world.Start.Format(time.RFC3339), sim.AttackCycle, sim.Attacks()[0].Offset)
	fmt.Fprintf(s.out, "  probes   /-/healthy and /-/stats on both; SIGTERM stops it\n")
	var pushDone chan struct{}
	if s.stream != nil {
		fmt.Fprintf(s.out, "  stream   every log pushed as an Auth0 Log Stream does\n")
		s.stream.Follow(s.auth0)
		pushDone = make(chan struct{})
		go func() {
			defer close(pushDone)
			_ = s.stream.Run(ctx)
		}()
	}

	runErr := s.generate(ctx, failed)
	if pushDone != nil {
		<-pushDone
	}

	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutCtx)
	}
	s.printStats("stopped")
	return runErr
}

// generate adds the world's events to the Auth0 simulator as their time
// comes until ctx ends or a server fails.
func (s *simProcess) generate(ctx context.Context, failed <-chan error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var reports <-chan time.Time
	if s.report > 0 {
		r := time.NewTicker(s.report)
		defer r.Stop()
		reports = r.C
	}
	cursor := s.world.Start
	for {
		now := time.Now()
		if batch := s.world.EventsBetween(cursor, now); len(batch) > 0 {
			s.auth0.Add(batch...)
			s.generated.Add(int64(len(batch)))
		}
		cursor = now
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("serve: %w", err)
		case <-reports:
			s.printStats("running")
			s.forgetSegment()
		case <-tick.C:
		}
	}
}

func (s *simProcess) printStats(state string) {
	st := s.stats()
	fmt.Fprintf(s.out, "authpipe sim %s: generated %d; Auth0 log requests %d (429: %d); Segment accepted %d (duplicates %d, 4xx/5xx answers %d)\n",
		state, st.Generated, st.Auth0.LogRequests, st.Auth0.Status[http.StatusTooManyRequests],
		st.Segment.Accepted, st.Segment.Duplicates, errorAnswers(st.Segment.Status))
	if st.Stream != nil {
		fmt.Fprintf(s.out, "authpipe sim %s: stream pushed %d logs in %d deliveries (%d requests, %d errored, %d logs dropped for good, %d pending)\n",
			state, st.Stream.Delivered, st.Stream.Deliveries, st.Stream.Requests, st.Stream.Errored, st.Stream.Dropped, st.Stream.Pending)
	}
}

func errorAnswers(status map[int]int) int {
	n := 0
	for code, c := range status {
		if code >= 400 {
			n += c
		}
	}
	return n
}
