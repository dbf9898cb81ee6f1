// Package tracelog is the logger the simulators give a traced run's
// limiter: every record down to debug level, as text, each timed from the
// run's start rather than by the wall clock, so that the law's steps read
// against the run's own schedule (which under testing/synctest is virtual
// time from an arbitrary epoch).
package tracelog

import (
	"io"
	"log/slog"
	"time"
)

// New returns a logger that writes to w every record at debug level and
// above, its time as "t", the duration since start to the millisecond.
func New(w io.Writer, start time.Time) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Duration("t", a.Value.Time().Sub(start).Round(time.Millisecond))
			}
			return a
		},
	}))
}
