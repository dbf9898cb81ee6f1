package state

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// The probe of a held job is one write: its own answers decide it, and
// nothing else does. These transcripts enter the hold at 2s with n writes
// admitted before it still in flight; the first probe slot is at 3s.

// intoBackoff returns the steps of a job that admits n writes, then is
// throttled three times in a row with no progress for BackoffQuiet.
func intoBackoff(n int) []step {
	var s []step
	for range n {
		s = append(s, step{0, admit, Running, nil})
	}
	return append(s,
		step{0, throttle, Throttled, nil},
		step{time.Second, throttle, Throttled, nil},
		step{2 * time.Second, throttle, Backoff, []Action{ActPersist}},
	)
}

const slot = 3 * time.Second // the first probe slot of intoBackoff

func checkProbeAt(t *testing.T, j *Job, want time.Duration) {
	t.Helper()
	if got := j.ProbeAt().Sub(t0); got != want {
		t.Fatalf("next probe slot at +%s, want +%s", got, want)
	}
}

func TestProbeNotFailedByOtherWrites(t *testing.T) {
	j := NewJob("j", testPolicy(), t0, zeroRand)
	transcript(t, j, append(intoBackoff(1), []step{
		// The slot has come but the write admitted before the hold is
		// still out: the probe waits for it.
		{slot, admit, Backoff, []Action{ActHold}},
		// That write's throttle is not the probe's failure.
		{slot, throttle, Backoff, nil},
		{slot, release, Backoff, nil},
	}...))
	checkProbeAt(t, j, slot)
	transcript(t, j, []step{
		{slot, admit, Backoff, nil}, // the probe
		// Answers not stamped as the probe's fail nothing either.
		{slot + 100*time.Millisecond, throttle, Backoff, nil},
		{slot + 200*time.Millisecond, timeout, Backoff, nil},
		{slot + 300*time.Millisecond, srvErr, Backoff, nil},
	})
	checkProbeAt(t, j, slot)
	transcript(t, j, []step{
		{slot + time.Second, probed(1, progress), Throttled, []Action{ActPersist}},
	})
	if j.Hold || j.Reason != "probe_succeeded" {
		t.Fatalf("hold %v, reason %q after the probe succeeded", j.Hold, j.Reason)
	}
}

func TestProbeNotFreedByOtherRelease(t *testing.T) {
	j := NewJob("j", testPolicy(), t0, zeroRand)
	transcript(t, j, append(intoBackoff(2), []step{
		{slot, admit, Backoff, []Action{ActHold}},
		// One of the writes admitted before the hold ends; the other is
		// still out.
		{slot, release, Backoff, nil},
		{slot, admit, Backoff, []Action{ActHold}},
		{slot, release, Backoff, nil},
		{slot, admit, Backoff, nil}, // the probe, alone
		{slot, admit, Backoff, []Action{ActHold}},
		// A release not stamped as the probe's does not free its slot.
		{slot, release, Backoff, nil},
		{slot, admit, Backoff, []Action{ActHold}},
		// The probe ended without an answer: the next one may go.
		{slot + time.Second, probed(1, release), Backoff, nil},
		{slot + time.Second, admit, Backoff, nil},
		{slot + time.Second, admit, Backoff, []Action{ActHold}},
		// The first probe's id no longer frees anything.
		{slot + time.Second, probed(1, release), Backoff, nil},
		{slot + time.Second, admit, Backoff, []Action{ActHold}},
	}...))
	if j.Probe() != 2 {
		t.Fatalf("probe in flight %d, want 2", j.Probe())
	}
}

func TestProbeOwnSuccessEndsHold(t *testing.T) {
	j := NewJob("j", testPolicy(), t0, zeroRand)
	transcript(t, j, append(intoBackoff(1), []step{
		{2 * time.Second, release, Backoff, nil},
		{slot, admit, Backoff, nil}, // the probe
		// Progress the probe did not make (the loader's report, a
		// progress probe) keeps the job from stalling but ends no hold.
		{slot, progress, Backoff, nil},
		// The probe's first attempt is throttled; the proxy tries it
		// again, and the store takes it: the store accepts writes again.
		{slot + 100*time.Millisecond, probed(1, throttle), Backoff, nil},
		{slot + time.Second, probed(1, progress), Throttled, []Action{ActPersist}},
		{slot + time.Second, admit, Throttled, nil},
		{slot + time.Second, probed(1, release), Throttled, nil},
		{slot + time.Second, admit, Throttled, nil},
	}...))
	if j.Hold || j.Probe() != 0 || j.Reason != "probe_succeeded" {
		t.Fatalf("hold %v, probe %d, reason %q", j.Hold, j.Probe(), j.Reason)
	}
}

