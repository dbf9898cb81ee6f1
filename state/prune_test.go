package state

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestPruneSkipsJobReopenedSinceTheTick: Tick lists the terminal jobs past
// Retention under the lock, releases it (and storeMu) to commit and start
// actions, and prunes the list afterwards. A job reopened in between (an
// operator's reopen, which commits a running record) is live again: prune
// must not delete its record and forget it, or its state is lost at the
// next restart and the live count, never decremented, keeps a slot of
// MaxJobs taken for ever.
func TestPruneSkipsJobReopenedSinceTheTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &MemStore{}
		m := newTestManager(t, Config{Store: st, Retention: time.Hour, MaxJobs: 1})
		defer m.Close()
		write(t, m, "a", ack)
		if _, err := m.Cancel("a", false, "operator"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // no actions configured: skipped, cancelled
		if v := mustGet(t, m, "a"); v.State != Cancelled {
			t.Fatalf("%s, want cancelled", v.State)
		}
		time.Sleep(time.Hour)
		// What Tick(now) lists for pruning under the lock...
		var prune []string
		m.mu.Lock()
		for id, e := range m.jobs {
			if m.expiredLocked(e, time.Now()) {
				prune = append(prune, id)
			}
		}
		m.mu.Unlock()
		if len(prune) != 1 {
			t.Fatalf("prune list %v", prune)
		}
		// ...an operator reopens the job before Tick gets to prune it...
		if _, err := m.Reopen("a", "fixed"); err != nil {
			t.Fatal(err)
		}
		// ...and Tick prunes its list.
		m.prune(prune, time.Now())
		if v, err := m.Get("a"); err != nil || v.State != Running {
			t.Fatalf("reopened job after the prune: %v %v; want it running, not forgotten", v.State, err)
		}
		if storedState(t, st, "a") != Running {
			t.Fatal("reopened job's record not running")
		}
		// A slot of MaxJobs is still the reopened job's and only its.
		if _, err := m.Complete("a"); err != nil {
			t.Fatal(err)
		}
		write(t, m, "b", ack)
	})
}
