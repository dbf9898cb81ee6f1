package state

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestStallRemedies: for each way a job stops making progress, the state
// it is in after StallAfter and after StallAfter+CancelGrace, with every
// cause allowed to cancel, with none, and with the default ones. An idle
// job is never cancelled, whatever is allowed. (A loader that heartbeats
// and writes nothing: TestHeartbeatWatchesTheLoader.)
func TestStallRemedies(t *testing.T) {
	heartbeat := func(p *Policy) { p.HeartbeatInterval = time.Minute }
	probe := func(p *Policy) { p.Probed = true }
	causes := map[string][]StallCause{"all": StallCauses(), "none": {}, "default": DefaultAutoCancelCauses()}
	const early = time.Second
	for _, tc := range []struct {
		name   string
		policy func(*Policy)
		at     time.Duration // of evs, after one acknowledged write at 0
		evs    []Event
		cause  StallCause // "": idle
	}{
		{"loader quiet", nil, 0, nil, ""},
		{"loader quiet, heartbeat promised", heartbeat, 0, nil, CauseLoaderIdle},
		{"store throttles", nil, early, []Event{admit, throttle, release}, CauseStoreThrottling},
		{"store times out", nil, early, []Event{admit, timeout, release}, CauseUpstreamTimeouts},
		{"store errs", nil, early, []Event{admit, srvErr, srvErr, release}, CauseUpstreamErrors},
		{"store unreachable", nil, early, []Event{admit, unreach, unreach, release}, CauseUpstreamUnreachable},
		{"store errs, then the loader gives up", nil, early, []Event{admit, srvErr, release}, CauseUpstreamErrors},
		{"probe flat", probe, 0, nil, CauseProbeNoProgress},
	} {
		for _, set := range []string{"all", "none", "default"} {
			t.Run(tc.name+"/"+set, func(t *testing.T) {
				p := testPolicy()
				if tc.policy != nil {
					tc.policy(&p)
				}
				p.AutoCancelCauses = causes[set]
				stall, grace := p.StallAfter, p.CancelGrace
				j := NewJob("j", p, t0, zeroRand)
				for _, ev := range []Event{admit, progress, release} {
					mustStep(t, j, ev, t0)
				}
				for _, ev := range tc.evs {
					mustStep(t, j, ev, t0.Add(tc.at))
				}
				wantStall := Stalled
				if tc.cause == "" {
					wantStall = Idle
				}
				acts := mustStep(t, j, tick, t0.Add(stall+time.Second))
				if j.State != wantStall || j.StallCause != tc.cause || !slices.Equal(acts, []Action{ActPersist}) {
					t.Fatalf("after StallAfter: %s (%q) %v, want %s (%q) [persist]", j.State, j.StallCause, acts, wantStall, tc.cause)
				}
				cancels := tc.cause != "" && slices.Contains(causes[set], tc.cause)
				acts = mustStep(t, j, tick, t0.Add(stall+grace+time.Second))
				switch {
				case cancels && (j.State != Cancelling || j.Reason != "stalled" || !slices.Equal(acts, []Action{ActPersist, ActAbortInflight, ActRunCancel})):
					t.Fatalf("after the grace: %s (%s) %v, want cancelling (stalled) with the cancel action", j.State, j.Reason, acts)
				case !cancels && (j.State != wantStall || acts != nil):
					t.Fatalf("after the grace: %s (%s) %v, want %s and nothing done", j.State, j.Reason, acts, wantStall)
				}
				if !cancels {
					mustStep(t, j, tick, t0.Add(100*(stall+grace)))
					if j.State != wantStall {
						t.Fatalf("much later: %s, want %s", j.State, wantStall)
					}
				}
			})
		}
	}
}

func mustStep(t *testing.T, j *Job, ev Event, at time.Time) []Action {
	t.Helper()
	acts, err := j.Step(ev, at)
	if err != nil {
		t.Fatalf("%s at %s: %v", ev.Type, at.Sub(t0), err)
	}
	return acts
}

