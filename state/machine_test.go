package state

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testPolicy() Policy {
	return Policy{
		StallAfter:       5 * time.Minute,
		CancelGrace:      5 * time.Minute,
		AutoCancel:       true,
		AutoCancelCauses: DefaultAutoCancelCauses(),
		QuietAfter:       30 * time.Second,
		BackoffAfter:     3,
		BackoffQuiet:     2 * time.Second,
		Backoff:          limiter.Backoff{Min: time.Second, Max: time.Minute},
	}
}

func zeroRand() float64 { return 0 }

// restored returns a job put in state s at t0, as after a restart.
func restored(s State) *Job {
	return RestoreJob("j", MachineState{State: s, Since: t0, Created: t0, Reason: "test"}, testPolicy(), t0, zeroRand)
}

// restoredWith is restored with a stall cause and a policy of its own.
func restoredWith(s State, c StallCause, p Policy) *Job {
	return RestoreJob("j", MachineState{State: s, Since: t0, Created: t0, Reason: "test", StallCause: c}, p, t0, zeroRand)
}

// watched is testPolicy for a loader that promised a heartbeat every
// minute.
func watched() Policy {
	p := testPolicy()
	p.HeartbeatInterval = time.Minute
	return p
}

// tev is an event at an offset from t0.
type tev struct {
	at time.Duration
	ev Event
}

var (
	admit     = Event{Type: EvAdmit}
	release   = Event{Type: EvRelease}
	progress  = Event{Type: EvProgress}
	throttle  = Event{Type: EvThrottle}
	timeout   = Event{Type: EvUpstreamError, Timeout: true}
	srvErr    = Event{Type: EvUpstreamError}
	tick      = Event{Type: EvTick}
	cancel    = Event{Type: EvCancel}
	complete  = Event{Type: EvComplete}
	heartbeat = Event{Type: EvHeartbeat}
	reopen    = Event{Type: EvReopen}
	unreach   = Event{Type: EvUpstreamError, Cause: CauseUpstreamUnreachable}
)

func retryAfter(d time.Duration) Event { return Event{Type: EvThrottle, RetryAfter: d} }

// probed is ev as it comes from the probe write with id n (Job.Probe at its
// admission).
func probed(n uint64, ev Event) Event { ev.Probe = n; return ev }
func succeeded(a Action) Event        { return Event{Type: EvActionSucceeded, Action: a} }
func failed(a Action, final bool) Event {
	return Event{Type: EvActionFailed, Action: a, Final: final, Err: "boom"}
}

