package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/config"
)

const auditUsage = `Usage:
  authpipe audit verify [--file PATH] [--redis]
  authpipe audit tail   [-n N] [--follow] [--file PATH | --redis]

The audit trail: one entry per admin API request and per command that reads
or changes data (README, "Audit trail"). Each entry carries the hash of the
entry before it in the same file or stream (prev), so an entry deleted or
edited breaks the link of the entry after it.

  verify  checks each trail's chain and prints one line per trail: "ok" with
          the entries and seq range, or "BROKEN at" the first entry whose
          link does not hold (a line of the file, an id of the stream) and
          why: entries missing before it (deleted), or the entry before it
          edited. A file may start in the middle of the chain (rotated); the
          Redis stream may lose its head to AUTHPIPE_ADMIN_AUDIT_RETENTION
          only where the last trim recorded. Exit 1 when a chain is broken.
  tail    prints the last N entries (default 20), oldest first, one JSON
          object per line; --follow then prints new ones as they come.

Without --file or --redis: the configured trail (the configuration of
authpipe run): the audit log file (AUTHPIPE_ADMIN_AUDIT_LOG, when it is a
file) and the Redis stream authpipe:{audit}:entries (when REDIS_URL is set);
tail reads the file when there is one.
`

// auditCommand runs `authpipe audit`.
func auditCommand(args []string, stdout, stderr io.Writer) int {
	sub, fs, code := subcommand("audit", auditUsage, []string{"verify", "tail"}, args, stdout, stderr)
	if fs == nil {
		return code
	}
	file := fs.String("file", "", "an audit log file")
	useRedis := fs.Bool("redis", false, "the Redis audit stream (REDIS_URL)")
	n := fs.Int("n", 20, "entries to print (tail)")
	follow := fs.Bool("follow", false, "keep printing new entries (tail)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "authpipe audit %s: unexpected arguments %q\n\n%s", sub, fs.Args(), auditUsage)
		return 2
	}
	if sub == "tail" && (*n < 1 || (*file != "" && *useRedis)) {
		fmt.Fprintln(stderr, "authpipe audit tail: -n must be at least 1, and give --file or --redis, not both")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var rdb redis.UniversalClient
	if *file == "" || *useRedis {
		// The configured trail.
		cfg, err := config.Load(os.LookupEnv)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		if *file == "" && cfg.Admin.AuditLog != "" && cfg.Admin.AuditLog != "stdout" && !*useRedis {
			*file = cfg.Admin.AuditLog
		}
		if cfg.Redis.URL != "" && (*useRedis || sub == "verify" || *file == "") {
			opts, _, err := config.RedisOptions(cfg.Redis.URL.Reveal())
			if err != nil {
				fmt.Fprintf(stderr, "config: REDIS_URL: %v\n", err)
				return 2
			}
			c := redis.NewUniversalClient(opts)
			defer c.Close()
			rdb = c
		}
		if *useRedis && rdb == nil {
			fmt.Fprintln(stderr, "authpipe audit: --redis needs REDIS_URL")
			return 2
		}
	}
	if *file == "" && rdb == nil {
		fmt.Fprintln(stderr, "authpipe audit: no trail to read: AUTHPIPE_ADMIN_AUDIT_LOG is stdout and REDIS_URL is unset; give --file PATH")
		return 2
	}

	if sub == "tail" {
		emit := func(line []byte) { fmt.Fprintf(stdout, "%s\n", line) }
		var err error
		if *file != "" {
			err = audit.Tail(ctx, *file, *n, *follow, emit)
		} else {
			err = audit.TailRedis(ctx, rdb, audit.DefaultKeys, *n, *follow, emit)
		}
		if err != nil {
			fmt.Fprintf(stderr, "authpipe audit tail: %v\n", err)
			return 1
		}
		return 0
	}

	exit := 0
	report := func(rep audit.Report, err error) {
		if err != nil {
			fmt.Fprintf(stderr, "authpipe audit verify: %v\n", err)
			exit = 1
			return
		}
		fmt.Fprintln(stdout, rep.String())
		if !rep.OK() {
			exit = 1
		}
	}
	if *file != "" {
		report(audit.VerifyFile(*file))
	}
	if rdb != nil {
		report(audit.VerifyRedis(ctx, rdb, audit.DefaultKeys))
	}
	return exit
}
