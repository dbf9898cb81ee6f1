package state

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

// abandonedWrites writes for job id for the span d the way a loader whose
// client times out after wait, in front of a store that answers nothing,
// does: each write is sent, given up unanswered after wait (the proxy
// reports ObsAbandoned), and sent again a second later.
func abandonedWrites(t *testing.T, m *Manager, id string, wait, d time.Duration) map[State]bool {
	t.Helper()
	seen := map[State]bool{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		_, release, err := m.Admit(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(wait)
		m.Observe(id, Observation{Kind: ObsAbandoned, Items: -1})
		release()
		time.Sleep(time.Second)
		seen[mustGet(t, m, id).State] = true
	}
	return seen
}

// TestAbandonedWritesStallTheJob: the store takes writes and never
// answers; the loader's client gives up on each after 10s, before sluice's
// upstream timeout (30s), and sends it again. The job sees no outcome of
// sluice's own, only the loader giving up, over and over: it is trying and
// getting nothing through, so it stalls with upstream_timeouts, as it
// would had sluice's own timeout ended each write. (Before, it went
// between running and idle for ever: no alert, no cancel.)
func TestAbandonedWritesStallTheJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		off := false // to see the stall, not the cancel that follows it
		m := newTestManager(t, Config{Defaults: Settings{AutoCancel: &off}})
		stop := running(t, m)
		defer stop()
		write(t, m, "bulk", ack) // the store was fine
		seen := abandonedWrites(t, m, "bulk", 10*time.Second, DefaultStallAfter+time.Minute)
		v := mustGet(t, m, "bulk")
		if v.State != Stalled || v.StallCause != CauseUpstreamTimeouts {
			t.Fatalf("a job whose every write was given up unanswered for %v: %s (cause %q), states seen %v; want stalled, upstream_timeouts",
				DefaultStallAfter+time.Minute, v.State, v.StallCause, seen)
		}
		if seen[Idle] {
			t.Errorf("the job was idle on the way (states seen %v): its loader never stopped writing", seen)
		}
		if v.Totals.Timeouts == 0 {
			t.Error("the abandoned writes are not among the job's timeouts")
		}
		// Progress ends it.
		write(t, m, "bulk", ack)
		if v := mustGet(t, m, "bulk"); v.State != Running {
			t.Errorf("after an acknowledged write: %s, want running", v.State)
		}
	})
}

// TestAbandonedLastWritesLeaveTheJobIdle: a loader stopped with writes in
// flight (its process killed at the end of a load, its client's requests
// cancelled) gives them up unanswered and writes nothing more. That is a
// load that finished as far as anyone can tell: the job goes idle, is
// never stalled, and its cancel and cleanup (which would delete what it
// loaded) never run, whatever causes are allowed to cancel it.
func TestAbandonedLastWritesLeaveTheJobIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &storeAPI{}
		m := newTestManager(t, Config{Defaults: pegasusActions(), HTTPClient: &http.Client{Transport: api}})
		stop := running(t, m)
		defer stop()
		write(t, m, "bulk", ack)
		var releases []func()
		for range 8 {
			_, release, err := m.Admit(context.Background(), "bulk")
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		time.Sleep(200 * time.Millisecond)
		for _, release := range releases {
			m.Observe("bulk", Observation{Kind: ObsAbandoned, Items: -1})
			release()
		}
		time.Sleep(DefaultStallAfter + DefaultCancelGrace + time.Hour)
		v := mustGet(t, m, "bulk")
		if v.State != Idle || v.Stalls != 0 {
			t.Fatalf("a load whose loader stopped with writes in flight: %s, %d stalls, history %v; want idle, never stalled", v.State, v.Stalls, historyTo(v))
		}
		if calls := api.Calls(); len(calls) != 0 {
			t.Errorf("cancel or cleanup ran for a finished load: %v", calls)
		}
	})
}