// TestEveryLegalTransition drives a job along each edge of the transition
// table and fails if an edge has no scenario.
func TestEveryLegalTransition(t *testing.T) {
	const (
		stall = 5 * time.Minute
		grace = 5 * time.Minute
	)
	edges := []struct {
		from, to State
		cause    StallCause // of a restored stalled job
		p        Policy
		evs      []tev
	}{
		{Pending, Running, "", testPolicy(), []tev{{0, admit}}},
		{Pending, Idle, "", testPolicy(), []tev{{stall, tick}}},
		{Pending, Throttled, "", testPolicy(), []tev{{0, throttle}}},
		{Pending, Stalled, "", testPolicy(), []tev{{0, srvErr}, {stall, tick}}},
		{Pending, Cancelling, "", testPolicy(), []tev{{0, cancel}}},
		{Pending, Completed, "", testPolicy(), []tev{{0, complete}}},
		{Running, Idle, "", testPolicy(), []tev{{stall - time.Second, tick}, {stall, tick}}},
		{Running, Throttled, "", testPolicy(), []tev{{0, throttle}}},
		{Running, Stalled, "", testPolicy(), []tev{{0, srvErr}, {stall - time.Second, tick}, {stall, tick}}},
		{Running, Cancelling, "", testPolicy(), []tev{{0, cancel}}},
		{Running, Completed, "", testPolicy(), []tev{{0, complete}}},
		{Idle, Running, "", testPolicy(), []tev{{0, admit}}},
		{Idle, Stalled, "", watched(), []tev{{stall, tick}}},
		{Idle, Cancelling, "", testPolicy(), []tev{{0, cancel}}},
		{Idle, Completed, "", testPolicy(), []tev{{0, complete}}},
		{Throttled, Running, "", testPolicy(), []tev{{time.Second, progress}, {31 * time.Second, progress}}},
		{Throttled, Idle, "", testPolicy(), []tev{{stall, tick}}},
		{Throttled, Backoff, "", testPolicy(), []tev{{0, throttle}, {time.Second, timeout}, {2 * time.Second, throttle}}},
		{Throttled, Stalled, "", testPolicy(), []tev{{0, throttle}, {stall, tick}}},
		{Throttled, Cancelling, "", testPolicy(), []tev{{0, cancel}}},
		{Throttled, Completed, "", testPolicy(), []tev{{0, complete}}},
		{Backoff, Idle, "", testPolicy(), []tev{{stall, tick}}},
		{Backoff, Throttled, "", testPolicy(), []tev{{time.Minute, admit}, {time.Minute + time.Second, probed(1, progress)}}},
		{Backoff, Stalled, "", testPolicy(), []tev{{0, throttle}, {stall, tick}}},
		{Backoff, Cancelling, "", testPolicy(), []tev{{0, cancel}}},
		{Backoff, Completed, "", testPolicy(), []tev{{0, complete}}},
		{Stalled, Running, CauseStoreThrottling, testPolicy(), []tev{{0, progress}}},
		{Stalled, Backoff, CauseStoreThrottling, testPolicy(), []tev{{0, progress}}},
		{Stalled, Idle, CauseLoaderIdle, watched(), []tev{{0, heartbeat}}},
		{Stalled, Cancelling, CauseStoreThrottling, testPolicy(), []tev{{stall + grace, tick}}},
		{Stalled, Completed, CauseStoreThrottling, testPolicy(), []tev{{0, complete}}},
		{Cancelling, Cleaning, "", testPolicy(), []tev{{0, succeeded(ActRunCancel)}}},
		{Cancelling, Failed, "", testPolicy(), []tev{{0, failed(ActRunCancel, false)}, {0, failed(ActRunCancel, true)}}},
		{Cleaning, Cancelled, "", testPolicy(), []tev{{0, succeeded(ActRunCleanup)}}},
		{Cleaning, Failed, "", testPolicy(), []tev{{0, failed(ActRunCleanup, true)}}},
		{Cancelled, Running, "", testPolicy(), []tev{{0, reopen}}},
		{Failed, Running, "", testPolicy(), []tev{{0, reopen}}},
	}
	// Edges whose job is restored held, as one that stalled in backoff.
	held := map[[2]State]bool{{Stalled, Backoff}: true}
	covered := map[[2]State]bool{}
	for _, e := range edges {
		t.Run(e.from.String()+"→"+e.to.String(), func(t *testing.T) {
			j := restoredWith(e.from, e.cause, e.p)
			if held[[2]State{e.from, e.to}] {
				j.Hold = true
			}
			for _, x := range e.evs {
				if _, err := j.Step(x.ev, t0.Add(x.at)); err != nil {
					t.Fatalf("%s: %v", x.ev.Type, err)
				}
			}
			tr := j.TakeTransitions()
			if len(tr) != 1 || tr[0].From != e.from || tr[0].To != e.to {
				t.Fatalf("transitions %v, want exactly %s→%s", tr, e.from, e.to)
			}
			if !Legal(e.from, e.to) {
				t.Fatalf("%s→%s is not in the table", e.from, e.to)
			}
			covered[[2]State{e.from, e.to}] = true
		})
	}
	for from, tos := range transitions {
		for _, to := range tos {
			if !covered[[2]State{from, to}] {
				t.Errorf("legal transition %s→%s has no scenario", from, to)
			}
		}
	}
}