// TestFinishedLoadNeverCancelled: a backfill writes for ten minutes, every
// write acknowledged, and its loader exits without declaring the job
// complete. The job is idle from StallAfter on and stays so for days, with
// every cause allowed to cancel and a deadline long past, across a restart
// too: nothing is ever cancelled or cleaned up. Its next write (a rerun)
// makes it running, and meets the deadline.
func TestFinishedLoadNeverCancelled(t *testing.T) {
	p := testPolicy()
	p.AutoCancelCauses = StallCauses()
	p.Deadline = time.Hour
	j := NewJob("backfill", p, t0, zeroRand)
	var steps []step
	for at := time.Duration(0); at < 10*time.Minute; at += 10 * time.Second {
		steps = append(steps, step{at, admit, Running, nil}, step{at, progress, Running, nil}, step{at, release, Running, nil}, step{at, tick, Running, nil})
	}
	last := 10*time.Minute - 10*time.Second
	steps = append(steps,
		step{last + p.StallAfter - time.Second, tick, Running, nil},
		step{last + p.StallAfter, tick, Idle, []Action{ActPersist}},
		step{last + p.StallAfter + p.CancelGrace, tick, Idle, nil},
	)
	transcript(t, j, steps)
	for at := last + p.StallAfter; at < 72*time.Hour; at += time.Minute {
		if acts := mustStep(t, j, tick, t0.Add(at)); acts != nil || j.State != Idle {
			t.Fatalf("%s at +%s: %s %v", j.ID(), at, j.State, acts)
		}
	}
	restart := t0.Add(72 * time.Hour)
	r := RestoreJob("backfill", j.Snapshot(), p, restart, zeroRand)
	if acts := r.Resume(); acts != nil || r.State != Idle {
		t.Fatalf("restored: %s, resumes %v", r.State, acts)
	}
	for at := time.Duration(0); at < 72*time.Hour; at += time.Minute {
		if acts := mustStep(t, r, tick, restart.Add(at)); acts != nil || r.State != Idle {
			t.Fatalf("restored, +%s: %s %v", at, r.State, acts)
		}
	}
	if r.Stalls != 0 || slices.ContainsFunc(r.History, func(tr Transition) bool { return tr.To == Cancelling || tr.To == Stalled }) {
		t.Fatalf("history %+v, stalls %d", r.History, r.Stalls)
	}
	if acts := mustStep(t, r, admit, restart.Add(72*time.Hour)); r.State != Running || !slices.Equal(acts, []Action{ActPersist}) {
		t.Fatalf("a rerun's write: %s %v, want running", r.State, acts)
	}
	if mustStep(t, r, tick, restart.Add(72*time.Hour)); r.State != Cancelling || r.Reason != "deadline_exceeded" {
		t.Fatalf("a rerun past the deadline: %s (%s), want cancelling (deadline_exceeded)", r.State, r.Reason)
	}
}

// TestHeartbeatWatchesTheLoader: a job registered with a heartbeat interval
// whose loader hangs is stalled (loader_idle) and, with loader_idle among
// its causes, cancelled; one whose loader comes back is not.
func TestHeartbeatWatchesTheLoader(t *testing.T) {
	p := watched()
	p.AutoCancelCauses = []StallCause{CauseLoaderIdle}
	m := time.Minute
	j := NewJob("hb", p, t0, zeroRand)
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{0, progress, Running, nil},
		{0, release, Running, nil},
		// Alive, with nothing to write: idle, not stalled.
		{4*m + 30*time.Second, heartbeat, Running, nil},
		{5 * m, tick, Idle, []Action{ActPersist}},
		{5*m + 30*time.Second, heartbeat, Idle, nil},
		// Silent for longer than promised: hung.
		{6*m + 30*time.Second, tick, Stalled, []Action{ActPersist}},
		// It speaks again: idle.
		{7 * m, heartbeat, Idle, []Action{ActPersist}},
		{8 * m, tick, Stalled, []Action{ActPersist}},
		// It writes again: running.
		{9 * m, admit, Running, []Action{ActPersist}},
		{9 * m, progress, Running, nil},
		{9 * m, release, Running, nil},
		// And hangs for good: stalled, then cancelled after the grace.
		{14 * m, tick, Stalled, []Action{ActPersist}},
		{19 * m, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	})
	if j.StallCause != CauseLoaderIdle || j.Stalls != 3 {
		t.Fatalf("cause %q, %d stalls", j.StallCause, j.Stalls)
	}
}

// streamPolicy is testPolicy for the default job, allowed to be cancelled
// for throttling.
func streamPolicy() Policy {
	p := testPolicy()
	p.Stream = true
	p.AutoCancelCauses = []StallCause{CauseStoreThrottling}
	return p
}

// TestStreamReopens: the default job stalls (throttled), is cancelled and
// cleaned up, holding its writes meanwhile instead of refusing them, and
// then takes writes again, on its own.
func TestStreamReopens(t *testing.T) {
	p := streamPolicy()
	stall, grace := p.StallAfter, p.CancelGrace
	j := NewJob("default", p, t0, zeroRand)
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{0, throttle, Throttled, nil},
		{0, release, Throttled, nil},
		{stall, tick, Stalled, []Action{ActPersist}},
		{stall + grace, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
	})
	if !j.Reopen {
		t.Fatal("the stream's own cancel does not say it reopens")
	}
	at := stall + grace
	transcript(t, j, []step{
		{at, admit, Cancelling, []Action{ActHold}},
		{at + time.Second, succeeded(ActRunCancel), Cleaning, []Action{ActPersist, ActRunCleanup}},
		{at + time.Second, admit, Cleaning, []Action{ActHold}},
		{at + 2*time.Second, succeeded(ActRunCleanup), Running, []Action{ActPersist, ActReopen}},
		{at + 2*time.Second, admit, Running, nil},
		{at + 2*time.Second, progress, Running, nil},
		{at + 2*time.Second, release, Running, nil},
		// A new run: the old stall counts for nothing.
		{at + stall, tick, Running, nil},
	})
	want := []State{Running, Throttled, Stalled, Cancelling, Cleaning, Cancelled, Running}
	if got := historyStates(j); !slices.Equal(got, want) || j.Reason != "stream_reopened" || j.Reopen || j.StallCause != "" {
		t.Fatalf("history %v (%s, reopen %v, cause %q), want %v", got, j.Reason, j.Reopen, j.StallCause, want)
	}
}

