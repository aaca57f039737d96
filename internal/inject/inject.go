// Package inject gives the collaborators every component takes injected —
// a logger, a Prometheus registerer, a clock — one set of defaults, so that
// a zero Deps means the same in every package: logs discarded, metrics on a
// fresh registry nobody gathers, the real clock. Each call builds its own:
// no globals.
package inject

import (
	"log/slog"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults sets each of *logger, *reg and *clock that is nil to its
// default. Pass nil for a collaborator the component does not take.
func Defaults(logger **slog.Logger, reg *prometheus.Registerer, clock *clockwork.Clock) {
	if logger != nil && *logger == nil {
		*logger = slog.New(slog.DiscardHandler)
	}
	if reg != nil && *reg == nil {
		*reg = prometheus.NewRegistry()
	}
	if clock != nil && *clock == nil {
		*clock = clockwork.NewRealClock()
	}
}