// TestStepMatrix steps a job in every state with every event type and
// checks the resulting state or the rejection.
func TestStepMatrix(t *testing.T) {
	const (
		na = "not_accepting"
		te = "transition_error"
	)
	// want[state][event] is the state after the event, or na/te.
	want := map[State]map[EventType]string{
		Pending:    {EvAdmit: "running", EvRelease: "pending", EvProgress: "running", EvThrottle: "throttled", EvUpstreamError: "throttled", EvTick: "pending", EvCancel: "cancelling", EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "pending", EvReopen: te, EvDelete: te},
		Running:    {EvAdmit: "running", EvRelease: "running", EvProgress: "running", EvThrottle: "throttled", EvUpstreamError: "throttled", EvTick: "running", EvCancel: "cancelling", EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "running", EvReopen: te, EvDelete: te},
		Idle:       {EvAdmit: "running", EvRelease: "idle", EvProgress: "running", EvThrottle: "idle", EvUpstreamError: "idle", EvTick: "idle", EvCancel: "cancelling", EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "idle", EvReopen: te, EvDelete: te},
		Throttled:  {EvAdmit: "throttled", EvRelease: "throttled", EvProgress: "throttled", EvThrottle: "throttled", EvUpstreamError: "throttled", EvTick: "throttled", EvCancel: "cancelling", EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "throttled", EvReopen: te, EvDelete: te},
		Backoff:    {EvAdmit: "backoff", EvRelease: "backoff", EvProgress: "backoff", EvThrottle: "backoff", EvUpstreamError: "backoff", EvTick: "backoff", EvCancel: "cancelling", EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "backoff", EvReopen: te, EvDelete: te},
		Stalled:    {EvAdmit: "stalled", EvRelease: "stalled", EvProgress: "running", EvThrottle: "stalled", EvUpstreamError: "stalled", EvTick: "stalled", EvCancel: "cancelling", EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "stalled", EvReopen: te, EvDelete: te},
		Cancelling: {EvAdmit: na, EvRelease: "cancelling", EvProgress: "cancelling", EvThrottle: "cancelling", EvUpstreamError: "cancelling", EvTick: "cancelling", EvCancel: "cancelling", EvActionSucceeded: "cleaning", EvActionFailed: "failed", EvComplete: te, EvHeartbeat: "cancelling", EvReopen: te, EvDelete: te},
		Cleaning:   {EvAdmit: na, EvRelease: "cleaning", EvProgress: "cleaning", EvThrottle: "cleaning", EvUpstreamError: "cleaning", EvTick: "cleaning", EvCancel: "cleaning", EvActionSucceeded: "cancelled", EvActionFailed: "failed", EvComplete: te, EvHeartbeat: "cleaning", EvReopen: te, EvDelete: te},
		Completed:  {EvAdmit: na, EvRelease: "completed", EvProgress: "completed", EvThrottle: "completed", EvUpstreamError: "completed", EvTick: "completed", EvCancel: te, EvActionSucceeded: te, EvActionFailed: te, EvComplete: "completed", EvHeartbeat: "completed", EvReopen: te, EvDelete: "completed"},
		Cancelled:  {EvAdmit: na, EvRelease: "cancelled", EvProgress: "cancelled", EvThrottle: "cancelled", EvUpstreamError: "cancelled", EvTick: "cancelled", EvCancel: "cancelled", EvActionSucceeded: te, EvActionFailed: te, EvComplete: te, EvHeartbeat: "cancelled", EvReopen: "running", EvDelete: "cancelled"},
		Failed:     {EvAdmit: na, EvRelease: "failed", EvProgress: "failed", EvThrottle: "failed", EvUpstreamError: "failed", EvTick: "failed", EvCancel: te, EvActionSucceeded: te, EvActionFailed: te, EvComplete: te, EvHeartbeat: "failed", EvReopen: "running", EvDelete: "failed"},
	}
	for _, s := range States() {
		for et := EvAdmit; et < numEventTypes; et++ {
			t.Run(s.String()+"/"+et.String(), func(t *testing.T) {
				ev := Event{Type: et, Timeout: true, Final: true, Action: ActRunCancel}
				if s == Cleaning {
					ev.Action = ActRunCleanup
				}
				j := restored(s)
				before := j.Snapshot()
				_, err := j.Step(ev, t0)
				var got string
				var nae *NotAcceptingError
				var tre *TransitionError
				switch {
				case errors.As(err, &nae):
					got = na
					if nae.Job != "j" || nae.State != s {
						t.Errorf("NotAcceptingError %+v", nae)
					}
				case errors.As(err, &tre):
					got = te
					if tre.From != s || tre.Event != et || !strings.Contains(err.Error(), `"j"`) {
						t.Errorf("TransitionError %+v: %v", tre, err)
					}
				case err != nil:
					t.Fatalf("unexpected error %v", err)
				default:
					got = j.State.String()
				}
				if got != want[s][et] {
					t.Fatalf("%s + %s = %s, want %s", s, et, got, want[s][et])
				}
				if err != nil && (j.State != before.State || len(j.History) != len(before.History)) {
					t.Fatalf("rejected event changed the job: %v → %v", before.State, j.State)
				}
				if err == nil && j.State != s && !Legal(s, j.State) {
					t.Fatalf("applied illegal transition %s→%s", s, j.State)
				}
			})
		}
	}
}

