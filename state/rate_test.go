package state

import (
	"context"
	"testing"
	"time"
)

// TestRatesOverTheJobsLife: a job younger than the rate window is averaged
// over its life, not over the whole minute; an older one over the minute.
func TestRatesOverTheJobsLife(t *testing.T) {
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		writes []time.Duration // after start, one request of 1000 bytes each
		at     time.Duration   // when the rate is read, after start
		want   float64         // requests per second
	}{
		{"ten seconds old", repeat(100, 5*time.Second), 10 * time.Second, 10},
		{"half a minute old", repeat(60, 20*time.Second), 30 * time.Second, 2},
		{"a minute old", repeat(120, 30*time.Second), time.Minute, 2},
		{"older than the window", repeat(120, 90*time.Second), 2 * time.Minute, 2},
		{"writes before the window do not count", repeat(50, 0), 5 * time.Minute, 0},
		{"first write, a millisecond old", repeat(1, 0), time.Millisecond, 1},
		{"nothing yet", nil, 3 * time.Second, 0},
	} {
		var w rateWindow
		for _, d := range tc.writes {
			w.add(start.Add(d), 1, 1000, 0, 0)
		}
		r := w.rates(start.Add(tc.at), start)
		if r.Requests != tc.want || r.Bytes != 1000*tc.want {
			t.Errorf("%s: %v requests/s, %v bytes/s; want %v, %v", tc.name, r.Requests, r.Bytes, tc.want, 1000*tc.want)
		}
	}
}

func repeat(n int, at time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = at
	}
	return out
}

// TestJobViewRate: the view of a job ten seconds old shows what it wrote
// divided by ten seconds; after a restart, a restored job's rate counts
// from the restore, since the window is not stored.
func TestJobViewRate(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	st := &MemStore{}
	m := newTestManager(t, Config{Store: st, Now: clock})
	if _, err := m.Register("young", Settings{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	for range 50 {
		_, release, err := m.Admit(context.Background(), "young")
		if err != nil {
			t.Fatal(err)
		}
		m.Observe("young", Observation{Kind: ObsOK, Bytes: 200, Items: 4})
		release()
	}
	if r := mustGet(t, m, "young").Rate; r.Requests != 5 || r.Bytes != 1000 || r.Items != 20 {
		t.Errorf("ten seconds old, 50 writes: rate %+v, want 5 requests, 1000 bytes and 20 items a second", r)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	now = now.Add(time.Hour)
	m = newTestManager(t, Config{Store: st, Now: clock})
	defer m.Close()
	now = now.Add(4 * time.Second)
	for range 8 {
		_, release, err := m.Admit(context.Background(), "young")
		if err != nil {
			t.Fatal(err)
		}
		m.Observe("young", Observation{Kind: ObsOK, Bytes: 100})
		release()
	}
	if r := mustGet(t, m, "young").Rate; r.Requests != 2 || r.Bytes != 200 {
		t.Errorf("restored four seconds ago, 8 writes since: rate %+v, want 2 requests and 200 bytes a second", r)
	}
}
