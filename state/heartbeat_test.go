package state

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A round of the job manager's loop held up (here by a state store that
// hangs) stops stall detection, cancels and persistence while the proxy
// still serves; the heartbeat, and its series, stop with it, so that the
// shipped alert sees it. It runs again once the round ends.
func TestHeartbeatStopsWithTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		st := &gateStore{open: make(chan struct{})}
		m := newTestManager(t, Config{Store: st, Registerer: reg})
		if !m.Heartbeat().IsZero() {
			t.Fatalf("heartbeat %v before Run, want none", m.Heartbeat())
		}
		if _, ok := gather(t, reg)["sluice_jobs_heartbeat_timestamp_seconds"]; ok {
			t.Error("a heartbeat series before Run")
		}
		stop := running(t, m)
		openOnce := sync.OnceFunc(func() { close(st.open) })
		defer func() { openOnce(); stop() }()
		start := time.Now()
		synctest.Wait()
		if hb := m.Heartbeat(); !hb.Equal(start) {
			t.Errorf("heartbeat %v at Run's start %v: a first round that hangs must show", hb, start)
		}
		time.Sleep(2500 * time.Millisecond)
		if age := time.Since(m.Heartbeat()); age > time.Second {
			t.Fatalf("heartbeat %v old while the loop runs, want within its 1s round", age)
		}
		if _, err := m.Register("j", Settings{}); err != nil {
			t.Fatal(err)
		}
		m.Observe("j", Observation{Kind: ObsOK, Bytes: 1}) // running, written at once
		m.Observe("j", Observation{Kind: ObsOK, Bytes: 1}) // a change for the next round to write
		st.hang.Store(true)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		age := time.Since(m.Heartbeat())
		if age < 9*time.Second {
			t.Errorf("heartbeat %v old with every round held up for 10s, want it stopped", age)
		}
		if got, want := gather(t, reg)["sluice_jobs_heartbeat_timestamp_seconds"], float64(m.Heartbeat().UnixNano())/1e9; got != want {
			t.Errorf("sluice_jobs_heartbeat_timestamp_seconds %v, want %v", got, want)
		}
		st.hang.Store(false)
		openOnce()
		time.Sleep(1500 * time.Millisecond)
		if age := time.Since(m.Heartbeat()); age > time.Second {
			t.Errorf("heartbeat %v old once the store answers again, want within its 1s round", age)
		}
	})
}

// A write waits for the state store at most a second for each change of
// its job's state: with a volume that hangs, a new job's first write, its answer and its release go through,
// and the job's record is written once the store answers again.
func TestWritesWaitForTheStateStoreWithinASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		st := &gateStore{open: make(chan struct{})}
		m := newTestManager(t, Config{Store: st, Registerer: reg})
		openOnce := sync.OnceFunc(func() { close(st.open) })
		defer func() { openOnce(); m.Close() }()
		st.hang.Store(true)
		done := make(chan struct{})
		start := time.Now()
		var took time.Duration
		go func() {
			defer close(done)
			_, release, err := m.Admit(context.Background(), "j")
			if err != nil {
				t.Error(err)
				return
			}
			m.Observe("j", Observation{Kind: ObsOK, Bytes: 1})
			release()
			// Another new job: the store's lock is still held.
			_, release, err = m.Admit(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			release()
			took = time.Since(start)
		}()
		time.Sleep(10 * time.Second)
		select {
		case <-done:
		default:
			t.Fatal("a write waited 10s for a state store that hangs")
		}
		if took != 2*writeWait {
			t.Errorf("the writes took %v with the store hanging, want %v: a second for each of the two new jobs", took, 2*writeWait)
		}
		// j's record was still being committed when its write's second
		// ran out (its answer changed no state); k's write never got the
		// store's lock.
		if got := gather(t, reg)["sluice_state_writes_deferred_total"]; got != 2 {
			t.Errorf("sluice_state_writes_deferred_total %v, want 2: a write that goes on unsaved is counted", got)
		}
		st.hang.Store(false)
		openOnce()
		synctest.Wait()
		m.Tick(time.Now())
		for _, id := range []string{"j", "k"} {
			if got := storedState(t, st, id); got != Running {
				t.Errorf("%s stored %s once the store answers, want running", id, got)
			}
		}
	})
}

// TestRegistrationStartsTheHeartbeatClock: a job left idle by a finished
// run is registered again by the loader's next run, now with a heartbeat
// interval. The registration is the loader speaking: the interval runs
// from it. It used to run from the last run's heartbeat, hours old, and
// the next tick, before the loader's first write, stalled the job
// (loader_idle): an alert, and with loader_idle among its causes a cancel,
// for a loader that was alive and about to write. Past the interval
// without a word, it is stalled as before.
func TestRegistrationStartsTheHeartbeatClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newTestManager(t, Config{})
		defer m.Close()
		_, release, err := m.Admit(context.Background(), "nightly")
		if err != nil {
			t.Fatal(err)
		}
		m.Observe("nightly", Observation{Kind: ObsOK, Bytes: 1})
		release()
		time.Sleep(DefaultStallAfter + time.Second)
		m.Tick(time.Now())
		if s := mustGet(t, m, "nightly").State; s != Idle {
			t.Fatalf("after the run: %s, want idle", s)
		}
		time.Sleep(2 * time.Hour)
		// The next run registers the job, watched by heartbeats.
		if _, err := m.Register("nightly", Settings{HeartbeatInterval: time.Minute}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		m.Tick(time.Now())
		if v := mustGet(t, m, "nightly"); v.State != Idle {
			t.Errorf("a second after its loader registered it: %s (%s), cause %q; want idle", v.State, v.Reason, v.StallCause)
		}
		time.Sleep(time.Minute)
		m.Tick(time.Now())
		if v := mustGet(t, m, "nightly"); v.State != Stalled || v.StallCause != CauseLoaderIdle {
			t.Errorf("a minute after its registration, not a word: %s (%s), cause %q; want stalled, loader_idle", v.State, v.Reason, v.StallCause)
		}
	})
}
