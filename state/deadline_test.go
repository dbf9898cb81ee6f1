package state

import (
	"testing"
	"time"
)

// TestDeadlineSparesLoadFinishedJustBefore: a backfill with a one-hour
// deadline writes until 58 minutes in, every write acknowledged, and its
// loader exits without declaring the job complete. At the deadline the
// job is still running (the idle verdict comes only StallAfter after its
// last write), but it is a finished load all the same: nothing is in
// flight and its loader has not written since before the deadline. Its
// cancel and cleanup (which would delete what it loaded) must not run; it
// becomes idle, and, like any idle job, meets its deadline at its next
// write.
func TestDeadlineSparesLoadFinishedJustBefore(t *testing.T) {
	p := testPolicy()
	p.Deadline = time.Hour
	j := NewJob("backfill", p, t0, zeroRand)
	var steps []step
	for at := time.Duration(0); at <= 58*time.Minute; at += 10 * time.Second {
		steps = append(steps, step{at, admit, Running, nil}, step{at, progress, Running, nil}, step{at, release, Running, nil}, step{at, tick, Running, nil})
	}
	steps = append(steps,
		step{time.Hour, tick, Running, nil},
		step{58*time.Minute + p.StallAfter, tick, Idle, []Action{ActPersist}},
		step{3 * time.Hour, tick, Idle, nil},
		// A rerun's write: running, and past the deadline.
		step{3 * time.Hour, admit, Running, []Action{ActPersist}},
		step{3*time.Hour + time.Second, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	)
	transcript(t, j, steps)
}

// TestDeadlineStillStopsAnActiveLoader: a loader that keeps writing past
// its deadline is cancelled at the deadline's first tick that finds it
// writing (a write in flight, or one since the deadline).
func TestDeadlineStillStopsAnActiveLoader(t *testing.T) {
	p := testPolicy()
	p.Deadline = time.Hour
	j := NewJob("backfill", p, t0, zeroRand)
	var steps []step
	for at := time.Duration(0); at < time.Hour; at += 10 * time.Second {
		steps = append(steps, step{at, admit, Running, nil}, step{at, progress, Running, nil}, step{at, release, Running, nil})
	}
	steps = append(steps,
		step{time.Hour, admit, Running, nil},
		step{time.Hour, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	)
	transcript(t, j, steps)
	// Between writes at the deadline: the first write after it.
	j = NewJob("b2", p, t0, zeroRand)
	steps = nil
	for at := time.Duration(0); at < time.Hour; at += 10 * time.Second {
		steps = append(steps, step{at, admit, Running, nil}, step{at, progress, Running, nil}, step{at, release, Running, nil})
	}
	steps = append(steps,
		step{time.Hour + time.Second, admit, Running, nil},
		step{time.Hour + time.Second, progress, Running, nil},
		step{time.Hour + time.Second, release, Running, nil},
		step{time.Hour + 2*time.Second, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	)
	transcript(t, j, steps)
}

// TestDeadlineStopsAStalledJob: a job with a one-hour deadline whose
// writes all fail with server errors (a stall cause that only alerts by
// default), whose loader then gives up: stalled, stuck, and not idle. Its
// deadline stops it; sparing quiet jobs is for a load that may have
// finished, which a stalled job is not. The same for a loader that
// promised heartbeats and fell silent.
func TestDeadlineStopsAStalledJob(t *testing.T) {
	p := testPolicy()
	p.Deadline = time.Hour
	j := NewJob("bulk", p, t0, zeroRand)
	var steps []step
	for at := time.Duration(0); at < 50*time.Minute; at += 10 * time.Second {
		steps = append(steps, step{at, admit, Running, nil}, step{at, srvErr, Running, nil}, step{at, release, Running, nil})
	}
	steps = append(steps,
		step{50 * time.Minute, tick, Stalled, nil},
		step{time.Hour, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	)
	transcript(t, j, steps)

	p = watched()
	p.Deadline = time.Hour
	j = NewJob("hb", p, t0, zeroRand)
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{0, progress, Running, nil},
		{0, release, Running, nil},
		{p.StallAfter, tick, Stalled, nil}, // loader_idle: alerts only by default
		{time.Hour, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	})
}