// TestStreamEndsOnlyByOperator: the default job never completes; an
// operator's cancel ends it (also one that comes while sluice's own cancel
// runs), and so does a cleanup that fails, which a human must look at.
func TestStreamEndsOnlyByOperator(t *testing.T) {
	j := NewJob("default", streamPolicy(), t0, zeroRand)
	mustStep(t, j, admit, t0)
	_, err := j.Step(complete, t0)
	var te *TransitionError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "stream") || j.State != Running {
		t.Fatalf("complete the stream: %v, then %s", err, j.State)
	}

	stalled := func() *Job {
		j := restoredWith(Stalled, CauseStoreThrottling, streamPolicy())
		mustStep(t, j, tick, t0.Add(time.Hour))
		if j.State != Cancelling || !j.Reopen {
			t.Fatalf("%s, reopen %v", j.State, j.Reopen)
		}
		return j
	}
	f := func(name string, j *Job, steps []step, want State) {
		t.Helper()
		transcript(t, j, steps)
		if j.State != want {
			t.Fatalf("%s: %s, want %s", name, j.State, want)
		}
		if _, err := j.Step(admit, t0.Add(2*time.Hour)); !errors.As(err, new(*NotAcceptingError)) {
			t.Fatalf("%s: a write to the %s stream: %v, want refused", name, j.State, err)
		}
	}
	at := time.Hour
	f("operator cancel", restored(Running), []step{
		{at, Event{Type: EvCancel, Reason: "operator"}, Cancelling, nil},
		{at, succeeded(ActRunCancel), Cleaning, nil},
		{at, succeeded(ActRunCleanup), Cancelled, []Action{ActPersist}},
	}, Cancelled)
	f("operator cancel during the stream's own", stalled(), []step{
		{at, Event{Type: EvCancel, Reason: "operator"}, Cancelling, []Action{ActPersist}},
		{at, succeeded(ActRunCancel), Cleaning, nil},
		{at, succeeded(ActRunCleanup), Cancelled, []Action{ActPersist}},
	}, Cancelled)
	f("cleanup failed", stalled(), []step{
		{at, succeeded(ActRunCancel), Cleaning, nil},
		{at, failed(ActRunCleanup, true), Failed, []Action{ActPersist}},
	}, Failed)
}

// TestReopen: an operator reopens a cancelled or failed job, and it starts
// a new run: writes, a fresh stall window and deadline, no force. A
// completed job, and a live one, cannot be reopened.
func TestReopen(t *testing.T) {
	p := testPolicy()
	p.Deadline = time.Hour
	for _, from := range []State{Cancelled, Failed} {
		j := RestoreJob("r", MachineState{State: from, Since: t0, Created: t0, Force: true, StallCause: CauseStoreThrottling}, p, t0, zeroRand)
		reopenAt := 2 * time.Hour // past the first run's deadline
		transcript(t, j, []step{
			{reopenAt, Event{Type: EvReopen, Reason: "fixed the mapping"}, Running, []Action{ActPersist, ActReopen}},
			{reopenAt, admit, Running, nil},
			{reopenAt, progress, Running, nil},
			{reopenAt, release, Running, nil},
			{reopenAt + time.Hour - time.Second, progress, Running, nil},
			{reopenAt + time.Hour - time.Second, tick, Running, nil},
			{reopenAt + time.Hour, admit, Running, nil}, // found writing at its deadline
			{reopenAt + time.Hour, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
		})
		if j.Force || !j.Opened.Equal(t0.Add(reopenAt)) || j.History[0].Reason != "fixed the mapping" || j.Reason != "deadline_exceeded" {
			t.Errorf("from %s: force %v, opened %v, history %+v", from, j.Force, j.Opened, j.History)
		}
	}
	for _, s := range []State{Completed, Pending, Running, Idle, Stalled, Cancelling, Cleaning} {
		j := restored(s)
		if _, err := j.Step(reopen, t0); !errors.As(err, new(*TransitionError)) || j.State != s {
			t.Errorf("reopen %s: %v, then %s; want a TransitionError", s, err, j.State)
		}
	}
}

func historyStates(j *Job) []State {
	var s []State
	for _, h := range j.History {
		s = append(s, h.To)
	}
	return s
}
