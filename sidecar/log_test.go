package sidecar

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
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

// TestJSONLogDurations: a duration in a JSON log line reads as one ("1s"),
// as in text logs and the variables, not as slog's integer nanoseconds.
func TestJSONLogDurations(t *testing.T) {
	var buf bytes.Buffer
	NewLogger(Config{LogLevel: "info", LogFormat: "json"}, &buf).Info("m", "retry_after", time.Second, "group", slog.GroupValue(slog.Duration("for", 1500*time.Millisecond)))
	if got := buf.String(); !strings.Contains(got, `"retry_after":"1s"`) || !strings.Contains(got, `"for":"1.5s"`) {
		t.Errorf("JSON log line %s: want durations as \"1s\" and \"1.5s\"", got)
	}
}
