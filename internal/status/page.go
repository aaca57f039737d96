package status

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/metrics"
)

// stageRoles says in a few words where each stage takes events from or to.
var stageRoles = map[string]string{
	metrics.StagePoll:    "from Auth0",
	metrics.StageBuffer:  "durable store",
	metrics.StageForward: "to Segment",
}

// pageView is what the template shows: every figure already formatted.
type pageView struct {
	Title     string
	Refresh   int
	Generated string
	GatherErr string
	Version   string
	Revision  string
	GoVersion string

	ReadyKnown, Ready       bool
	ReloadKnown, ReloadOK   bool
	RatesKnown              bool
	RateInterval            string
	Tenants                 []tenantView
	Rules                   []ruleView
	BreachedRules, AllRules int
	// RedisMemory (or BufferFiles, the embedded buffer's files) and
	// BytesPerEvent: Redis' used_memory and its bytes per retained event;
	// "" when unknown.
	RedisMemory, BufferFiles, BytesPerEvent string
}

type tenantView struct {
	Name      string
	Stages    []stageView
	Lag       string
	Retention string
	HasBar    bool
	Percent   string
	BarWidth  string
	LagClass  string
	Polled    string
	Acked     string
	Figures   []figureView
	DataLoss  *dataLossView
	Sources   *sourcesView
}

// sourcesView is the share of logs each source stored first.
type sourcesView struct {
	Stream                     bool // the Log Streams receiver is on
	StreamFirst, PollerFirst   string
	StreamShare, PollerShare   string
	Missed, LastEvent          string
	MissedNonZero, SharesKnown bool
}

type dataLossView struct {
	At, Found, From, Until string
}

type stageView struct {
	Name, Role                       string
	Received, Written, Acked, Failed string
	FailedNonZero                    bool
	Rate                             string
}

type figureView struct {
	Label, Help, Value string
	Bad                bool
}

type ruleView struct {
	Name, Value string
	Breached    bool
}

func newPageView(title string, now time.Time, s Summary, gatherErr error) pageView {
	v := pageView{
		Title:       title,
		Refresh:     refreshSeconds,
		Generated:   now.UTC().Format("2006-01-02 15:04:05 UTC"),
		Version:     s.Version,
		Revision:    s.Revision,
		GoVersion:   s.GoVersion,
		ReadyKnown:  s.ReadyKnown,
		Ready:       s.Ready,
		ReloadKnown: s.ReloadKnown,
		ReloadOK:    s.ReloadOK,
		RatesKnown:  s.RateInterval > 0,
		AllRules:    len(s.Rules),
	}
	if gatherErr != nil {
		v.GatherErr = gatherErr.Error()
	}
	if v.RatesKnown {
		v.RateInterval = formatSeconds(s.RateInterval.Seconds(), true)
	}
	switch {
	case s.RedisMemoryKnown:
		v.RedisMemory = fmt.Sprintf("%.1f MB", s.RedisMemoryBytes/(1<<20))
	case s.FileKnown:
		v.BufferFiles = fmt.Sprintf("%.1f MB", s.FileBytes/(1<<20))
	}
	if b, ok := s.BytesPerRetainedEvent(); ok {
		v.BytesPerEvent = fmt.Sprintf("%.0f", b)
	}
	for _, t := range s.Tenants {
		v.Tenants = append(v.Tenants, newTenantView(t, v.RatesKnown, now))
	}
	for _, r := range s.Rules {
		v.Rules = append(v.Rules, ruleView{Name: r.Name, Value: formatNumber(r.Value), Breached: r.Breached})
		if r.Breached {
			v.BreachedRules++
		}
	}
	return v
}

// newSourcesView shows which source stored each log first: the Log
// Stream (pushed) and the poller; nil when neither counter exists.
func newSourcesView(t Tenant, now time.Time) *sourcesView {
	v := &sourcesView{PollerFirst: formatNumber(t.PolledFirst), LastEvent: "never since start"}
	if st := t.Stream; st != nil {
		v.Stream = true
		v.StreamFirst = formatNumber(st.First)
		v.Missed, v.MissedNonZero = formatNumber(st.Missed), st.Missed > 0
		if !st.LastEvent.IsZero() {
			v.LastEvent = formatSeconds(max(now.Sub(st.LastEvent).Seconds(), 0), true) + " ago"
		}
	}
	if sf, pf, ok := t.FirstShares(); ok {
		v.SharesKnown = true
		v.StreamShare, v.PollerShare = fmt.Sprintf("%.1f%%", 100*sf), fmt.Sprintf("%.1f%%", 100*pf)
	}
	return v
}

