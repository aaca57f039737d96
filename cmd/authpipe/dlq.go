package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/pipeline"
)

const dlqUsage = `Usage:
  authpipe dlq list   [--tenant NAME] [--limit N] [--after ID] [--json] [--raw]
  authpipe dlq replay [--tenant NAME] ID… | --all
  authpipe dlq drop   [--tenant NAME] ID… | --all

Inspects and re-drives a tenant's dead letters (events the forwarder gave up
on), with the configuration of authpipe run (environment and AUTHPIPE_CONFIG).

  list    the oldest dead letters first (default 50): id, log_id, deliveries,
          failed_at and reason. --raw adds each event as Auth0 sent it (it
          holds personal data); --json prints the admin API's JSON;
          --after ID pages on from the last id listed.
  replay  appends each dead letter's event to the stream again as a new entry,
          with its log_id (Segment drops it if an earlier delivery arrived
          after all), and removes it from the dead letters in the same step;
          the running forwarder delivers it. Fix the cause first.
  drop    deletes dead letters for good.

ID is a dead-letter id as list prints it (1764111111111-0). --all takes every
dead letter there is when the command starts. --tenant is needed only with
several tenants.

With the embedded buffer (REDIS_URL unset) a running authpipe run holds the
data dir's lock: stop it first, or use its admin API (GET /api/v1/dlq,
POST /api/v1/dlq/replay, POST /api/v1/dlq/drop; see README).
`

// dlqBuffer is what the dlq commands need of a tenant's buffer.
type dlqBuffer interface {
	DeadLettersAfter(ctx context.Context, after string, count int) ([]buffer.DeadLetter, error)
	ReplayDeadLetters(ctx context.Context, ids []string) (int, error)
	DropDeadLetters(ctx context.Context, ids []string) (int, error)
}

var (
	_ dlqBuffer = (*buffer.Redis)(nil)
	_ dlqBuffer = (*buffer.Bolt)(nil)
)

