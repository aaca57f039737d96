package forward

import (
	"context"
	"errors"
	"log/slog"
	"strings"
)

// clientLogger is the analytics.Logger given to analytics-go. analytics-go
// passes whole messages (user ids, e-mails, IPs) and response bodies as
// format arguments, so this logger never formats: it logs the constant
// format string, the integer arguments (counts, status codes) and the error
// arguments, and drops everything else.
type clientLogger struct {
	log *slog.Logger
}

func (l clientLogger) Logf(format string, args ...any) {
	l.emit(slog.LevelDebug, format, args)
}

// Errorf is logged as a warning: every failure analytics-go reports reaches
// the forwarder's Failure callback, which retries or dead-letters it and
// logs what is lost, if anything. Failed attempts ("sending request") are
// logged by the transport already, so analytics-go's copy is debug.
func (l clientLogger) Errorf(format string, args ...any) {
	level := slog.LevelWarn
	if strings.HasPrefix(format, "sending request") {
		level = slog.LevelDebug
	}
	l.emit(level, format, args)
}

func (l clientLogger) emit(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	attrs := []any{slog.String("format", format)}
	var errs []error
	var ints []int
	for _, a := range args {
		switch v := a.(type) {
		case error:
			errs = append(errs, v)
		case int:
			ints = append(ints, v)
		}
	}
	if len(ints) > 0 {
		attrs = append(attrs, slog.Any("ints", ints))
	}
	if len(errs) > 0 {
		attrs = append(attrs, slog.Any("err", errors.Join(errs...)))
	}
	l.log.Log(ctx, level, "segment client", attrs...)
}
