package pipeline

import (
	"fmt"
	"net"
	"net/http"

	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/metrics"
)

// newStream builds the Auth0 Log Streams receiver of every tenant when
// AUTHPIPE_STREAM_LISTEN is set: each tenant's pushed logs go to its
// buffer, and each commit to the tenant's Watch, which its poller reads
// (the slow interval while the stream is healthy, the missed count).
func (a *App) newStream() error {
	if !a.cfg.Stream.Enabled() {
		return nil
	}
	tenants := make([]auth0stream.Tenant, len(a.tenants))
	watches := make(map[string]*auth0stream.Watch, len(a.tenants))
	for i, t := range a.tenants {
		reg, _ := a.store.Metrics(t.name)
		tenants[i] = auth0stream.Tenant{Name: t.name, Token: t.cfg.Auth0.StreamToken, Buffer: t.buf, Registerer: reg}
		watches[t.name] = t.watch
	}
	recv, err := auth0stream.New(tenants, auth0stream.Config{}, auth0stream.Deps{
		Logger: a.logger,
		// Requests that reach no tenant: tenant="", never a name from
		// the internet.
		Registerer: metrics.Tenant(a.reg, ""),
		// The threshold engines see pushed logs through the buffer, as
		// polled ones: their consumer group wakes on the append and the
		// real-time path checks them at once. Feeding the commit to them
		// as well would count each log twice.
		OnCommit: func(c auth0stream.Commit) { watches[c.Tenant].Committed(c) },
	})
	if err != nil {
		return fmt.Errorf("stream receiver: %w", err)
	}
	a.stream = recv
	return nil
}

// listenStream opens the receiver's own listener; nil, nil when it is off.
func (a *App) listenStream() (*http.Server, net.Listener, error) {
	if a.stream == nil {
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", a.cfg.Stream.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on AUTHPIPE_STREAM_LISTEN %s: %w", a.cfg.Stream.Listen, err)
	}
	return auth0stream.NewServer(a.cfg.Stream.Listen, a.stream, a.logger), ln, nil
}
