package forward

import (
	"log/slog"

	"github.com/authpipe/authpipe/internal/testlogs"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// syncBuffer is safe for a logger's concurrent writes.
type syncBuffer = testlogs.Buffer
