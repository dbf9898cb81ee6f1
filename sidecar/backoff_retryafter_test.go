package sidecar

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// SLUICE_MAX_RETRY_AFTER caps every Retry-After sluice honours, the job's
// backoff included: a store that asks for 60 s and takes writes again
// after 10 s holds a job's writes about SLUICE_MAX_RETRY_AFTER (here 5 s),
// as it holds the limiter and the proxy's re-sends. The job's probe slot
// used to honour the 60 s whole, so a write sent once the store was back
// waited out its hold (or its queue timeout) for the job and got sluice's
// pushback, never reaching the store that would have taken it.
func TestJobBackoffHonoursTheRetryAfterCap(t *testing.T) {
	f := func(name string, env ...string) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "60"
				s := newStoreServer(t, store, nil, append([]string{"MAX_RETRY_AFTER=5s", "RETRY_MAX=1", "PUSHBACK_STATUS=503"}, env...)...)
				holdInBackoff(t, s, store)
				held := time.Now()
				store.mu.Lock()
				store.throttleUntil = held // the store takes writes again
				store.mu.Unlock()
				a := writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, "after", "x")
				took := a.at.Sub(held)
				if a.status != http.StatusOK || took > 6*time.Second {
					v, _ := s.jobs.Get("default")
					t.Errorf("a write to the job held in %s: %d %+v after %v; want 200 within SLUICE_MAX_RETRY_AFTER (5s, +10%%) of the hold",
						v.State, a.status, a.body, took)
				}
				if n := store.timesStored("after"); n != 1 {
					t.Errorf("the write was stored %d times, want once", n)
				}
				if v, _ := s.jobs.Get("default"); v.State == state.Backoff {
					t.Errorf("the job is still in %s after its write was stored", v.State)
				}
			})
		})
	}
	f("queue timeout", "QUEUE_TIMEOUT=30s")
	f("hold", "HOLD_MAX=30s")
}
