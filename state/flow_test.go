package state

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestSettingsWeightAndPriority(t *testing.T) {
	f := func(s Settings, wantErr string) {
		t.Helper()
		err := s.Validate()
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%+v: %v", s, err)
		case wantErr != "" && (err == nil || !errors.Is(err, ErrInvalid)):
			t.Errorf("%+v: error %v, want one wrapping ErrInvalid naming %s", s, err, wantErr)
		case wantErr != "" && !strings.Contains(err.Error(), wantErr):
			t.Errorf("%+v: error %q does not name %s", s, err, wantErr)
		}
	}
	f(Settings{}, "")
	f(Settings{Weight: MinWeight, Priority: PriorityLive}, "")
	f(Settings{Weight: MaxWeight, Priority: PriorityBulk}, "")
	f(Settings{Weight: MaxWeight * 2}, "weight")
	f(Settings{Weight: MinWeight / 2}, "weight")
	f(Settings{Weight: -1}, "weight")
	f(Settings{Weight: math.NaN()}, "weight")
	f(Settings{Priority: "urgent"}, "priority")
	f(Settings{Priority: "Live"}, "priority")
}

// A job's weight and priority are part of its record: they survive a
// restart, show in its view, and reach the proxy (FlowSettings). The
// default job's priority is the operator's unless registered otherwise.
func TestWeightAndPriorityPersisted(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return t0 }
	cfg := Config{Store: st, Now: clock, DefaultJob: "stream", DefaultJobPriority: PriorityLive}
	m := newTestManager(t, cfg)
	v, err := m.Register("backfill", Settings{Weight: 3, Priority: PriorityBulk})
	if err != nil {
		t.Fatal(err)
	}
	if v.Weight != 3 || v.Priority != PriorityBulk {
		t.Errorf("registered view: weight %v priority %q", v.Weight, v.Priority)
	}
	if _, err := m.Register("plain", Settings{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	if cfg.Store, err = OpenBolt(dir); err != nil {
		t.Fatal(err)
	}
	m = newTestManager(t, cfg)
	defer m.Close()
	if v := mustGet(t, m, "backfill"); v.Weight != 3 || v.Priority != PriorityBulk {
		t.Errorf("after restart: weight %v priority %q, want 3 bulk", v.Weight, v.Priority)
	}
	if v := mustGet(t, m, "plain"); v.Weight != 1 || v.Priority != PriorityBulk {
		t.Errorf("unset: weight %v priority %q, want 1 bulk", v.Weight, v.Priority)
	}
	for _, c := range []struct {
		id       string
		weight   float64
		priority string
	}{{"backfill", 3, PriorityBulk}, {"plain", 0, ""}, {"stream", 0, PriorityLive}, {"unknown", 0, ""}} {
		if w, p := m.FlowSettings(c.id); w != c.weight || p != c.priority {
			t.Errorf("FlowSettings(%s) = %v, %q; want %v, %q", c.id, w, p, c.weight, c.priority)
		}
	}
	if _, err := NewManager(Config{DefaultJobPriority: "urgent"}); err == nil {
		t.Error("NewManager with DefaultJobPriority urgent: nil error")
	}
}
