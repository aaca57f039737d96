package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of issue 8 (2-core machine).
const (
	TargetRedisRate = 50_000      // events/s end to end with Redis
	TargetBoltRate  = 20_000      // events/s end to end with the embedded buffer
	TargetPeakRSS   = 150 << 20   // bytes, whatever the backlog
	TargetP99Slack  = time.Second // p99 ≤ poll interval + this
	// TargetRedisBytesPerEvent: Redis memory (or the embedded buffer's file) left per delivered event
	// once trimmed (issue 16).
	TargetRedisBytesPerEvent = 100
	fullBatchShare           = 0.95 // "full batches": this share of catch-up batches full
)

// Check is one target and whether the run met it.
type Check struct {
	What   string
	Target string
	Got    string
	OK     bool
}

// Checks compares the report with the targets.
func (r *Report) Checks() []Check {
	var out []Check
	for _, b := range r.Backends {
		want := float64(TargetRedisRate)
		if b.Backend == "bolt" {
			want = TargetBoltRate
		}
		out = append(out, Check{
			What: b.Backend + ": end to end", Target: fmt.Sprintf("≥ %s events/s", thousands(want)),
			Got: thousands(b.CatchUp.Rate()) + " events/s", OK: b.CatchUp.Rate() >= want,
		})
		limit := b.Steady.PollInterval + TargetP99Slack
		p99 := b.Steady.Percentile(0.99)
		out = append(out, Check{
			What:   b.Backend + ": p99 latency at " + thousands(float64(b.Steady.Rate)) + " events/s",
			Target: "≤ " + limit.String() + " (poll interval + 1s)",
			Got:    p99.Round(time.Millisecond).String(), OK: p99 <= limit && b.Steady.Missing == 0,
		})
		peak := max(b.CatchUp.PeakRSS, b.Steady.PeakRSS)
		out = append(out, Check{
			What: b.Backend + ": peak RSS", Target: "< 150 MB",
			Got: mb(peak), OK: peak < TargetPeakRSS,
		})
		what := "redis: memory per delivered event after the catch-up, trimmed"
		if b.Backend == "bolt" {
			what = "bolt: file bytes per delivered event after the catch-up, trimmed and compacted"
		}
		per := b.CatchUp.BytesPerEvent(b.Backend)
		out = append(out, Check{
			What: what, Target: fmt.Sprintf("≤ %d bytes", TargetRedisBytesPerEvent),
			Got: fmt.Sprintf("%.0f bytes", per), OK: per <= TargetRedisBytesPerEvent && b.CatchUp.StreamLeft == 0,
		})
		full, mean := fullShare(b.CatchUp.Batches, b.CatchUp.BatchSize)
		out = append(out, Check{
			What:   b.Backend + ": full Segment batches in catch-up",
			Target: fmt.Sprintf("≥ %.0f%% of batches hold %d", fullBatchShare*100, b.CatchUp.BatchSize),
			Got:    fmt.Sprintf("%.1f%% (mean %.1f)", full*100, mean), OK: full >= fullBatchShare,
		})
	}
	return out
}

