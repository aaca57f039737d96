package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
)

// wantsHelp reports whether a command's arguments ask for its usage: -h,
// -help or --help anywhere before a "--", or "help" first. Every command
// answers it with its usage on stdout and exit status 0, before anything
// else is checked, so `authpipe CMD --help` works without a configuration.
func wantsHelp(args []string) bool {
	if len(args) > 0 && args[0] == "help" {
		return true
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// printUsage writes a command's usage text and, when fs is not nil, its
// flags with their defaults.
func printUsage(w io.Writer, usage string, fs *flag.FlagSet) {
	fmt.Fprint(w, usage)
	if fs != nil {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// parseFlags answers a request for help with the command's usage and fs's
// flags on stdout, else parses args into fs; done reports that the command
// ends there, with exit status code.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout io.Writer) (code int, done bool) {
	if wantsHelp(args) {
		printUsage(stdout, usage, fs)
		return 0, true
	}
	if err := fs.Parse(args); err != nil {
		return 2, true
	}
	return 0, false
}

// subcommand starts `authpipe CMD SUB [flags]`: with no SUB, or one not in
// subs, it prints usage to stderr (exit status 2); asked for help, to
// stdout (0). Otherwise it returns SUB and a flag set for it that prints
// usage on a flag error; fs nil means the command ends with code.
func subcommand(cmd, usage string, subs, args []string, stdout, stderr io.Writer) (sub string, fs *flag.FlagSet, code int) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return "", nil, 2
	}
	if wantsHelp(args) {
		fmt.Fprint(stdout, usage)
		return "", nil, 0
	}
	if sub = args[0]; !slices.Contains(subs, sub) {
		fmt.Fprintf(stderr, "authpipe %s: unknown command %q\n\n%s", cmd, sub, usage)
		return "", nil, 2
	}
	fs = flag.NewFlagSet("authpipe "+cmd+" "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return sub, fs, 0
}