func TestProbeOwnFailureExtendsBackoff(t *testing.T) {
	j := NewJob("j", testPolicy(), t0, zeroRand)
	transcript(t, j, append(intoBackoff(0), []step{
		{slot, admit, Backoff, nil}, // probe 1
		// Throttled: the next slot is a new draw (zero: BackoffMin) later.
		{slot + time.Second, probed(1, throttle), Backoff, nil},
		// Its retry is throttled too: still the one probe, one step.
		{slot + 1500*time.Millisecond, probed(1, throttle), Backoff, nil},
	}...))
	checkProbeAt(t, j, 5*time.Second)
	transcript(t, j, []step{
		// The slot has come, but probe 1 is still out: no second probe.
		{6 * time.Second, admit, Backoff, []Action{ActHold}},
		{6500 * time.Millisecond, probed(1, release), Backoff, nil},
		{6500 * time.Millisecond, admit, Backoff, nil}, // probe 2
		// Its Retry-After sets the next slot.
		{7 * time.Second, probed(2, retryAfter(10*time.Second)), Backoff, nil},
		{7 * time.Second, probed(2, release), Backoff, nil},
		{16 * time.Second, admit, Backoff, []Action{ActHold}},
		{17 * time.Second, admit, Backoff, nil}, // probe 3
	})
	// Timed out: the schedule goes on from where it was, the Retry-After
	// counting as a step: attempt 3, a window of [1s, 16s), of which a
	// draw of one half waits 8.5s.
	j.rnd = func() float64 { return 0.5 }
	transcript(t, j, []step{{18 * time.Second, probed(3, timeout), Backoff, nil}})
	checkProbeAt(t, j, 26500*time.Millisecond)
}

// TestManagerProbeIsTheProbesWrite: through Admit, Observe and release, a
// write admitted before the hold neither fails the probe nor lets a second
// one in, and the probe's own success ends the hold.
func TestManagerProbeIsTheProbesWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTestManager(t, Config{})
		defer m.Close()
		ctx := context.Background()
		type admission struct {
			release func()
			err     error
		}
		// admitted asks for a write in a goroutine, as the proxy does.
		admitted := func() <-chan admission {
			ch := make(chan admission, 1)
			go func() {
				_, release, err := m.Admit(ctx, "j")
				ch <- admission{release, err}
			}()
			return ch
		}
		got := func(ch <-chan admission) func() {
			t.Helper()
			a := <-ch
			if a.err != nil {
				t.Fatal(a.err)
			}
			return a.release
		}
		// w is admitted while the job runs; then the store throttles every
		// write for BackoffQuiet and the job is held.
		_, releaseW, err := m.Admit(ctx, "j")
		if err != nil {
			t.Fatal(err)
		}
		for i := range DefaultBackoffAfter {
			if i > 0 {
				time.Sleep(DefaultBackoffQuiet / (DefaultBackoffAfter - 1))
			}
			m.Observe("j", Observation{Kind: ObsThrottled})
		}
		if s := mustGet(t, m, "j").State; s != Backoff {
			t.Fatalf("%s, want backoff", s)
		}
		time.Sleep(2 * DefaultBackoffMin) // past the first probe slot, whatever the draw
		probe := admitted()
		synctest.Wait()
		// w's last attempt is throttled, and w ends.
		m.Observe("j", Observation{Kind: ObsThrottled})
		releaseW()
		releaseProbe := got(probe)
		second := admitted()
		synctest.Wait()
		select {
		case a := <-second:
			t.Fatalf("a second probe got in while the first was in flight (err %v)", a.err)
		default:
		}
		m.Observe("j", Observation{Kind: ObsOK, Bytes: 10, Items: 1}) // the probe's answer
		if v := mustGet(t, m, "j"); v.State != Throttled || v.Reason != "probe_succeeded" {
			t.Fatalf("%s (%s) after the probe succeeded, want throttled (probe_succeeded)", v.State, v.Reason)
		}
		got(second)()
		releaseProbe()
	})
}