// fullShare returns the share of batches of size n and the mean size.
func fullShare(sizes []int, n int) (share, mean float64) {
	if len(sizes) == 0 {
		return 0, 0
	}
	full, sum := 0, 0
	for _, s := range sizes {
		sum += s
		if s >= n {
			full++
		}
	}
	return float64(full) / float64(len(sizes)), float64(sum) / float64(len(sizes))
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	o := r.Options
	m := r.Machine
	fmt.Fprintf(w, "authpipe end-to-end benchmark\n")
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s RAM, %s", m.CPUs, m.CPUModel, fmt.Sprintf("%.1f GiB", float64(m.MemTotal)/(1<<30)), m.GoVersion)
	if m.Redis != "" {
		fmt.Fprintf(w, ", redis-server %s", m.Redis)
	}
	fmt.Fprintf(w, "\nrun: catch-up of %s events; steady %s events/s for %s; AUTH0_POLL_INTERVAL=%s",
		thousands(float64(o.Events)), thousands(float64(o.Rate)), o.SteadyFor, o.PollInterval)
	if len(o.ExtraEnv) > 0 {
		fmt.Fprintf(w, "; %s", strings.Join(o.ExtraEnv, " "))
	}
	fmt.Fprintf(w, "; took %s\n\n", r.Took.Round(time.Second))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, f func(b BackendReport) string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, b := range r.Backends {
			fmt.Fprintf(tw, "%s\t", f(b))
		}
		fmt.Fprintln(tw)
	}
	perM := func(d time.Duration, n int) string {
		if n == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", d.Seconds()*1e6/float64(n))
	}
	perK := func(n, events int) string { return fmt.Sprintf("%.2f", float64(n)*1000/float64(max(events, 1))) }
	row("", func(b BackendReport) string { return b.Backend })
	row("CATCH-UP (all events waiting at start)", func(BackendReport) string { return "" })
	row("end to end, events/s", func(b BackendReport) string { return thousands(b.CatchUp.Rate()) })
	row("  time to deliver all", func(b BackendReport) string { return b.CatchUp.Elapsed.Round(10 * time.Millisecond).String() })
	row("  poll + buffer append, events/s (stage done)", func(b BackendReport) string {
		return thousands(rate(b.CatchUp.Events, b.CatchUp.PolledIn))
	})
	row("  forward, events/s (first to last accepted)", func(b BackendReport) string {
		return thousands(rate(b.CatchUp.Events, b.CatchUp.Elapsed-b.CatchUp.FirstIn))
	})
	row("  peak backlog in the buffer (sampled)", func(b BackendReport) string { return thousands(float64(b.CatchUp.PeakBacklog)) })
	row("  first event in Segment after", func(b BackendReport) string { return b.CatchUp.FirstIn.Round(time.Millisecond).String() })
	row("worker peak RSS (VmHWM)", func(b BackendReport) string { return mb(b.CatchUp.PeakRSS) })
	row("  anonymous / file-backed (peak sampled)", func(b BackendReport) string {
		return mb(b.CatchUp.PeakAnon) + " / " + mb(b.CatchUp.PeakFile)
	})
	row("worker CPU s per million events", func(b BackendReport) string { return perM(b.CatchUp.CPU, b.CatchUp.Events) })
	row("redis-server CPU s per million events", func(b BackendReport) string {
		if b.Backend != "redis" {
			return "-"
		}
		return perM(b.CatchUp.RedisCPU, b.CatchUp.Events)
	})
	row("Segment requests per 1000 events", func(b BackendReport) string { return perK(b.CatchUp.Requests, b.CatchUp.Events) })
	row("Segment batches full / mean size", func(b BackendReport) string {
		share, mean := fullShare(b.CatchUp.Batches, b.CatchUp.BatchSize)
		return fmt.Sprintf("%.1f%% of %d / %.1f", share*100, len(b.CatchUp.Batches), mean)
	})
	row("after the catch-up, once trimmed: trim took", func(b BackendReport) string {
		return b.CatchUp.TrimmedIn.Round(100 * time.Millisecond).String()
	})
	row("  entries left in the stream / log_ids remembered", func(b BackendReport) string {
		return thousands(float64(b.CatchUp.StreamLeft)) + " / " + thousands(float64(b.CatchUp.DedupeEntries))
	})
	row("  Redis used_memory (growth) / buffer file size", func(b BackendReport) string {
		if b.Backend == "bolt" {
			return fmt.Sprintf("%s (peak %s, %d compactions)", mb(b.CatchUp.FileSize), mb(b.CatchUp.FilePeak), b.CatchUp.Compactions)
		}
		return mb(b.CatchUp.RedisUsed) + " (" + mb(b.CatchUp.RedisUsed-b.CatchUp.RedisBaseline) + ")"
	})
	row("  bytes per delivered event", func(b BackendReport) string { return fmt.Sprintf("%.0f", b.CatchUp.BytesPerEvent(b.Backend)) })
	row("", func(BackendReport) string { return "" })
	row(fmt.Sprintf("STEADY (%s events/s for %s)", thousands(float64(o.Rate)), o.SteadyFor), func(BackendReport) string { return "" })
	row("latency p50 (available in Auth0 → accepted by Segment)", func(b BackendReport) string {
		return b.Steady.Percentile(0.5).Round(time.Millisecond).String()
	})
	row("latency p99", func(b BackendReport) string { return b.Steady.Percentile(0.99).Round(time.Millisecond).String() })
	row("latency max", func(b BackendReport) string { return b.Steady.Percentile(1).Round(time.Millisecond).String() })
	row("events not delivered", func(b BackendReport) string { return fmt.Sprint(b.Steady.Missing) })
	row("worker peak RSS (VmHWM)", func(b BackendReport) string { return mb(b.Steady.PeakRSS) })
	row("worker CPU s per million events", func(b BackendReport) string { return perM(b.Steady.CPU, b.Steady.Events) })
	row("Segment requests per 1000 events", func(b BackendReport) string { return perK(b.Steady.Requests, b.Steady.Events) })
	tw.Flush()

	if p := r.Push; p != nil {
		fmt.Fprintf(w, "\nLOG STREAMS PUSH (redis; the receiver, AUTHPIPE_STREAM_LISTEN)\n")
		fmt.Fprintf(w, "  accepted (answered 200)  %s events/s: %s logs in requests of %d by %d pushers in %s (%d retried)\n",
			thousands(p.AcceptedRate()), thousands(float64(p.Events)), p.BatchSize, p.Concurrency, p.Elapsed.Round(10*time.Millisecond), p.Retries)
		fmt.Fprintf(w, "  push → Segment at %s events/s for %s  p50 %s  p99 %s  max %s  (not delivered %d)\n",
			thousands(float64(p.Rate)), p.For, p.Percentile(0.5).Round(time.Millisecond), p.Percentile(0.99).Round(time.Millisecond),
			p.Percentile(1).Round(time.Millisecond), p.Missing)
	}
	if r.Ceiling.Events > 0 {
		fmt.Fprintf(w, "\nREDIS CEILING (same run, same payloads): pipelined XADD, %d per round trip, one connection: %s events/s\n",
			r.Ceiling.Pipeline, thousands(r.Ceiling.Rate()))
		for _, b := range r.Backends {
			fmt.Fprintf(w, "  authpipe %s end to end = %.1f%% of it\n", b.Backend, 100*b.CatchUp.Rate()/r.Ceiling.Rate())
		}
	}
	r.printBudget(w)
	if len(r.Stages) > 0 {
		fmt.Fprintf(w, "\nSTAGES ALONE (real packages in the bench process, beside the simulators)\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, s := range r.Stages {
			name := s.Name
			if s.Backend != "" {
				name = s.Backend + " " + name
			}
			fmt.Fprintf(tw, "  %s\t%s events/s\t%s events in %s\t%s\n", name, thousands(s.Rate()),
				thousands(float64(s.Events)), s.Elapsed.Round(time.Millisecond), s.Note)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nbench process peak RSS (simulators, not authpipe): %s\n", mb(r.SimPeakRSS))

	fmt.Fprintf(w, "\nTARGETS\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks() {
		verdict := "met"
		if !c.OK {
			verdict = "MISSED"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.What, c.Target, c.Got, verdict)
	}
	tw.Flush()
}

// printBudget accounts for the machine's CPU per event in the catch-up:
// what the worker, redis-server and the simulators each spent, what rate
// that allows when both CPUs are busy, and the part of it fixed by the
// parts authpipe does not control.
func (r *Report) printBudget(w io.Writer) {
	if len(r.Backends) == 0 {
		return
	}
	cpus := max(r.Machine.CPUs, 1)
	us := func(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(max(n, 1)) }
	fmt.Fprintf(w, "\nCPU PER EVENT IN THE CATCH-UP (µs; %d CPUs give %s µs per second)\n", cpus, thousands(float64(cpus)*1e6))
	for _, b := range r.Backends {
		c := b.CatchUp
		worker, redisCPU, sims := us(c.CPU, c.Events), us(c.RedisCPU, c.Events), us(c.SimCPU, c.Events)
		total := worker + redisCPU + sims
		parts := fmt.Sprintf("worker %.1f", worker)
		if b.Backend == "redis" {
			parts += fmt.Sprintf(" + redis-server %.1f", redisCPU)
		}
		fmt.Fprintf(w, "  %s: %s + simulators %.1f = %.1f µs → at most %s events/s with every CPU busy (measured %s)\n",
			b.Backend, parts, sims, total, thousands(float64(cpus)*1e6/total), thousands(c.Rate()))
	}
	fmt.Fprintf(w, "  %s events/s on %d CPUs leaves %.0f µs per event for all of it.\n",
		thousands(TargetRedisRate), cpus, float64(cpus)*1e6/TargetRedisRate)
	var fixed []string
	for _, s := range r.Stages {
		if s.Name == stageAnalyticsEncoding && s.Events > 0 {
			fixed = append(fixed, fmt.Sprintf("analytics-go's JSON encoding %.1f", us(s.Elapsed, s.Events)))
		}
	}
	if r.Ceiling.Events > 0 && r.Ceiling.RedisCPU > 0 {
		fixed = append(fixed, fmt.Sprintf("Redis writing the entries alone (ceiling run) %.1f", us(r.Ceiling.RedisCPU, r.Ceiling.Events)))
	}
	c := r.Backends[0].CatchUp
	fixed = append(fixed, fmt.Sprintf("simulators %.1f", us(c.SimCPU, c.Events)))
	fmt.Fprintf(w, "  Not authpipe's to remove (µs per event): %s.\n", strings.Join(fixed, "; "))
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

// thousands formats a rate with thousands separators.
func thousands(f float64) string {
	n := int64(f + 0.5)
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
