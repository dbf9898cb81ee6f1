package state

import (
	"context"
	"sync"
	"testing"
	"time"
)

// wallClock is a settable clock whose readings carry no monotonic reading,
// like times read back from the store after a restart: Sub between them
// follows the wall clock, steps included.
type wallClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *wallClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// advance moves the clock by d (negative: the wall clock steps back) and
// returns the new time.
func (c *wallClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func clockManager(t *testing.T, clk *wallClock, store Store) *Manager {
	t.Helper()
	auto := true
	m, err := NewManager(Config{
		Store:    store,
		Defaults: Settings{StallAfter: time.Minute, CancelGrace: time.Minute, AutoCancel: &auto},
		Now:      clk.now,
		Rand:     func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// clockWrite is one acknowledged write for job id.
func clockWrite(t *testing.T, m *Manager, id string) {
	t.Helper()
	_, release, err := m.Admit(context.Background(), id)
	if err != nil {
		t.Fatalf("admit %s: %v", id, err)
	}
	m.Observe(id, Observation{Kind: ObsOK, Bytes: 10, Items: -1})
	release()
}

// clockThrottled is one write for job id that the store throttles: a job
// whose last write failed so stalls rather than goes idle.
func clockThrottled(t *testing.T, m *Manager, id string) {
	t.Helper()
	_, release, err := m.Admit(context.Background(), id)
	if err != nil {
		t.Fatalf("admit %s: %v", id, err)
	}
	m.Observe(id, Observation{Kind: ObsThrottled})
	release()
}

func clockState(t *testing.T, m *Manager, id string) State {
	t.Helper()
	v, err := m.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return v.State
}

// TestClockStepsBackward: the wall clock steps back under running jobs,
// with a clock whose readings carry no monotonic reading (the worst case:
// the default time.Now's monotonic reading makes a wall step invisible to
// every in-memory timer). Nothing stalls, is cancelled or hits its deadline
// because of the step: a job making progress stays running, a stalled job
// is not cancelled before its grace has really passed, a deadline does not
// fire early; a job that makes progress after the step and then goes quiet
// stalls StallAfter after that progress. Rates stay non-negative.
func TestClockStepsBackward(t *testing.T) {
	for _, step := range []time.Duration{-time.Second, -time.Hour, -24 * time.Hour, -40 * 365 * 24 * time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			clk := &wallClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			m := clockManager(t, clk, &MemStore{})
			defer m.Close()
			if _, err := m.Register("deadline", Settings{Deadline: 10 * time.Minute}); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"busy", "quiet", "stalled", "deadline"} {
				clockWrite(t, m, id)
			}
			clockThrottled(t, m, "stalled")
			// "stalled" stalls after 60 s; the others keep busy for 90 s.
			var stalledAt time.Duration
			for i := range 90 {
				now := clk.advance(time.Second)
				clockWrite(t, m, "busy")
				clockWrite(t, m, "quiet")
				clockWrite(t, m, "deadline")
				m.Tick(now)
				if stalledAt == 0 && clockState(t, m, "stalled") == Stalled {
					stalledAt = time.Duration(i+1) * time.Second
				}
			}
			if stalledAt == 0 {
				t.Fatalf("stalled is %s before the step", clockState(t, m, "stalled"))
			}
			// The step; "quiet" writes once more, is throttled once, then
			// goes silent.
			m.Tick(clk.advance(step))
			clockWrite(t, m, "quiet")
			clockThrottled(t, m, "quiet")
			elapsed := 90 * time.Second
			quietStalled := time.Duration(0)
			for range 120 {
				now := clk.advance(time.Second)
				elapsed += time.Second
				clockWrite(t, m, "busy")
				m.Tick(now)
				if s := clockState(t, m, "busy"); s != Running {
					t.Fatalf("busy is %s after the clock stepped %v", s, step)
				}
				if s := clockState(t, m, "stalled"); s >= Cancelling && elapsed-stalledAt < time.Minute {
					t.Fatalf("stalled became %s %v after it stalled (grace 1m) when the clock stepped %v", s, elapsed-stalledAt, step)
				}
				if s := clockState(t, m, "deadline"); s >= Cancelling {
					t.Fatalf("deadline became %s %v after its creation (deadline 10m) when the clock stepped %v", s, elapsed, step)
				}
				if quietStalled == 0 && clockState(t, m, "quiet") == Stalled {
					quietStalled = elapsed - 90*time.Second
				}
				for _, j := range m.List() {
					if r := j.Rate; r.Requests < 0 || r.Bytes < 0 || r.Items < 0 || r.Records < 0 {
						t.Fatalf("%s: negative rate %+v after the clock stepped %v", j.ID, r, step)
					}
				}
			}
			if quietStalled < time.Minute || quietStalled > time.Minute+time.Second {
				t.Errorf("quiet stalled %v after its last progress (made after the clock stepped %v), want 1m", quietStalled, step)
			}
		})
	}
}

// TestRestartWithClockBehind: sluice restarts with the wall clock an hour
// (or a day) behind the times in its records. The restart fires nothing:
// no stall, no idleness, no cancel of a stalled job, no deadline;
// detection works from the restart on.
func TestRestartWithClockBehind(t *testing.T) {
	for _, step := range []time.Duration{-time.Hour, -24 * time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			store := &MemStore{}
			clk := &wallClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			m := clockManager(t, clk, store)
			if _, err := m.Register("deadline", Settings{Deadline: 10 * time.Minute}); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"live", "stalled", "deadline"} {
				clockWrite(t, m, id)
			}
			clockThrottled(t, m, "stalled")
			for range 90 {
				now := clk.advance(time.Second)
				clockWrite(t, m, "live")
				clockWrite(t, m, "deadline")
				m.Tick(now)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}

			clk.advance(step)
			m = clockManager(t, clk, store)
			defer m.Close()
			for i := range 59 {
				m.Tick(clk.advance(time.Second))
				for id, want := range map[string]State{"live": Running, "stalled": Stalled, "deadline": Running} {
					if s := clockState(t, m, id); s != want {
						t.Fatalf("%v after a restart with the clock %v behind: %s is %s, want %s", time.Duration(i+1)*time.Second, -step, id, s, want)
					}
				}
			}
			m.Tick(clk.advance(2 * time.Second))
			if s := clockState(t, m, "live"); s != Idle {
				t.Errorf("live is %s a minute after the restart without a write, want idle", s)
			}
		})
	}
}

