package sidecar

import (
	"io"
	"log/slog"
	"strings"
)

// ParseLogLevel reads a SLUICE_LOG_LEVEL: debug, info, warn or error, in
// any case; ok is false for anything else. Not slog.Level's UnmarshalText:
// it also takes offsets ("INFO+2", "debug-4"), levels the README does not
// offer and a typo of which would silently change what is logged.
func ParseLogLevel(s string) (level slog.Level, ok bool) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return slog.LevelInfo, false
}

// NewLogger builds the logger of SLUICE_LOG_LEVEL and SLUICE_LOG_FORMAT
// (LoadConfig has checked both).
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := ParseLogLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	// slog's JSON handler writes a duration as integer nanoseconds
	// ("retry_after":1000000000), which an operator reads as a billion
	// seconds; write it as the text handler and the variables do ("1s").
	opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
