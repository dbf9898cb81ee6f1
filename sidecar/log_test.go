package sidecar

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestLogLevel: SLUICE_LOG_LEVEL is read one way by the config check, the
// logger and the bench programs (ParseLogLevel), in any case.
func TestLogLevel(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want slog.Level
		ok   bool
	}{
		{"debug", slog.LevelDebug, true}, {"INFO", slog.LevelInfo, true}, {"Warn", slog.LevelWarn, true},
		{"error", slog.LevelError, true}, {"verbose", slog.LevelInfo, false}, {"", slog.LevelInfo, false},
		{"INFO+2", slog.LevelInfo, false},
	} {
		got, ok := ParseLogLevel(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseLogLevel(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		_, _, err := LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://s", "SLUICE_LOG_LEVEL=" + tc.in})
		if tc.in == "" {
			continue // unset: the default, info
		}
		if (err == nil) != tc.ok || err != nil && !strings.Contains(err.Error(), "SLUICE_LOG_LEVEL") {
			t.Errorf("SLUICE_LOG_LEVEL=%q: %v", tc.in, err)
		}
		if !tc.ok {
			continue
		}
		var buf bytes.Buffer
		log := NewLogger(Config{LogLevel: tc.in, LogFormat: "text"}, &buf)
		if !log.Enabled(context.Background(), tc.want) || log.Enabled(context.Background(), tc.want-1) {
			t.Errorf("SLUICE_LOG_LEVEL=%q: the logger is not at %v", tc.in, tc.want)
		}
	}
}
