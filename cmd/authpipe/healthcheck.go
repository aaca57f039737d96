package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// `authpipe healthcheck [URL]` GETs /-/healthy and exits 0 on a 2xx, 1
// otherwise: the container image has no shell and no curl, so its
// HEALTHCHECK runs the binary itself.

const healthcheckUsage = `Usage: authpipe healthcheck [--timeout D] [URL]

Exits 0 if URL answers 2xx, 1 otherwise (the container's HEALTHCHECK). URL
defaults to http://127.0.0.1:PORT/-/healthy with the port of AUTHPIPE_LISTEN
(default :9464).
`

func healthcheckCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	fs.Usage = func() { printUsage(stderr, healthcheckUsage, fs) }
	if code, done := parseFlags(fs, healthcheckUsage, args, stdout); done {
		return code
	}
	if fs.NArg() > 1 || *timeout <= 0 {
		fs.Usage()
		return 2
	}
	url := fs.Arg(0)
	if url == "" {
		var err error
		if url, err = healthURL(os.Getenv("AUTHPIPE_LISTEN")); err != nil {
			fmt.Fprintln(stderr, "authpipe healthcheck:", err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(stderr, "authpipe healthcheck: bad URL:", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "authpipe healthcheck: unhealthy:", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "authpipe healthcheck: unhealthy: %s answered %s\n", url, resp.Status)
		return 1
	}
	fmt.Fprintf(stdout, "authpipe healthcheck: %s answered %s\n", url, resp.Status)
	return 0
}

// healthURL is the /-/healthy URL of a local authpipe listening on listen
// (AUTHPIPE_LISTEN; empty means the default :9464). A wildcard or empty host
// is reached on loopback.
func healthURL(listen string) (string, error) {
	listen = cmp.Or(listen, ":9464")
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("AUTHPIPE_LISTEN %q: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/-/healthy", nil
}