// TestAbandonedWritesOfAStoppedRunDoNotStallTheNext: a loader stopped
// with writes in flight (they are given up unanswered), its job idle for
// hours, is started again. Its first write must not stall the job on the
// old run's abandoned writes: the stall clock is as old as the last
// progress, so the next tick would call the job stalled (upstream_timeouts)
// at once, and, with no grace, cancel it and run its cleanup before the
// store has even answered the new write. The same for a loader that
// promised heartbeats and fell silent (stalled, loader_idle).
func TestAbandonedWritesOfAStoppedRunDoNotStallTheNext(t *testing.T) {
	abandoned := Event{Type: EvUpstreamError, Timeout: true, Abandoned: true}
	for name, p := range map[string]Policy{"idle": testPolicy(), "loader_idle": watched()} {
		t.Run(name, func(t *testing.T) {
			p.CancelGrace = 0
			quiet := Idle
			if p.HeartbeatInterval > 0 {
				quiet = Stalled
			}
			j := NewJob("bulk", p, t0, zeroRand)
			transcript(t, j, []step{
				{0, admit, Running, nil},
				{0, progress, Running, nil},
				{0, release, Running, nil},
				{time.Second, admit, Running, nil},
				{2 * time.Second, abandoned, Running, nil},
				{2 * time.Second, release, Running, nil},
				{p.StallAfter + time.Second, tick, quiet, nil},
				{3 * time.Hour, admit, Running, nil},
				// The new run's first write, not answered yet.
				{3*time.Hour + time.Second, tick, Running, nil},
			})
		})
	}
}

// TestResumedRunIsJudgedFromItsResumption: a loader idle for hours (or
// one that promised heartbeats and fell silent) writes again, and its
// first write is throttled once, the proxy retrying it. The job has not
// gone without progress for StallAfter since it began trying: it is
// throttled, not stalled, and not cancelled CancelGrace later. Its stall
// clock used to be as old as the last run's progress, so the next tick
// called it stalled at once (an alert for one 429) and the grace alone
// stood between the job and its cancel and cleanup.
func TestResumedRunIsJudgedFromItsResumption(t *testing.T) {
	for name, p := range map[string]Policy{"idle": testPolicy(), "loader_idle": watched()} {
		t.Run(name, func(t *testing.T) {
			quiet := Idle
			if p.HeartbeatInterval > 0 {
				quiet = Stalled
			}
			j := NewJob("bulk", p, t0, zeroRand)
			transcript(t, j, []step{
				{0, admit, Running, nil},
				{0, progress, Running, nil},
				{0, release, Running, nil},
				{p.StallAfter + time.Second, tick, quiet, nil},
				{3 * time.Hour, admit, Running, nil},
				{3*time.Hour + time.Second, throttle, Throttled, nil},
				{3*time.Hour + 2*time.Second, tick, Throttled, nil},
			})
			// Throttled on every attempt since: not stalled before a full
			// window from the resumption.
			for at := 3*time.Hour + 3*time.Second; at < 3*time.Hour+p.StallAfter; at += time.Second {
				if _, err := j.Step(throttle, t0.Add(at)); err != nil {
					t.Fatal(err)
				}
				if _, err := j.Step(tick, t0.Add(at)); err != nil {
					t.Fatal(err)
				}
				if j.State == Stalled || !j.State.Accepting() {
					t.Fatalf("%s (%s) at %s, %s after the resumption", j.State, j.StallCause, at, at-3*time.Hour)
				}
			}
		})
	}
}

// TestAbandonedProbeMovesTheSchedule: in Backoff, a probe whose attempt
// the loader gave up on (the store did not answer within the loader's
// timeout) moves the probe schedule as one that timed out in sluice does.
// It used to leave it, so with a loader timeout of 2 s the held job sent
// a probe every 2 s for as long as the store hung (299 in 10 minutes,
// against 22), where the schedule backs off to a minute.
func TestAbandonedProbeMovesTheSchedule(t *testing.T) {
	half := func() float64 { return 0.5 }
	count := func(fail Event) int {
		j := NewJob("j", testPolicy(), t0, half)
		transcript(t, j, append(intoBackoff(1), step{2 * time.Second, release, Backoff, nil}))
		at := j.ProbeAt().Sub(t0)
		probes := 0
		for i := uint64(1); at < 10*time.Minute; i++ {
			if _, err := j.Step(admit, t0.Add(at)); err != nil || j.Probe() != i {
				t.Fatalf("probe %d not admitted at %s (%v, %d)", i, at, err, j.Probe())
			}
			probes++
			at += 2 * time.Second // unanswered within the loader's timeout
			j.Step(probed(i, fail), t0.Add(at))
			j.Step(probed(i, release), t0.Add(at))
			if next := j.ProbeAt().Sub(t0); next > at {
				at = next
			}
		}
		return probes
	}
	timedOut := count(Event{Type: EvUpstreamError, Timeout: true})
	abandoned := count(Event{Type: EvUpstreamError, Timeout: true, Abandoned: true})
	if abandoned > timedOut+1 {
		t.Errorf("abandoned probes are not backed off: %d probes vs %d", abandoned, timedOut)
	}
}
