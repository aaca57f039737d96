package auth0poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ReadLogsScope is the Management API scope that GET /api/v2/logs needs
// (read:logs_users also passes it, but only read:logs is the one a log
// exporter's grant should hold).
const ReadLogsScope = "read:logs"

// Access is what CheckAccess found out about a configuration's access to
// Auth0's logs. Texts never carry the client secret or a token.
type Access struct {
	// TokenErr is why no token was issued (nil: one was).
	TokenErr error
	// Scopes are the scopes the token response granted; ScopesKnown is
	// false when it named none (the logs request then decides).
	Scopes      []string
	ScopesKnown bool
	// LogsStatus is the status of GET /api/v2/logs?take=1 with the token (0:
	// not made, or no answer: LogsErr says why); LogsErr describes a failure
	// (Auth0's own message for an error status).
	LogsStatus int
	LogsErr    error
}

// HasReadLogs reports whether the token response granted read:logs.
func (a Access) HasReadLogs() bool { return slices.Contains(a.Scopes, ReadLogsScope) }

// CheckAccess asks Auth0 for a token as the poller does (client
// credentials for the Management API audience), reads the scopes it was
// granted, and makes one GET /api/v2/logs?take=1 with it (its body, which
// holds personal data, is discarded unread). It is what `authpipe check`
// runs before a deploy; it costs one request of the logs rate limit.
func CheckAccess(ctx context.Context, cfg Config) Access {
	cfg = cfg.withDefaults()
	base, _, err := parseDomain(cfg.Domain)
	if err != nil {
		return Access{TokenErr: fmt.Errorf("AUTH0_DOMAIN: %w", err)}
	}
	redact := func(err error) error {
		return errors.New(redactSecret(cfg.ClientID, cfg.ClientSecret, err.Error()))
	}
	client := &http.Client{Timeout: cfg.RequestTimeout, Transport: cloneDefaultTransport()}
	cc := clientcredentials.Config{
		ClientID:       cfg.ClientID,
		ClientSecret:   cfg.ClientSecret.Reveal(),
		TokenURL:       base + "/oauth/token",
		EndpointParams: url.Values{"audience": {base + "/api/v2/"}},
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			what := re.ErrorCode
			if re.ErrorDescription != "" {
				what += ": " + re.ErrorDescription
			}
			return Access{TokenErr: redact(fmt.Errorf("POST /oauth/token answered %s (%s)", re.Response.Status, what))}
		}
		return Access{TokenErr: redact(fmt.Errorf("POST /oauth/token: %w", err))}
	}
	var a Access
	if s, ok := tok.Extra("scope").(string); ok {
		a.Scopes, a.ScopesKnown = strings.Fields(s), true
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v2/logs?take=1", nil)
	if err != nil {
		a.LogsErr = redact(err)
		return a
	}
	tok.SetAuthHeader(req)
	resp, err := client.Do(req)
	if err != nil {
		a.LogsErr = redact(fmt.Errorf("GET /api/v2/logs: %w", err))
		return a
	}
	defer resp.Body.Close()
	a.LogsStatus = resp.StatusCode
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		// Auth0's error shape; the message names what is wrong (e.g.
		// "Insufficient scope, expected any of: read:logs,read:logs_users").
		var e struct {
			Message   string `json:"message"`
			ErrorCode string `json:"errorCode"`
		}
		msg := resp.Status
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			msg += ": " + e.Message
			if e.ErrorCode != "" {
				msg += " (" + e.ErrorCode + ")"
			}
		}
		a.LogsErr = redact(fmt.Errorf("GET /api/v2/logs?take=1 answered %s", msg))
	}
	return a
}