func newTenantView(t Tenant, ratesKnown bool, now time.Time) tenantView {
	tv := tenantView{
		Name:   t.Name,
		Lag:    formatSeconds(t.CheckpointLagSeconds, false),
		Polled: formatNumber(t.Polled),
		Acked:  formatNumber(t.Acked),
		Figures: []figureView{
			{Label: "backlog", Help: "in the buffer, not yet acknowledged by the forwarder", Value: formatNumber(t.Backlog)},
			{Label: "pending", Help: "handed to the forwarder, waiting for Segment to confirm", Value: formatNumber(t.Pending)},
			{Label: "dead letters", Help: "given up on after retries; need a look", Value: formatNumber(t.DeadLetters), Bad: t.DeadLetters > 0},
			{Label: "gaps", Help: "times polling fell behind Auth0's retention and logs were lost", Value: formatNumber(t.Gaps), Bad: t.Gaps > 0},
			{Label: "entries buffered", Help: "in the buffer's stream, kept until every consumer has acknowledged them", Value: formatNumber(t.BufferEntries)},
			{Label: "log_ids remembered", Help: "the dedupe record: every event buffered within the retention", Value: formatNumber(t.Dedupe)},
		},
	}
	tv.Figures = append(tv.Figures, figureView{Label: "buffer data loss",
		Help:  "times the buffer was found to have lost data (recovered: groups recreated, lost window polled again)",
		Value: formatNumber(t.DataLosses), Bad: t.DataLosses > 0})
	if d := t.DataLoss; d != nil {
		v := &dataLossView{At: d.At.Format(timeLayout), Found: strings.Join(d.Found, ", ")}
		if !d.RepollUntil.IsZero() {
			v.From, v.Until = "the start of Auth0's retention", d.RepollUntil.Format(timeLayout)
			if !d.RepollFrom.IsZero() {
				v.From = d.RepollFrom.Format(timeLayout)
			}
		}
		tv.DataLoss = v
	}
	tv.Sources = newSourcesView(t, now)
	if tv.Name == "" {
		tv.Name = "(no tenant label)"
	}
	if pct, ok := t.LagPercent(); ok {
		tv.HasBar = true
		tv.Retention = formatSeconds(t.RetentionSeconds, false)
		tv.Percent = strconv.FormatFloat(pct, 'f', 1, 64) + "%"
		tv.BarWidth = strconv.FormatFloat(math.Max(0, math.Min(pct, 100)), 'f', 1, 64)
		switch {
		case pct >= 100:
			tv.LagClass = "crit"
		case pct > 50:
			tv.LagClass = "warn"
		default:
			tv.LagClass = "ok"
		}
	}
	for _, st := range t.Stages {
		sv := stageView{
			Name:          st.Name,
			Role:          stageRoles[st.Name],
			Received:      formatNumber(st.Received),
			Written:       formatNumber(st.Written),
			Acked:         formatNumber(st.Acked),
			Failed:        formatNumber(st.Failed),
			FailedNonZero: st.Failed > 0,
			Rate:          "–",
		}
		if ratesKnown {
			sv.Rate = strconv.FormatFloat(st.RatePerSec, 'f', 1, 64) + "/s"
		}
		tv.Stages = append(tv.Stages, sv)
	}
	return tv
}

// timeLayout is how the page writes a point in time.
const timeLayout = "2006-01-02 15:04:05 UTC"

