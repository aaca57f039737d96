package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
)

// goRedisLogger carries go-redis' own log lines (failed dials, pool and
// connection-handoff trouble) into slog, so that they are JSON like every
// other line authpipe prints, instead of go-redis' plain-text default
// ("redis: 2025/01/02 … pool.go:770: …") on stderr.
//
// go-redis has one logger per process (redis.SetLogger), shared by every
// client, not one per client: main installs this adapter once, before any
// command runs. It writes to slog's default logger, which `run` and
// `backfill` set to their configured logger (format, level) as soon as they
// have built it; the lines carry component=go-redis and the library's text
// under "detail", with the credentials of any URL in it removed.
type goRedisLogger struct{}

// urlCredentials matches the user:password@ part of a URL.
var urlCredentials = regexp.MustCompile(`://[^/@\s]*@`)

// Printf implements go-redis' internal.Logging. go-redis logs only
// problems, so every line is a warning.
func (goRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	detail := urlCredentials.ReplaceAllString(fmt.Sprintf(format, v...), "://<redacted>@")
	slog.Default().LogAttrs(ctx, slog.LevelWarn, "redis client library", slog.String("component", "go-redis"), slog.String("detail", detail))
}