func TestStepRejectsMalformedEvents(t *testing.T) {
	f := func(name string, ev Event) {
		t.Helper()
		j := restored(Cancelling)
		if _, err := j.Step(ev, t0); err == nil || !strings.HasPrefix(err.Error(), "state: ") {
			t.Errorf("%s: err = %v, want a state: error", name, err)
		}
	}
	f("zero type", Event{})
	f("unknown type", Event{Type: numEventTypes})
	f("action result for persist", Event{Type: EvActionSucceeded, Action: ActPersist})
	f("cleanup result while cancelling", succeeded(ActRunCleanup))
}

func TestBecomeIllegalPanics(t *testing.T) {
	j := restored(Completed)
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.HasPrefix(s, "BUG: ") {
			t.Fatalf("recover() = %v, want a BUG panic", r)
		}
	}()
	j.become(Running, "impossible", t0)
}

// step is one line of a transcript: an event at an offset, the state after
// it and the actions it returns (nil: don't check).
type step struct {
	at    time.Duration
	ev    Event
	state State
	acts  []Action
}

func transcript(t *testing.T, j *Job, steps []step) {
	t.Helper()
	for i, s := range steps {
		acts, err := j.Step(s.ev, t0.Add(s.at))
		if err != nil {
			t.Fatalf("step %d (%s at %s): %v", i, s.ev.Type, s.at, err)
		}
		if j.State != s.state {
			t.Fatalf("step %d (%s at %s): state %s, want %s (reason %q)", i, s.ev.Type, s.at, j.State, s.state, j.Reason)
		}
		if s.acts != nil && !slices.Equal(acts, s.acts) {
			t.Fatalf("step %d (%s at %s): actions %v, want %v", i, s.ev.Type, s.at, acts, s.acts)
		}
	}
}

// TestThrottledForeverTranscript replays a bulk load stuck under throttling in the machine alone: the
// store throttles every write forever.
func TestThrottledForeverTranscript(t *testing.T) {
	j := NewJob("pegasus", testPolicy(), t0, zeroRand)
	m := time.Minute
	transcript(t, j, []step{
		{0, admit, Running, []Action{ActPersist}},
		{0, throttle, Throttled, []Action{ActPersist}},
		{0, admit, Throttled, nil},
		{time.Second, throttle, Throttled, nil},
		{2 * time.Second, throttle, Backoff, []Action{ActPersist}},
		// Held: the first probe slot is BackoffMin later.
		{2 * time.Second, admit, Backoff, []Action{ActHold}},
		{2 * time.Second, release, Backoff, nil}, // the two writes admitted before the hold
		{2 * time.Second, release, Backoff, nil},
		{3 * time.Second, admit, Backoff, nil}, // the probe
		{3 * time.Second, admit, Backoff, []Action{ActHold}},
		{4 * time.Second, probed(1, throttle), Backoff, nil}, // probe throttled: a zero draw waits BackoffMin again
		{4 * time.Second, probed(1, release), Backoff, nil},
		{4500 * time.Millisecond, admit, Backoff, []Action{ActHold}},
		{5 * time.Second, admit, Backoff, nil},
		{6 * time.Second, probed(2, throttle), Backoff, nil},
		{6 * time.Second, probed(2, release), Backoff, nil},
		{5 * m, tick, Stalled, []Action{ActPersist}},
		{5*m + time.Second, tick, Stalled, nil},
		{10*m - time.Second, tick, Stalled, nil},
		{10 * m, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}},
		{10 * m, failed(ActRunCancel, false), Cancelling, nil},
		{10 * m, succeeded(ActRunCancel), Cleaning, []Action{ActPersist, ActRunCleanup}},
		{10 * m, succeeded(ActRunCleanup), Cancelled, []Action{ActPersist}},
	})
	if j.StallCause != CauseStoreThrottling || j.Stalls != 1 || j.Reason != "cleanup_succeeded" {
		t.Fatalf("cause %q stalls %d reason %q", j.StallCause, j.Stalls, j.Reason)
	}
	if _, err := j.Step(admit, t0.Add(11*m)); err == nil {
		t.Fatal("admitted a write to a cancelled job")
	}
	var to []State
	for _, h := range j.History {
		to = append(to, h.To)
	}
	want := []State{Running, Throttled, Backoff, Stalled, Cancelling, Cleaning, Cancelled}
	if !slices.Equal(to, want) {
		t.Fatalf("history %v, want %v", to, want)
	}
}

