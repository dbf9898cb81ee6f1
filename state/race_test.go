package state

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReopenRefusedWhileCleanupEnds: a reopen refused at MaxJobs answers
// while the cleanup action of another job ends it (cleaning → cancelled,
// one live job fewer). The refusal must say how many jobs are live from
// what it saw under the lock: the action's goroutine changes the count.
// Meant for the race detector; the two jobs take turns, so that each run
// has many chances to catch it.
func TestReopenRefusedWhileCleanupEnds(t *testing.T) {
	m := newTestManager(t, Config{MaxJobs: 1})
	defer m.Close()
	live, ended := "a", "b"
	write(t, m, ended, ack)
	if _, err := m.Cancel(ended, false, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, ended, Cancelled) // no action configured: both are skipped
	write(t, m, live, ack)            // the only live job, and not idle
	for range 50 {
		var refused atomic.Int64
		done := make(chan error, 1)
		go func() {
			for {
				_, err := m.Reopen(ended, "")
				if !errors.Is(err, ErrTooManyJobs) {
					done <- err
					return
				}
				refused.Add(1)
			}
		}()
		for refused.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		// The live job's cancel and cleanup run in the Manager's
		// goroutines while the reopen is refused over and over; once
		// the job is cancelled, the other one reopens.
		if _, err := m.Cancel(live, false, ""); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("reopen of %s once %s is cancelled: %v", ended, live, err)
		}
		if s := mustGet(t, m, ended).State; s != Running {
			t.Fatalf("%s is %s, want running", ended, s)
		}
		live, ended = ended, live
	}
}

func waitState(t *testing.T, m *Manager, id string, want State) {
	t.Helper()
	for i := 0; mustGet(t, m, id).State != want; i++ {
		if i == 5000 {
			t.Fatalf("%s: %s after 5s, want %s", id, mustGet(t, m, id).State, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestScrapeWhileLoading: NewManager registers its collector before it
// loads the records, so a registry that is scraped already (one shared
// with the caller's own metrics) collects while the jobs are being
// restored. The restore must hold m.mu, as Collect does. Meant for the
// race detector.
func TestScrapeWhileLoading(t *testing.T) {
	st := &MemStore{}
	recs := make([]Record, 300)
	for i := range recs {
		recs[i] = Record{ID: fmt.Sprintf("job-%d", i), MachineState: MachineState{State: Running, Since: t0, Created: t0}}
	}
	if err := st.Put(recs...); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		reg := prometheus.NewRegistry()
		stop := make(chan struct{})
		scraped := make(chan struct{})
		go func() {
			defer close(scraped)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		m := newTestManager(t, Config{Store: st, Registerer: reg, MaxJobs: len(recs)})
		close(stop)
		<-scraped
		if n := len(m.List()); n != len(recs) {
			t.Errorf("%d jobs restored, want %d", n, len(recs))
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
