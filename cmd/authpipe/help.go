package main

import (
	"flag"
	"fmt"
	"io"
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