func TestSlowJobNeverStalls(t *testing.T) {
	f := func(name string, every time.Duration) {
		t.Helper()
		j := NewJob("slow", testPolicy(), t0, zeroRand)
		next := time.Duration(0)
		for at := time.Duration(0); at < 20*j.p.StallAfter; at += time.Second {
			if at >= next {
				if _, err := j.Step(progress, t0.Add(at)); err != nil {
					t.Fatal(err)
				}
				next += every
			}
			if _, err := j.Step(tick, t0.Add(at)); err != nil {
				t.Fatal(err)
			}
			if j.State != Running {
				t.Fatalf("%s: %s at %s (%s)", name, j.State, at, j.Reason)
			}
		}
	}
	f("one ack per second", time.Second)
	f("one ack per StallAfter/2", testPolicy().StallAfter/2)
	f("one ack just inside StallAfter", testPolicy().StallAfter-time.Second)
}

// TestStallCause: what a job saw since its last progress names its stall;
// a job that saw nothing is idle unless something watches it.
func TestStallCause(t *testing.T) {
	f := func(p Policy, wantState State, want StallCause, evs ...Event) {
		t.Helper()
		j := NewJob("c", p, t0, zeroRand)
		for _, ev := range append([]Event{admit, release}, evs...) {
			if _, err := j.Step(ev, t0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := j.Step(tick, t0.Add(j.p.StallAfter)); err != nil {
			t.Fatal(err)
		}
		if j.State != wantState || j.StallCause != want {
			t.Fatalf("%s cause %q, want %s %q", j.State, j.StallCause, wantState, want)
		}
	}
	probed := testPolicy()
	probed.Probed = true
	f(testPolicy(), Idle, "")
	f(watched(), Stalled, CauseLoaderIdle)
	f(probed, Stalled, CauseProbeNoProgress)
	f(testPolicy(), Stalled, CauseStoreThrottling, throttle)
	f(testPolicy(), Stalled, CauseUpstreamTimeouts, timeout, timeout, throttle)
	f(testPolicy(), Stalled, CauseUpstreamErrors, srvErr, srvErr, timeout)
	f(testPolicy(), Stalled, CauseUpstreamUnreachable, unreach, unreach, srvErr)
	f(testPolicy(), Stalled, CauseStoreThrottling, srvErr, throttle, timeout, unreach) // tie: throttling first
	// What failed counts over a watched loader's silence or the probe.
	f(watched(), Stalled, CauseUpstreamErrors, srvErr)
	f(probed, Stalled, CauseStoreThrottling, throttle)
	// Progress resets what was seen: only what came after counts.
	f(testPolicy(), Stalled, CauseUpstreamErrors, throttle, throttle, progress, srvErr)
	f(testPolicy(), Idle, "", throttle, progress)
	// A write still out has yet to say how it went: no verdict.
	j := NewJob("c", testPolicy(), t0, zeroRand)
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{j.p.StallAfter, tick, Running, nil},
		{j.p.StallAfter + time.Second, timeout, Throttled, nil},
		{j.p.StallAfter + time.Second, release, Throttled, nil},
		{j.p.StallAfter + 2*time.Second, tick, Stalled, []Action{ActPersist}},
	})
	if j.StallCause != CauseUpstreamTimeouts {
		t.Fatalf("cause %q, want the timeout's", j.StallCause)
	}
}

func TestStalledRecovery(t *testing.T) {
	p := testPolicy()
	j := NewJob("r", p, t0, zeroRand)
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{0, throttle, Throttled, nil},
		{0, release, Throttled, nil},
		{p.StallAfter, tick, Stalled, nil},
		{p.StallAfter + time.Minute, progress, Running, []Action{ActPersist}},
		{p.StallAfter + p.CancelGrace, tick, Running, nil},
	})
	if j.StallCause != "" {
		t.Fatalf("stall cause %q kept after recovery", j.StallCause)
	}
}

func TestNoAutoCancel(t *testing.T) {
	p := testPolicy()
	p.AutoCancel = false
	j := NewJob("n", p, t0, zeroRand)
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{0, throttle, Throttled, nil},
		{0, release, Throttled, nil},
		{p.StallAfter, tick, Stalled, nil},
		{100 * p.CancelGrace, tick, Stalled, nil},
	})
}