// dlqCommand runs `authpipe dlq`.
func dlqCommand(args []string, stdout, stderr io.Writer) int {
	sub, fs, code := subcommand("dlq", dlqUsage, []string{"list", "replay", "drop"}, args, stdout, stderr)
	if fs == nil {
		return code
	}
	tenantArg := fs.String("tenant", "", "the tenant (needed with several)")
	var limit *int
	var after *string
	var asJSON, raw, all *bool
	if sub == "list" {
		limit = fs.Int("limit", 50, "dead letters to list, 1 to 10000")
		after = fs.String("after", "", "list those after this dead-letter id")
		asJSON = fs.Bool("json", false, "print JSON")
		raw = fs.Bool("raw", false, "include the raw events (personal data)")
	} else {
		all = fs.Bool("all", false, "every dead letter")
	}
	ids, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return 2
	}

	if sub == "list" {
		if len(ids) > 0 {
			fmt.Fprintf(stderr, "authpipe dlq list: unexpected arguments %q\n\n%s", ids, dlqUsage)
			return 2
		}
		if *limit < 1 || *limit > 10000 {
			fmt.Fprintln(stderr, "authpipe dlq list: --limit must be from 1 to 10000")
			return 2
		}
		if *after != "" && !admin.ValidDLQID(*after) {
			fmt.Fprintf(stderr, "authpipe dlq list: --after %q is not a dead-letter id (want <ms>-<seq>, as list prints)\n", *after)
			return 2
		}
	} else {
		switch {
		case *all && len(ids) > 0:
			fmt.Fprintf(stderr, "authpipe dlq %s: give dead-letter ids or --all, not both\n", sub)
			return 2
		case !*all && len(ids) == 0:
			fmt.Fprintf(stderr, "authpipe dlq %s: give dead-letter ids (as authpipe dlq list prints them) or --all\n\n%s", sub, dlqUsage)
			return 2
		}
		for _, id := range ids {
			if !admin.ValidDLQID(id) {
				fmt.Fprintf(stderr, "authpipe dlq %s: %q is not a dead-letter id (want <ms>-<seq>, as list prints)\n", sub, id)
				return 2
			}
		}
	}

	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	tenant, ok := pickTenant(cfg, *tenantArg)
	if !ok {
		if *tenantArg == "" {
			fmt.Fprintf(stderr, "authpipe dlq: several tenants are configured (%s): choose one with --tenant\n", strings.Join(tenantNames(cfg), ", "))
		} else {
			fmt.Fprintf(stderr, "authpipe dlq: --tenant %q is not a configured tenant (%s)\n", *tenantArg, strings.Join(tenantNames(cfg), ", "))
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, st, err := openDLQ(cfg.ForTenant(tenant), logger)
	if err != nil {
		if errors.Is(err, buffer.ErrInUse) {
			fmt.Fprintf(stderr, "authpipe dlq: the embedded buffer in %s is in use by a running authpipe: stop it first, or use its admin API "+
				"(GET /api/v1/dlq, POST /api/v1/dlq/replay or /api/v1/dlq/drop; see README)\n", cfg.DataDir)
			return 1
		}
		fmt.Fprintf(stderr, "authpipe dlq: %v\n", err)
		return 1
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Warn("close buffer", "err", err)
		}
	}()
	// The same audit entries as the admin API's, with the OS user.
	op := map[string]string{"list": admin.OpDLQList, "replay": admin.OpDLQReplay, "drop": admin.OpDLQDrop}[sub]
	au, err := newCLIAudit(cfg, st.Redis, logger, stderr, "authpipe dlq "+sub, fs, op, "tenants/"+tenant.Name+"/dlq")
	if err != nil {
		fmt.Fprintf(stderr, "authpipe dlq: %v\n", err)
		return 1
	}
	defer au.close(ctx)
	au.entry.Tenants = []string{tenant.Name}

	switch sub {
	case "list":
		return dlqList(ctx, b, au, tenant.Name, *after, *limit, *asJSON, *raw, stdout, stderr)
	default:
		return dlqChange(ctx, b, au, tenant.Name, sub, ids, *all, stdout, stderr)
	}
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func pickTenant(cfg *config.Config, name string) (config.Tenant, bool) {
	all := cfg.AllTenants()
	if name == "" {
		if len(all) == 1 {
			return all[0], true
		}
		return config.Tenant{}, false
	}
	for _, t := range all {
		if t.Name == name {
			return t, true
		}
	}
	return config.Tenant{}, false
}

func tenantNames(cfg *config.Config) []string {
	var names []string
	for _, t := range cfg.AllTenants() {
		names = append(names, t.Name)
	}
	return names
}

// openDLQ opens the tenant's buffer as authpipe run does (cfg is the
// tenant's view), on a registry of its own; closing the store closes it.
// The embedded buffer must exist already: the command never creates one.
func openDLQ(cfg *config.Config, logger *slog.Logger) (dlqBuffer, *pipeline.Store, error) {
	if cfg.Redis.URL == "" {
		path := buffer.BoltFile(cfg.DataDir, cfg.Tenant)
		if _, err := os.Stat(path); err != nil {
			return nil, nil, fmt.Errorf("no embedded buffer of tenant %s in AUTHPIPE_DATA_DIR %s (%s): %w", cfg.Tenant, cfg.DataDir, path, err)
		}
	}
	st, err := pipeline.OpenStore(cfg, logger, prometheus.NewRegistry())
	if err != nil {
		return nil, nil, err
	}
	buf, err := st.Buffer(cfg)
	if err != nil {
		_ = st.Close()
		return nil, nil, err
	}
	b, ok := buf.(dlqBuffer)
	if !ok {
		_ = st.Close()
		return nil, nil, errors.New("the buffer has no dead-letter operations")
	}
	return b, st, nil
}

func dlqList(ctx context.Context, b dlqBuffer, au *cliAudit, tenant, after string, limit int, asJSON, raw bool, stdout, stderr io.Writer) int {
	dls, err := b.DeadLettersAfter(ctx, after, limit+1)
	if err != nil {
		fmt.Fprintf(stderr, "authpipe dlq list: %v\n", err)
		return 1
	}
	next := ""
	if len(dls) > limit {
		dls = dls[:limit]
		next = dls[limit-1].ID
	}
	// The entry names every dead letter shown, stored before it is shown.
	au.entry.Records = admin.Records(dls)
	if err := au.read(ctx); err != nil {
		fmt.Fprintf(stderr, "authpipe dlq list: %v\n", err)
		return 1
	}
	if asJSON {
		resp := admin.DLQResponse{Tenant: tenant, DeadLetters: []admin.DeadLetterView{}, Next: next}
		for _, d := range dls {
			resp.DeadLetters = append(resp.DeadLetters, admin.NewDeadLetterView(d, raw))
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(resp); err != nil {
			fmt.Fprintf(stderr, "authpipe dlq list: %v\n", err)
			return 1
		}
		return 0
	}
	if len(dls) == 0 {
		fmt.Fprintf(stdout, "no dead letters (tenant %s)\n", tenant)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLOG_ID\tDELIVERIES\tFAILED_AT\tREASON")
	for _, d := range dls {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.ID, oneLine(d.LogID), d.Deliveries, d.FailedAt.UTC().Format(time.RFC3339), oneLine(d.Reason))
		if raw {
			fmt.Fprintf(tw, "  raw: %s\n", oneLine(string(d.Raw)))
		}
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(stderr, "authpipe dlq list: %v\n", err)
		return 1
	}
	if next != "" {
		fmt.Fprintf(stdout, "more: authpipe dlq list --after %s\n", next)
	}
	return 0
}

// oneLine keeps a field on its table row.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ", "\t", " ").Replace(s)
}

// dlqChange replays or drops the dead letters ids (every one there is now
// with all): it names them (ids and log_ids) in the audit trail, then
// changes exactly those, then records the result.
func dlqChange(ctx context.Context, b dlqBuffer, au *cliAudit, tenant, sub string, ids []string, all bool, stdout, stderr io.Writer) int {
	verb := "replayed"
	if sub == "drop" {
		verb = "dropped"
	}
	found, missing, err := admin.ResolveDeadLetters(ctx, b, ids, all)
	if err != nil {
		fmt.Fprintf(stderr, "authpipe dlq %s: %v\n", sub, err)
		return 1
	}
	au.entry.Records, au.entry.Missing = admin.Records(found), missing
	n := 0
	if len(found) == 0 {
		au.entry.Affected = &n // nothing to change: one entry
		if err := au.read(ctx); err != nil {
			fmt.Fprintf(stderr, "authpipe dlq %s: %v\n", sub, err)
			return 1
		}
	} else {
		if err := au.before(ctx); err != nil {
			fmt.Fprintf(stderr, "authpipe dlq %s: %v\n", sub, err)
			return 1
		}
		if sub == "replay" {
			n, err = b.ReplayDeadLetters(ctx, admin.IDs(found))
		} else {
			n, err = b.DropDeadLetters(ctx, admin.IDs(found))
		}
		exit := 0
		if err != nil {
			exit = 1
		}
		au.after(ctx, exit, &n)
		if err != nil {
			fmt.Fprintf(stderr, "authpipe dlq %s: %v (%d %s before the error)\n", sub, err, n, verb)
			return 1
		}
	}
	fmt.Fprintf(stdout, "%s %d dead letters of tenant %s\n", verb, n, tenant)
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "authpipe dlq %s: %d of the ids given were not dead letters (replayed or dropped already?)\n", sub, len(missing))
	}
	return 0
}
