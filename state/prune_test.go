package state

import (
	"net/http"
	"strconv"
	"strings"
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
		m.mu.Lock()
		var finished []*entry
		for _, e := range m.jobs {
			finished = append(finished, e)
		}
		prune := m.dueLocked(finished, time.Now())
		m.mu.Unlock()
		if len(prune) != 1 {
			t.Fatalf("prune list %v", prune)
		}
		// ...an operator reopens the job before Tick gets to prune it...
		if _, err := m.Reopen("a", "fixed"); err != nil {
			t.Fatal(err)
		}
		// ...and Tick prunes its list.
		m.prune(prune)
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

// TestFinishedJobsBoundedByMaxJobs: a loader that names a job per batch
// and completes each finishes thousands of jobs a day. Of more than
// MaxJobs finished jobs, those that ended first are pruned at the next
// tick, not kept for Retention in memory, in the store and in every
// listing; the newest are kept, and a live job is never pruned.
func TestFinishedJobsBoundedByMaxJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &MemStore{}
		m := newTestManager(t, Config{Store: st, Retention: 24 * time.Hour, MaxJobs: 3})
		defer m.Close()
		write(t, m, "live", ack)
		completeBatches(t, m, 6)
		m.Tick(time.Now())
		recs, err := st.Load()
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]bool{}
		for _, r := range recs {
			stored[r.ID] = true
		}
		for i := range 6 {
			id := "batch-" + strconv.Itoa(i)
			_, err := m.Get(id)
			if kept := err == nil; kept != (i >= 3) || stored[id] != (i >= 3) {
				t.Errorf("%s kept %v, its record %v; want the 3 that finished last kept", id, kept, stored[id])
			}
		}
		if v, err := m.Get("live"); err != nil || v.State.Terminal() {
			t.Errorf("live job after the prune: %v %v", v.State, err)
		}
	})
}

// TestFailedJobOutlivesNewerFinishedJobs: a job whose cleanup failed is
// failed: the store may still hold its partial data, it alerts
// (SluiceJobFailed) and waits for a human, who reads its attempts. Jobs
// named per batch that complete after it must not push it out at the
// next tick: of more than MaxJobs finished jobs, the completed and
// cancelled ones that ended first go, and the failed one stays until
// Retention (or until failed jobs alone are more than MaxJobs).
func TestFailedJobOutlivesNewerFinishedJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &MemStore{}
		api := &storeAPI{status: func(call string) int {
			if strings.HasSuffix(call, "/clear") {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		}}
		m := newTestManager(t, Config{Store: st, Retention: 24 * time.Hour, MaxJobs: 3, ActionRetries: -1,
			HTTPClient: &http.Client{Transport: api}})
		defer m.Close()
		if _, err := m.Register("broken", pegasusActions()); err != nil {
			t.Fatal(err)
		}
		write(t, m, "broken", ack)
		if _, err := m.Cancel("broken", false, "operator"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if v := mustGet(t, m, "broken"); v.State != Failed {
			t.Fatalf("broken: %s (%s), want failed", v.State, v.Reason)
		}
		time.Sleep(time.Second)
		completeBatches(t, m, 6)
		m.Tick(time.Now())
		if v, err := m.Get("broken"); err != nil || v.State != Failed {
			t.Fatalf("the failed job after newer jobs completed: %v %v; want it kept, failed", v.State, err)
		}
		if s := storedState(t, st, "broken"); s != Failed {
			t.Fatalf("the failed job's record: %s", s)
		}
		kept := 0
		for i := range 6 {
			if _, err := m.Get("batch-" + strconv.Itoa(i)); err == nil {
				kept++
			}
		}
		if kept != 2 {
			t.Errorf("%d completed jobs kept, want 2: MaxJobs (3) finished jobs in all", kept)
		}
	})
}

// completeBatches runs n jobs named per batch, batch-0 to batch-<n-1>,
// each a write and a completion a second after the one before.
func completeBatches(t *testing.T, m *Manager, n int) {
	t.Helper()
	for i := range n {
		id := "batch-" + strconv.Itoa(i)
		write(t, m, id, ack)
		if _, err := m.Complete(id); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
}
