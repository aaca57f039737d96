package logrepeat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

type line map[string]any

func lines(t *testing.T, buf *bytes.Buffer) []line {
	t.Helper()
	var out []line
	for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if s == "" {
			continue
		}
		var l line
		require.NoError(t, json.Unmarshal([]byte(s), &l), s)
		out = append(out, l)
	}
	buf.Reset()
	return out
}

func newTest() (*Summarizer, *clockwork.FakeClock, *bytes.Buffer) {
	var buf bytes.Buffer
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	return New(log, clock, time.Minute), clock, &buf
}

// TestSummarizer: an outage of two and a half minutes with a retry every
// second logs the first failure, one summary per minute with the count of
// the failures since the line before, and one recovered line.
func TestSummarizer(t *testing.T) {
	ctx := context.Background()
	s, clock, buf := newTest()
	errDown := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

	s.OK(ctx, "read buffer") // nothing failing: silent
	require.Empty(t, lines(t, buf))

	s.Fail(ctx, "read buffer", slog.LevelWarn, "read buffer", errDown, "group", "forward")
	got := lines(t, buf)
	require.Equal(t, []line{{"level": "WARN", "msg": "read buffer", "group": "forward", "err": errDown.Error()}}, got)

	// 59 more failures within the first minute: counted, not logged.
	for range 59 {
		clock.Advance(time.Second)
		s.Fail(ctx, "read buffer", slog.LevelWarn, "read buffer", errDown, "group", "forward")
	}
	require.Empty(t, lines(t, buf))
	require.True(t, s.Failing("read buffer"))

	// The 61st, a minute after the first line: one summary of the 60 repeats.
	clock.Advance(time.Second)
	s.Fail(ctx, "read buffer", slog.LevelWarn, "read buffer", errors.New("i/o timeout"), "group", "forward")
	require.Equal(t, []line{{"level": "WARN", "msg": "read buffer: still failing", "group": "forward",
		"err": "i/o timeout", "failures": float64(60), "failing_for": "1m0s"}}, lines(t, buf))

	// Another minute and a half: one more summary, after a full minute.
	for range 90 {
		clock.Advance(time.Second)
		s.Fail(ctx, "read buffer", slog.LevelWarn, "read buffer", errDown, "group", "forward")
	}
	got = lines(t, buf)
	require.Len(t, got, 1)
	require.Equal(t, "read buffer: still failing", got[0]["msg"])
	require.Equal(t, float64(60), got[0]["failures"])
	require.Equal(t, "2m0s", got[0]["failing_for"])

	// Recovery: one line with the whole episode, then silence.
	clock.Advance(time.Second)
	s.OK(ctx, "read buffer")
	require.Equal(t, []line{{"level": "INFO", "msg": "read buffer: recovered", "failures": float64(151), "failing_for": "2m31s"}}, lines(t, buf))
	s.OK(ctx, "read buffer")
	require.Empty(t, lines(t, buf))
	require.False(t, s.Failing("read buffer"))

	// A new episode starts over with a full first line.
	s.Fail(ctx, "read buffer", slog.LevelWarn, "read buffer", errDown, "group", "forward")
	require.Equal(t, "read buffer", lines(t, buf)[0]["msg"])
}

// TestSummarizerKeys: actions fail and recover independently; OKAll ends
// every episode; Clear ends one without a line.
func TestSummarizerKeys(t *testing.T) {
	ctx := context.Background()
	s, clock, buf := newTest()
	err := errors.New("boom")
	s.Fail(ctx, "check rule A", slog.LevelWarn, "check rule", err, "rule", "A")
	s.Fail(ctx, "check rule B", slog.LevelWarn, "check rule", err, "rule", "B")
	s.Fail(ctx, "check rule A", slog.LevelWarn, "check rule", err, "rule", "A")
	got := lines(t, buf)
	require.Len(t, got, 2, "each action's first failure is logged")
	require.Equal(t, "A", got[0]["rule"])
	require.Equal(t, "B", got[1]["rule"])

	clock.Advance(10 * time.Second)
	s.OK(ctx, "check rule B")
	require.Equal(t, []line{{"level": "INFO", "msg": "check rule: recovered", "failures": float64(1), "failing_for": "10s"}}, lines(t, buf))
	require.True(t, s.Failing("check rule A"))

	s.Fail(ctx, "x", slog.LevelError, "x", err)
	lines(t, buf)
	s.OKAll(ctx)
	got = lines(t, buf)
	require.Len(t, got, 2)
	for _, l := range got {
		require.Equal(t, "INFO", l["level"])
	}
	require.False(t, s.Failing("check rule A"))
	require.False(t, s.Failing("x"))

	s.Fail(ctx, "ping", slog.LevelWarn, "ping", err)
	lines(t, buf)
	clock.Advance(3 * time.Second)
	ep, ok := s.Clear("ping")
	require.True(t, ok)
	require.Equal(t, Episode{Failures: 1, Duration: 3 * time.Second}, ep)
	require.Empty(t, lines(t, buf), "Clear logs nothing")
	_, ok = s.Clear("ping")
	require.False(t, ok)
}

// TestSummarizerAttrsNotAliased: the caller's attribute slice is never
// appended to (a shared backing array would mix two goroutines' lines).
func TestSummarizerAttrsNotAliased(t *testing.T) {
	s, _, _ := newTest()
	attrs := make([]any, 2, 10)
	attrs[0], attrs[1] = "k", "v"
	s.Fail(context.Background(), "a", slog.LevelWarn, "a", errors.New("e"), attrs...)
	require.Equal(t, []any{"k", "v"}, attrs)
	require.Equal(t, []any{"k", "v", nil, nil}, attrs[:4], "nothing written past len")
}

func TestSummarizerConcurrent(t *testing.T) {
	s, clock, buf := newTest()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				s.Fail(context.Background(), "k", slog.LevelWarn, "k", errors.New("e"), "i", i)
				clock.Advance(time.Millisecond)
				s.OK(context.Background(), "other")
			}
		}()
	}
	wg.Wait()
	clock.Advance(time.Minute)
	s.OK(context.Background(), "k")
	got := lines(t, buf)
	require.Equal(t, "k: recovered", got[len(got)-1]["msg"])
	total := 0
	for _, l := range got[1 : len(got)-1] {
		total += int(l["failures"].(float64))
	}
	require.Equal(t, float64(800), got[len(got)-1]["failures"], "every failure is in the episode")
	require.LessOrEqual(t, total, 799, "summaries count only repeats")
}

// OKAll reports success of every failing action (the component reached the
// service they all depend on), logging each one's recovered line.
func (s *Summarizer) OKAll(ctx context.Context) {
	if s.failing.Load() == 0 {
		return
	}
	s.mu.Lock()
	keys := make([]string, 0, len(s.eps))
	for k := range s.eps {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		s.OK(ctx, k)
	}
}
