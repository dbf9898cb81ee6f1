package sidecar

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// A read under a job's header (a loader's health check, a count to verify
// a finished load) is not the job's: it neither wakes an idle job, which
// past its deadline would be cancelled and cleaned up at the next tick,
// nor creates one. A write still does both.
func TestReadsAreNotTheJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &pegasusStore{}
		s := newTestServer(t, store, "STALL_AFTER=5m", "JOB_DEADLINE=1h",
			"CANCEL_URL=http://store.test/admin/cancel/${JOB}",
			"CLEANUP_URL=http://store.test/admin/clear/${JOB}")
		h := s.ProxyHandler()
		for range 300 { // 50 minutes of writes, then nothing: a load that finished without saying so
			if rec := send(h, context.Background(), http.MethodPut, "/b/doc", "row", proxy.HeaderJob, "backfill"); rec.Code != http.StatusOK {
				t.Fatalf("write: %d", rec.Code)
			}
			time.Sleep(10 * time.Second)
		}
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		if j, _ := s.jobs.Get("backfill"); j.State != state.Idle {
			t.Fatalf("after the load: %s, want idle", j.State)
		}

		for _, method := range []string{http.MethodGet, http.MethodHead} {
			if rec := send(h, context.Background(), method, "/b/_count", "", proxy.HeaderJob, "backfill"); rec.Code != http.StatusOK {
				t.Fatalf("%s: %d", method, rec.Code)
			}
		}
		time.Sleep(5 * time.Second) // ticks
		synctest.Wait()
		if j, _ := s.jobs.Get("backfill"); j.State != state.Idle || len(store.adminCalls()) > 0 {
			t.Errorf("after reads past its deadline: %s (%s), store admin calls %q; want idle, none", j.State, j.Reason, store.adminCalls())
		}
		if rec := send(h, context.Background(), http.MethodGet, "/b/_count", "", proxy.HeaderJob, "never-written"); rec.Code != http.StatusOK {
			t.Fatalf("read of a new job: %d", rec.Code)
		}
		if _, err := s.jobs.Get("never-written"); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("a read created a job: %v", err)
		}

		// The job's next write wakes it, and meets its deadline.
		send(h, context.Background(), http.MethodPut, "/b/doc", "row", proxy.HeaderJob, "backfill")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if j, _ := s.jobs.Get("backfill"); j.State != state.Cancelled || j.Reason != "cleanup_succeeded" {
			t.Errorf("after a write past its deadline: %s (%s), want cancelled and cleaned up", j.State, j.Reason)
		}
	})
}
