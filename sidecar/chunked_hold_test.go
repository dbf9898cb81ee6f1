package sidecar

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// A write of unknown length (chunked: ClickHouse's and vmctl's inserts) is
// held in hold mode like one with a length when its body fits the room
// left in SLUICE_BUFFER_BUDGET. It used to be buffered only if the budget
// had all of SLUICE_RETRY_BODY_MAX free, so once held writes had taken a
// little of the budget, a 1 KiB chunked write streamed, was not held, and
// its loader got the store's 429 in the middle of a throttle window the
// hold was there to ride out (clickhouse-connect's inserts do not retry).
func TestChunkedWriteHeldWithinTheFreeBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newOutageStore()
		store.throttleUntil, store.retryAfter = time.Now().Add(5*time.Second), "1"
		s := newStoreServer(t, store, nil, "HOLD_MAX=30s", "RETRY_BODY_MAX=32KiB", "BUFFER_BUDGET=64KiB")
		// Two held writes of 20000 bytes take 40 KiB of the budget: 24 KiB
		// are left, less than SLUICE_RETRY_BODY_MAX.
		var wg sync.WaitGroup
		for _, id := range []string{"held-1", "held-2"} {
			wg.Go(func() {
				if a := writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, id, strings.Repeat("x", 20000)); a.status != http.StatusOK {
					t.Errorf("%s: %d %+v, want 200 once the window ends", id, a.status, a.body)
				}
			})
		}
		time.Sleep(500 * time.Millisecond)
		if u := s.budget.InUse(); u != 40<<10 {
			t.Fatalf("%d bytes of the budget in use, want the two held writes' 40 KiB", u)
		}
		req := httptest.NewRequestWithContext(context.Background(), http.MethodPut, "/doc/chunked", io.MultiReader(strings.NewReader(strings.Repeat("y", 1<<10))))
		req.ContentLength = -1 // sent chunked
		req.Header.Set(headerWriteID, "chunked")
		rec := httptest.NewRecorder()
		s.ProxyHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || store.timesStored("chunked") != 1 {
			t.Errorf("a 1 KiB chunked write in the throttle window, 24 KiB of the budget free: %d %q, stored %d times; want it held, 200, stored once",
				rec.Code, rec.Body, store.timesStored("chunked"))
		}
		wg.Wait()
		if u := s.budget.InUse(); u != 0 {
			t.Errorf("%d bytes of the budget still in use", u)
		}
	})
}
