package main

import (
	"context"
	"log/slog"
	"slices"
)

// appComponent is the component of the lines main itself logs.
const appComponent = "authpipe"

// componentHandler makes every line name its component: each package's
// logger carries its own (With("component", …)); a line without one is
// main's and gets appComponent. So a line can always be traced to what
// wrote it, and main's lines need no key of their own.
type componentHandler struct {
	slog.Handler
	named bool // With added a component
}

func (h componentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return componentHandler{h.Handler.WithAttrs(as), h.named || hasComponent(as...)}
}

func (h componentHandler) WithGroup(name string) slog.Handler {
	return componentHandler{h.Handler.WithGroup(name), h.named}
}

func (h componentHandler) Handle(ctx context.Context, r slog.Record) error {
	named := h.named
	r.Attrs(func(a slog.Attr) bool {
		named = named || hasComponent(a)
		return !named
	})
	if !named {
		r = r.Clone()
		r.AddAttrs(slog.String("component", appComponent))
	}
	return h.Handler.Handle(ctx, r)
}

func hasComponent(as ...slog.Attr) bool {
	return slices.ContainsFunc(as, func(a slog.Attr) bool { return a.Key == "component" })
}