// formatNumber writes a whole number with thousands separators
// (12,345), anything else with up to four significant digits.
func formatNumber(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || math.Abs(f) >= 1e15 {
		return strconv.FormatFloat(f, 'g', 4, 64)
	}
	digits := strconv.FormatInt(int64(math.Abs(f)), 10)
	var b strings.Builder
	if f < 0 {
		b.WriteByte('-')
	}
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatSeconds writes a duration in its two largest units ("6d 0h",
// "3m 12s"); fractional seconds only with fine, for short intervals.
func formatSeconds(secs float64, fine bool) string {
	if math.IsNaN(secs) || math.IsInf(secs, 0) {
		return strconv.FormatFloat(secs, 'g', -1, 64)
	}
	if fine && secs < 60 {
		return strconv.FormatFloat(secs, 'f', 1, 64) + "s"
	}
	neg := secs < 0
	n := int64(math.Round(math.Abs(secs)))
	units := []struct {
		name string
		size int64
	}{{"d", 86400}, {"h", 3600}, {"m", 60}, {"s", 1}}
	var parts []string
	for i, u := range units {
		if n >= u.size || u.size == 1 {
			parts = append(parts, fmt.Sprintf("%d%s", n/u.size, u.name))
			if u.size > 1 {
				parts = append(parts, fmt.Sprintf("%d%s", n%u.size/units[i+1].size, units[i+1].name))
			}
			break
		}
	}
	out := strings.Join(parts, " ")
	if neg {
		out = "-" + out
	}
	return out
}

var pageTemplate = template.Must(template.New("status").Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff; margin: 0 auto; max-width: 60rem; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 .4rem; }
.meta, .note, .help, th small { color: #59636e; }
.note { font-size: .85rem; }
.pill { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-weight: 600; }
.good { background: #dafbe1; color: #116329; }
.bad { background: #ffebe9; color: #a40e26; }
.unknown { background: #eaeef2; color: #424a53; }
.error { background: #ffebe9; color: #a40e26; border: 1px solid #ff8182; padding: .5rem .75rem; border-radius: .375rem; }
table { border-collapse: collapse; width: 100%; margin: .25rem 0 .75rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { font-weight: 600; background: #f6f8fa; }
th small { display: block; font-weight: 400; font-size: .75rem; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.warn { color: #9a6700; font-weight: 600; }
td.red, dd.red { color: #a40e26; font-weight: 700; }
tr.breached td { background: #ffebe9; color: #a40e26; font-weight: 600; }
.bar { height: .8rem; background: #eaeef2; border-radius: .4rem; overflow: hidden; max-width: 30rem; }
.bar span { display: block; height: 100%; }
.bar .ok { background: #2da44e; }
.bar .warn { background: #d4a72c; }
.bar .crit { background: #cf222e; }
.lag.warn strong { color: #9a6700; }
.lag.crit strong { color: #a40e26; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(12rem, 1fr)); gap: .5rem; margin: .75rem 0; }
dl.figures div { border: 1px solid #d8dee4; border-radius: .375rem; padding: .4rem .6rem; }
dl.figures dt { font-weight: 600; }
dl.figures dd { margin: 0; font-size: 1.2rem; font-variant-numeric: tabular-nums; }
dl.legend dt { font-weight: 600; margin-top: .4rem; }
dl.legend dd { margin-left: 1.25rem; }
</style>
</head>
<body>
<header>
<h1>{{.Title}}</h1>
<p class="meta">
{{- if .Version}}version <strong>{{.Version}}</strong>{{if .Revision}} (revision {{.Revision}}){{end}}{{if .GoVersion}}, {{.GoVersion}}{{end}} · {{end -}}
{{if not .ReadyKnown}}<span class="pill unknown">readiness unknown</span>{{else if .Ready}}<span class="pill good">ready</span>{{else}}<span class="pill bad">not ready</span>{{end}}
</p>
<p class="note">This page reloads itself every {{.Refresh}} seconds; it shows the figures of <a href="metrics">/metrics</a> as of {{.Generated}}.
{{- if .RatesKnown}} Rates are measured over the last {{.RateInterval}}.{{else}} Rates appear from the next reload.{{end}}</p>
{{- if .GatherErr}}
<p class="error" role="alert">Some metrics could not be read, so figures may be missing: {{.GatherErr}}</p>
{{- end}}
</header>

<main>
{{- range .Tenants}}
<section>
<h2>Tenant {{.Name}}</h2>
<table>
<thead>
<tr>
<th>stage</th>
<th class="num">received<small>came into the stage</small></th>
<th class="num">written<small>passed on to the next step</small></th>
<th class="num">acked<small>confirmed by the next step</small></th>
<th class="num">failed<small>could not be passed on</small></th>
<th class="num">rate<small>acked per second</small></th>
</tr>
</thead>
<tbody>
{{- range .Stages}}
<tr>
<td><strong>{{.Name}}</strong>{{if .Role}} <span class="help">({{.Role}})</span>{{end}}</td>
<td class="num">{{.Received}}</td>
<td class="num">{{.Written}}</td>
<td class="num">{{.Acked}}</td>
<td class="num{{if .FailedNonZero}} warn{{end}}">{{.Failed}}</td>
<td class="num">{{.Rate}}</td>
</tr>
{{- else}}
<tr><td colspan="6" class="help">No stage counters yet.</td></tr>
{{- end}}
</tbody>
</table>
<p class="help">Polled from Auth0 in total: {{.Polled}} · accepted by Segment in total: {{.Acked}}</p>
{{- with .Sources}}
<h3>Sources</h3>
{{- if .Stream}}
<p>Stored first by the <strong>Log Stream</strong> (pushed): {{.StreamFirst}}{{if .SharesKnown}} ({{.StreamShare}}){{end}} · by the <strong>poller</strong>: {{.PollerFirst}}{{if .SharesKnown}} ({{.PollerShare}}){{end}}.
Missed by the stream: <span{{if .MissedNonZero}} class="warn"{{end}}>{{.Missed}}</span> · last delivery: {{.LastEvent}}.</p>
<p class="help">The stream brings logs within seconds; the poller is the proof of completeness and stores whatever the stream did not deliver (counted as missed when it is dated after the stream's first delivery and the stream did not bring it within the grace).</p>
{{- else}}
<p>Stored first by the <strong>poller</strong>: {{.PollerFirst}}. The Log Streams receiver is off (AUTHPIPE_STREAM_LISTEN).</p>
{{- end}}
{{- end}}

<h3>Checkpoint lag</h3>
{{- if .HasBar}}
<div class="lag {{.LagClass}}">
<p><strong>{{.Lag}}</strong> behind, of Auth0's {{.Retention}} log retention: <strong>{{.Percent}}</strong>
{{- if eq .LagClass "crit"}} — past retention, logs may have been lost{{else if eq .LagClass "warn"}} — more than half the retention, catch up before Auth0 deletes logs{{end}}</p>
<div class="bar" role="img" aria-label="checkpoint lag {{.Percent}} of retention"><span class="{{.LagClass}}" style="width: {{.BarWidth}}%"></span></div>
</div>
{{- else}}
<p><strong>{{.Lag}}</strong> behind (retention not configured for this page).</p>
{{- end}}
<p class="help">How old the newest point is up to which every Auth0 log is buffered. Auth0 deletes logs after its retention, so this must stay well below it.</p>

<dl class="figures">
{{- range .Figures}}
<div><dt>{{.Label}}</dt><dd{{if .Bad}} class="red"{{end}}>{{.Value}}</dd><dd class="help note">{{.Help}}</dd></div>
{{- end}}
</dl>
{{- with .DataLoss}}
<p class="error" role="alert">The buffer lost data at {{.At}}: found missing or gone backwards: {{.Found}}.
{{- if .Until}} Polled again from Auth0: from {{.From}} to {{.Until}}, and on from there.{{else}} Nothing had to be polled again (the stream still held every event); consumer groups were recreated.{{end}}
See the runbook, AuthpipeBufferDataLoss.</p>
{{- end}}
</section>
{{- else}}
<section><h2>Tenants</h2><p class="help">No tenant metrics yet.</p></section>
{{- end}}

{{- if .RedisMemory}}
<section>
<h2>Redis memory</h2>
<p><strong>{{.RedisMemory}}</strong> used{{if .BytesPerEvent}} · <strong>{{.BytesPerEvent}}</strong> bytes per retained event{{end}}</p>
<p class="help">Redis' used_memory, divided by the log_ids the dedupe record keeps for the retention (the events retained). Delivered events leave the stream; what stays is the backlog and a compact record of the log_ids. See CONFIGURATION.md, "Sizing Redis".</p>
</section>
{{- else if .BufferFiles}}
<section>
<h2>Buffer files</h2>
<p><strong>{{.BufferFiles}}</strong> on disk{{if .BytesPerEvent}} · <strong>{{.BytesPerEvent}}</strong> bytes per retained event{{end}}</p>
<p class="help">The embedded buffer's files, divided by the log_ids the dedupe record keeps for the retention (the events retained). Delivered events leave the file, and the file is compacted once the backlog has drained. See CONFIGURATION.md, "Sizing Redis".</p>
</section>
{{- end}}

<section>
<h2>Threshold rules</h2>
{{- if .ReloadKnown}}
<p>{{if .ReloadOK}}<span class="pill good">last reload ok</span>{{else}}<span class="pill bad">last reload failed</span> the previous rules keep running; fix the rule files and reload.{{end}}</p>
{{- end}}
{{- if .Rules}}
<p class="help">{{.BreachedRules}} of {{.AllRules}} rules breached at their last check.</p>
<table>
<thead><tr><th>rule</th><th class="num">value<small>highest among its groups at the last check</small></th><th>state</th></tr></thead>
<tbody>
{{- range .Rules}}
<tr{{if .Breached}} class="breached"{{end}}><td>{{.Name}}</td><td class="num">{{.Value}}</td><td>{{if .Breached}}BREACHED{{else}}ok{{end}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p class="help">No threshold rules loaded.</p>
{{- end}}
</section>

<section>
<h2>How to read this page</h2>
<dl class="legend">
<dt>poll (from Auth0)</dt><dd>received: events in pages fetched from Auth0 · written and acked: events committed to the buffer together with the checkpoint · failed: events in pages that could not be decoded or buffered (fetched again).</dd>
<dt>buffer (durable store)</dt><dd>received: events offered to the buffer · written: events newly stored (duplicates are not) · acked: events the forwarder finished · failed: events moved to the dead-letter stream.</dd>
<dt>forward (to Segment)</dt><dd>received: entries read from the buffer, redeliveries included · written: messages handed to the Segment client · acked: messages Segment accepted · failed: each failed attempt, retried or not.</dd>
<dt>rate</dt><dd>How many events per second the stage's "acked" count grew between the previous reload and this one.</dd>
</dl>
</section>
</main>
</body>
</html>
`
