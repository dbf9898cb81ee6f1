package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/apierror"
)

// budgetStore throttles, with a Retry-After, every write whose id starts
// with "held" (held writes that keep their bodies in the buffer budget) and
// takes every other, counting them.
type budgetStore struct {
	mu     sync.Mutex
	stored map[string]int
}

func (s *budgetStore) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	id := r.Header.Get(headerWriteID)
	rec := httptest.NewRecorder()
	if strings.HasPrefix(id, "held") {
		rec.Header().Set("Retry-After", "5")
		rec.WriteHeader(http.StatusTooManyRequests)
	} else {
		s.mu.Lock()
		s.stored[id]++
		s.mu.Unlock()
		rec.WriteHeader(http.StatusOK)
	}
	resp := wholeResult(rec)
	resp.Request = r
	return resp, nil
}

// A small write that finds SLUICE_BUFFER_BUDGET taken by held writes, under
// a profile whose SigV4 signature hashes the body, gets sluice's pushback
// with a Retry-After, which loaders retry, and is taken once the budget
// has room: the budget is busy for now, the body is not too large. It
// used to get 413 body_too_large_to_sign ("send smaller requests"), which
// loaders do not retry: a 1 KiB write dropped because other writes were
// held.
func TestSigV4WriteFindsTheBudgetHeld(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	synctest.Test(t, func(t *testing.T) {
		store := &budgetStore{stored: map[string]int{}}
		s := newStoreServer(t, store, nil, "UPSTREAM_AUTH=aws-sigv4", "AWS_SERVICE=es", "AWS_REGION=us-east-1",
			"HOLD_MAX=1m", "RETRY_BODY_MAX=16KiB", "BUFFER_BUDGET=64KiB")
		synctest.Wait() // the first credential
		// Four held writes of 16 KiB take the whole budget for their hold.
		var wg sync.WaitGroup
		for _, id := range []string{"held-1", "held-2", "held-3", "held-4"} {
			wg.Go(func() {
				send(s.ProxyHandler(), context.Background(), http.MethodPut, "/idx/_doc/"+id, strings.Repeat("x", 16<<10),
					headerWriteID, id, "X-Sluice-Job", "bulk")
			})
		}
		time.Sleep(time.Second)
		if u := s.budget.InUse(); u != 64<<10 {
			t.Fatalf("%d bytes of the budget in use, want all 64 KiB held", u)
		}
		// One that sluice buffers (1 KiB), and one that streams (20 KiB,
		// over SLUICE_RETRY_BODY_MAX) but fits the budget.
		for _, size := range []int{1 << 10, 20 << 10} {
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/idx/_doc/small", strings.Repeat("y", size),
				headerWriteID, "small", "X-Sluice-Job", "other")
			var body apierror.Body
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || body.Error != "backpressure" || body.Details["reason"] != "buffer_budget" {
				t.Errorf("a write of %d bytes while held writes fill the budget: %d %s (Retry-After %q), want sluice's pushback, 429 buffer_budget with a Retry-After",
					size, rec.Code, rec.Body, rec.Header().Get("Retry-After"))
			}
		}
		if n := seriesValue(t, s, "sluice_proxy_backpressure_total", "reason", "buffer_budget"); n != 2 {
			t.Errorf("sluice_proxy_backpressure_total{reason=buffer_budget} = %v, want 2", n)
		}
		wg.Wait() // the held writes' hold ends, their budget comes back
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/idx/_doc/small", strings.Repeat("y", 1<<10),
			headerWriteID, "small", "X-Sluice-Job", "other")
		store.mu.Lock()
		n := store.stored["small"]
		store.mu.Unlock()
		if rec.Code != http.StatusOK || n != 1 {
			t.Errorf("the same write once the budget has room: %d %s, stored %d times; want 200, stored once", rec.Code, rec.Body, n)
		}
	})
}
