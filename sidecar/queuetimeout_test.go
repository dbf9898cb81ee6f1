package sidecar

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

// hogStore is an outageStore that leaves the write named "hog" unanswered
// until its attempt ends, keeping its send slot.
type hogStore struct{ *outageStore }

func (s hogStore) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get(headerWriteID) == "hog" {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return s.outageStore.RoundTrip(r)
}

// SLUICE_QUEUE_TIMEOUT bounds all the time a write waits before the store
// has it, its wait for its held job's probe slot included, as
// SLUICE_HOLD_MAX does for a held write: the loader's timeout set above it
// (plus the attempts) holds. A write that waited 8 s for its job's probe
// slot used to get another full SLUICE_QUEUE_TIMEOUT in the limiter's
// queue, behind another job's write that kept the one send slot: its
// loader heard nothing for 18 s of a 10 s queue timeout.
func TestQueueTimeoutCountsTheJobBackoffWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queueTimeout = 10 * time.Second
		store := hogStore{newOutageStore()}
		store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "8"
		s := newStoreServer(t, store, nil, "QUEUE_TIMEOUT="+queueTimeout.String(), "RETRY_MAX=1",
			"INITIAL_CONCURRENCY=1", "MAX_CONCURRENCY=1", "UPSTREAM_TIMEOUT=1m")
		holdInBackoff(t, s, store.outageStore)
		store.mu.Lock()
		store.throttleUntil = time.Now()
		store.mu.Unlock()
		// Another job's write takes the one send slot and keeps it.
		hog := make(chan answer, 1)
		go func() {
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/doc/hog", "x", headerWriteID, "hog", "X-Sluice-Job", "other")
			hog <- answer{status: rec.Code}
		}()
		synctest.Wait()
		start := time.Now()
		a := writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, "w", "x")
		if took := a.at.Sub(start); took > queueTimeout+time.Second {
			t.Errorf("the write was answered %d %+v after %v, want within SLUICE_QUEUE_TIMEOUT (%v)", a.status, a.body, took, queueTimeout)
		}
		if a.status != http.StatusTooManyRequests {
			t.Errorf("the write got %d %+v, want the pushback (the slot stays taken)", a.status, a.body)
		}
		<-hog
	})
}