// TestRestartWithClockBehindStillCancels: a job the store throttled for
// good is stalled when sluice stops, and sluice restarts with the wall
// clock behind the time the record says it stalled (a clock that ran ahead
// and was corrected, a node that booted before NTP synced). Its cancel
// grace counts from the restart like its stall window: the job is
// cancelled StallAfter+CancelGrace after the restart, as when the clock
// is right, not once the clock has caught up with the record hours later.
func TestRestartWithClockBehindStillCancels(t *testing.T) {
	for _, step := range []time.Duration{0, -time.Hour, -24 * time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			store := &MemStore{}
			clk := &wallClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			m := clockManager(t, clk, store)
			clockWrite(t, m, "stalled")
			clockThrottled(t, m, "stalled")
			for range 61 {
				m.Tick(clk.advance(time.Second))
			}
			if s := clockState(t, m, "stalled"); s != Stalled {
				t.Fatalf("before the restart: %s, want stalled", s)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}

			clk.advance(step)
			m = clockManager(t, clk, store)
			defer m.Close()
			// StallAfter and CancelGrace are a minute each.
			cancelledAt := time.Duration(0)
			for i := range 10 * 60 {
				m.Tick(clk.advance(time.Second))
				if clockState(t, m, "stalled") >= Cancelling {
					cancelledAt = time.Duration(i+1) * time.Second
					break
				}
			}
			switch {
			case cancelledAt == 0:
				t.Errorf("restarted with the clock %v behind: the stalled job is %s 10m after the restart, want cancelled after 2m", -step, clockState(t, m, "stalled"))
			case cancelledAt != 2*time.Minute:
				t.Errorf("restarted with the clock %v behind: the stalled job was cancelled %v after the restart, want 2m", -step, cancelledAt)
			}
		})
	}
}