func TestDeadline(t *testing.T) {
	p := testPolicy()
	p.Deadline = time.Hour
	j := NewJob("d", p, t0, zeroRand)
	var steps []step
	for at := time.Duration(0); at < time.Hour; at += time.Minute {
		steps = append(steps, step{at, progress, Running, nil}, step{at, tick, Running, nil})
	}
	// Found writing at its deadline (a job quiet then may have finished:
	// TestDeadlineSparesLoadFinishedJustBefore).
	steps = append(steps, step{time.Hour, progress, Running, nil},
		step{time.Hour, tick, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}})
	transcript(t, j, steps)
	if j.Reason != "deadline_exceeded" {
		t.Fatalf("reason %q", j.Reason)
	}
}

func TestCancelForceAndSkip(t *testing.T) {
	f := func(name string, force bool, steps []step, reason string) {
		t.Helper()
		j := NewJob(name, testPolicy(), t0, zeroRand)
		transcript(t, j, append([]step{{0, Event{Type: EvCancel, Force: force, Reason: "operator"}, Cancelling, []Action{ActPersist, ActAbortInflight, ActRunCancel}}}, steps...))
		if j.Reason != reason {
			t.Fatalf("%s: reason %q, want %q", name, j.Reason, reason)
		}
	}
	f("cancel fails", false, []step{{0, failed(ActRunCancel, true), Failed, []Action{ActPersist}}}, "cancel_failed")
	f("forced cancel fails: cleanup anyway", true, []step{
		{0, failed(ActRunCancel, true), Cleaning, []Action{ActPersist, ActRunCleanup}},
		{0, succeeded(ActRunCleanup), Cancelled, nil},
	}, "cleanup_succeeded")
	f("force upgrades a running cancel", false, []step{
		{0, Event{Type: EvCancel, Force: true}, Cancelling, []Action{ActPersist}},
		{0, failed(ActRunCancel, true), Cleaning, nil},
	}, "cancel_failed_forced")
	f("cleanup fails", false, []step{
		{0, succeeded(ActRunCancel), Cleaning, nil},
		{0, failed(ActRunCleanup, true), Failed, nil},
	}, "cleanup_failed")
	f("skipped actions", false, []step{
		{0, Event{Type: EvActionSucceeded, Action: ActRunCancel, Skipped: true}, Cleaning, nil},
		{0, Event{Type: EvActionSucceeded, Action: ActRunCleanup, Skipped: true}, Cancelled, nil},
	}, "cleanup skipped: no action configured")
}

// TestRestoreNeverCancels: a job stalled long before the restart gets a full
// stall window plus grace after it; one that was merely quiet is idle and
// is never cancelled at all.
func TestRestoreNeverCancels(t *testing.T) {
	p := testPolicy()
	restart := t0.Add(10 * time.Hour)
	for _, s := range []State{Pending, Running, Idle, Throttled, Backoff, Stalled} {
		for _, seen := range []Event{{}, throttle} {
			t.Run(s.String()+"/"+seen.Type.String(), func(t *testing.T) {
				ms := MachineState{State: s, Since: t0, Created: t0}
				if s == Stalled {
					ms.StallCause = CauseStoreThrottling
				}
				j := RestoreJob("r", ms, p, restart, zeroRand)
				if acts := j.Resume(); acts != nil {
					t.Fatalf("Resume() = %v", acts)
				}
				if seen.Type != 0 {
					if _, err := j.Step(seen, restart); err != nil {
						t.Fatal(err)
					}
				}
				for at := time.Duration(0); at < p.StallAfter+p.CancelGrace; at += time.Second {
					if _, err := j.Step(tick, restart.Add(at)); err != nil {
						t.Fatal(err)
					}
					if !j.State.Accepting() {
						t.Fatalf("%s at restart+%s", j.State, at)
					}
				}
				if _, err := j.Step(tick, restart.Add(p.StallAfter+p.CancelGrace)); err != nil {
					t.Fatal(err)
				}
				switch {
				case s == Stalled || seen.Type != 0:
					if j.State != Cancelling || j.Reason != "stalled" {
						t.Fatalf("%s (%s) after a full stall window and grace, want cancelling", j.State, j.Reason)
					}
				case j.State != Idle:
					t.Fatalf("%s (%s) after a full stall window and grace without a write, want idle", j.State, j.Reason)
				}
			})
		}
	}
	for s, want := range map[State][]Action{Cancelling: {ActAbortInflight, ActRunCancel}, Cleaning: {ActRunCleanup}} {
		if got := RestoreJob("r", MachineState{State: s}, p, restart, nil).Resume(); !slices.Equal(got, want) {
			t.Errorf("Resume() in %s = %v, want %v", s, got, want)
		}
	}
}