// TestHeldStalledJobStaysHeld: a job that stalls in backoff stays held,
// but any progress moved it to running, which lets every write through.
// Progress that is not the probe's (a write admitted before the hold that
// lands late, the loader's report, the progress probe) says nothing of
// the store now: in backoff it ends no hold, and a stall must not make it
// do so. The stall ends; the job is held again, its schedule as it was.
func TestHeldStalledJobStaysHeld(t *testing.T) {
	j := NewJob("j", testPolicy(), t0, zeroRand)
	const stall = 5 * time.Minute // testPolicy's StallAfter
	transcript(t, j, append(intoBackoff(1), []step{
		// The write admitted before the hold is still out; the store
		// refused the rest, and the job stalls, held.
		{stall, tick, Stalled, []Action{ActPersist}},
		// That write lands at last.
		{stall + time.Second, progress, Backoff, []Action{ActPersist}},
		{stall + time.Second, admit, Backoff, []Action{ActHold}},
		{stall + time.Second, release, Backoff, nil},
		{stall + time.Second, admit, Backoff, nil}, // the probe
		{stall + time.Second, admit, Backoff, []Action{ActHold}},
	}...))
	if !j.Hold || j.StallCause != "" || j.Reason != "progress_while_held" {
		t.Fatalf("hold %v, cause %q, reason %q after progress not the probe's", j.Hold, j.StallCause, j.Reason)
	}
	// No progress for StallAfter again: stalled, held. The loader's
	// report, while the probe is out, still ends no hold; the probe's own
	// success does.
	at := 2*stall + time.Second
	transcript(t, j, []step{
		{at, probed(1, throttle), Backoff, nil},
		{at, tick, Stalled, []Action{ActPersist}},
		{at + time.Second, progress, Backoff, []Action{ActPersist}},
		{at + time.Second, admit, Backoff, []Action{ActHold}},
		{at + 2*time.Second, probed(1, progress), Throttled, []Action{ActPersist}},
		{at + 2*time.Second, admit, Throttled, nil},
	})
}

// TestManagerHeldStalledJobKeepsItsWrites: through the Manager, a
// progress report from the loader of a job stalled in backoff let the
// write waiting for the probe slot through at once, and every other held
// write with it.
func TestManagerHeldStalledJobKeepsItsWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTestManager(t, Config{})
		defer m.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// w is admitted while the job runs and stays out; the store
		// throttles every other write, and the job is held, then stalled.
		_, releaseW, err := m.Admit(ctx, "j")
		if err != nil {
			t.Fatal(err)
		}
		defer releaseW()
		for i := range DefaultBackoffAfter {
			if i > 0 {
				time.Sleep(DefaultBackoffQuiet / (DefaultBackoffAfter - 1))
			}
			m.Observe("j", Observation{Kind: ObsThrottled})
		}
		time.Sleep(DefaultStallAfter)
		m.Tick(time.Now())
		if v := mustGet(t, m, "j"); v.State != Stalled {
			t.Fatalf("%s, want stalled", v.State)
		}
		admitted := make(chan error, 1)
		go func() {
			_, release, err := m.Admit(ctx, "j")
			if err == nil {
				release()
			}
			admitted <- err
		}()
		synctest.Wait()
		if _, err := m.ReportProgress("j", Progress{Records: 100}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		select {
		case err := <-admitted:
			t.Fatalf("a held write got through on the loader's report (err %v), job %s", err, mustGet(t, m, "j").State)
		default:
		}
		if v := mustGet(t, m, "j"); v.State != Backoff || v.Reason != "progress_while_held" {
			t.Fatalf("%s (%s) after the loader's report, want backoff (progress_while_held)", v.State, v.Reason)
		}
		cancel()
		if err := <-admitted; !errors.Is(err, context.Canceled) {
			t.Fatalf("held write: %v, want context.Canceled", err)
		}
	})
}
