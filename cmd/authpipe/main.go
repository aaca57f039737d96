// Command authpipe keeps a durable, analysable copy of an Auth0 tenant's
// authentication logs: it polls the Management API, buffers the events in
// Redis, forwards them to Segment and runs threshold checks on them.
//
// main only parses arguments and dispatches. Each command reads its flags
// and the configuration and calls into the packages: `run` and `demo` run
// internal/pipeline, which owns the worker's lifecycle and everything the
// delivery contract relies on.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/redis/go-redis/v9"
)

// Set at build time: -ldflags "-X main.version=1.2.3 -X main.revision=abc".
var (
	version  = "dev"
	revision = ""
)

func main() {
	// go-redis logs through one process-wide logger of its own, not through
	// the clients authpipe builds: route it into slog once, here.
	redis.SetLogger(goRedisLogger{})
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `authpipe keeps a durable copy of Auth0 authentication logs in Segment
and alerts on attack patterns.

Usage:
  authpipe run                 run the worker (configuration from the environment
                               and the YAML file named by AUTHPIPE_CONFIG)
  authpipe check               check the configuration against the live services
                               (Auth0, Segment, Redis, Alertmanager, rule files)
  authpipe demo [flags]        the whole pipeline on simulators, no accounts needed
  authpipe sim [flags]         the Auth0 and Segment simulators as a process, with traffic
  authpipe healthcheck [URL]   exit 0 if /-/healthy answers 2xx (container HEALTHCHECK)
  authpipe backfill --since T  poll a window of Auth0's logs again into the buffer
  authpipe dlq CMD             list, replay or drop dead letters (authpipe dlq help)
  authpipe audit CMD           verify or tail the audit trail (authpipe audit help)
  authpipe rules check FILE…   validate threshold rule files
  authpipe rules test FILE…    run threshold rule unit tests
  authpipe version             print the version

authpipe CMD --help (or authpipe help CMD) prints a command's usage.
See CONFIGURATION.md for every setting.
`

func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	commands := map[string]func(args []string, stdout, stderr io.Writer) int{
		"run": runCommand, "demo": demoCommand, "sim": simCommand, "healthcheck": healthcheckCommand,
		"backfill": backfillCommand, "dlq": dlqCommand, "audit": auditCommand, "rules": rulesCommand, "check": checkCommand,
	}
	if command, ok := commands[args[0]]; ok {
		return command(args[1:], stdout, stderr)
	}
	switch args[0] {
	case "version", "--version":
		if wantsHelp(args[1:]) {
			fmt.Fprint(stdout, "Usage: authpipe version\n\nPrints the version, the revision it was built from and the Go version.\n")
			return 0
		}
		fmt.Fprintf(stdout, "authpipe %s (revision %s, %s)\n", version, buildRevision(), runtime.Version())
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			// authpipe help CMD: the command's own usage.
			return cli([]string{args[1], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "authpipe: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// buildRevision is the injected revision, else the VCS revision Go recorded.
func buildRevision() string {
	if revision != "" {
		return revision
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