func TestBackoffProbes(t *testing.T) {
	j := NewJob("b", testPolicy(), t0, func() float64 { return 0.5 })
	// Throttles amid progress never hold the job; throttles in a row with
	// no progress for BackoffQuiet do.
	transcript(t, j, []step{
		{0, admit, Running, nil},
		{0, retryAfter(time.Second), Throttled, nil},
		{500 * time.Millisecond, progress, Throttled, nil},
		{time.Second, retryAfter(time.Second), Throttled, nil},
		{1500 * time.Millisecond, throttle, Throttled, nil},
		{2 * time.Second, throttle, Throttled, nil},
		{2500 * time.Millisecond, retryAfter(10 * time.Minute), Backoff, nil},
	})
	// Retry-After is clamped to the backoff's Max.
	const held = 2500 * time.Millisecond
	if got := j.ProbeAt().Sub(t0); got != held+time.Minute {
		t.Fatalf("probe at +%s, want +1m after the hold (clamped Retry-After)", got)
	}
	// Results of writes admitted before the hold do not advance the schedule.
	transcript(t, j, []step{{held + time.Second, throttle, Backoff, nil}, {held + time.Second, progress, Backoff, nil}, {held + time.Second, release, Backoff, nil}})
	if got := j.ProbeAt().Sub(t0); got != held+time.Minute {
		t.Fatalf("probe at +%s after an old write's answer", got)
	}
	// Probe windows double up to Max; a draw of one half waits Min plus
	// half the rest of the window. The clamped Retry-After was attempt 0.
	at := held + time.Minute
	var delays []time.Duration
	for n := range uint64(8) {
		transcript(t, j, []step{{at, admit, Backoff, nil}, {at, probed(n+1, throttle), Backoff, nil}, {at, probed(n+1, release), Backoff, nil}})
		d := j.ProbeAt().Sub(t0.Add(at))
		delays = append(delays, d)
		at += d
	}
	ms := time.Millisecond
	want := []time.Duration{2500 * ms, 4500 * ms, 8500 * ms, 16500 * ms, 30500 * ms, 30500 * ms, 30500 * ms, 30500 * ms}
	if !slices.Equal(delays, want) {
		t.Fatalf("probe delays %v, want %v", delays, want)
	}
	// A probe whose attempt ended without a result frees the slot.
	at += 2 * time.Minute // past StallAfter without progress
	transcript(t, j, []step{{at, tick, Stalled, nil}, {at, admit, Stalled, nil}, {at, admit, Stalled, []Action{ActHold}}, {at, probed(9, release), Stalled, nil}, {at, admit, Stalled, nil}})
	// A successful probe releases the hold.
	transcript(t, j, []step{{at, probed(10, progress), Running, nil}, {at, admit, Running, nil}, {at, admit, Running, nil}})
}

func TestStateNames(t *testing.T) {
	for _, s := range States() {
		got, err := ParseState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v", s, got, err)
		}
		b, err := s.MarshalText()
		if err != nil || string(b) != s.String() {
			t.Errorf("MarshalText(%v) = %s, %v", s, b, err)
		}
	}
	if _, err := ParseState("bogus"); err == nil {
		t.Error("ParseState(bogus) succeeded")
	}
	if got := fmt.Sprint(State(200)); got != "state(200)" {
		t.Errorf("String of an invalid state = %q", got)
	}
	var terminal []State
	for _, s := range States() {
		if s.Terminal() {
			terminal = append(terminal, s)
		}
	}
	if !slices.Equal(terminal, []State{Completed, Cancelled, Failed}) {
		t.Errorf("terminal states %v", terminal)
	}
	// Only an operator's reopen leaves a terminal state.
	for _, s := range terminal {
		if tos := transitions[s]; len(tos) > 1 || len(tos) == 1 && tos[0] != Running {
			t.Errorf("terminal %s has transitions %v", s, tos)
		}
	}
}
