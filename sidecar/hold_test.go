package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// writeOnce sends write id through h once, as a loader that does not retry
// would, and returns what it got.
func writeOnce(h http.Handler, ctx context.Context, method, id string, body string) answer {
	rec := send(h, ctx, method, "/doc/"+id, body, headerWriteID, id)
	a := answer{at: time.Now(), status: rec.Code, retryAfter: rec.Header().Get("Retry-After")}
	_ = json.Unmarshal(rec.Body.Bytes(), &a.body)
	return a
}

// loadOnce has loaders writers each send n writes, one after the other,
// each once, and returns every answer by write id, with its latency.
func loadOnce(h http.Handler, loaders, n int) (map[string]answer, map[string]time.Duration) {
	var mu sync.Mutex
	got, took := map[string]answer{}, map[string]time.Duration{}
	var wg sync.WaitGroup
	for l := range loaders {
		wg.Go(func() {
			for i := range n {
				id := "l" + strconv.Itoa(l) + "-" + strconv.Itoa(i)
				start := time.Now()
				a := writeOnce(h, context.Background(), http.MethodPut, id, "payload-"+id)
				mu.Lock()
				got[id], took[id] = a, time.Since(start)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got, took
}

// In hold mode, a store that throttles for 8 s, with or without a
// Retry-After, or refuses connections for 8 s, costs loaders that never
// retry latency and no error: every write is acknowledged, once, and
// stored once.
func TestHoldRidesOutAWindowShorterThanTheHold(t *testing.T) {
	const window, hold = 8 * time.Second, 30 * time.Second
	f := func(name string, setup func(s *outageStore, end time.Time)) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				start := time.Now()
				setup(store, start.Add(window))
				s := newStoreServer(t, store, nil, "HOLD_MAX="+hold.String())
				got, took := loadOnce(s.ProxyHandler(), 16, 5)
				var longest time.Duration
				for id, a := range got {
					if a.status != http.StatusOK {
						t.Errorf("write %s: %d %+v, want 200", id, a.status, a.body)
					}
					if n := store.timesStored(id); n != 1 {
						t.Errorf("write %s stored %d times, want once", id, n)
					}
					longest = max(longest, took[id])
				}
				attempts, throttled := store.counts()
				t.Logf("%d writes, the longest held %v; the store saw %d attempts (%d throttled, %d refused)",
					len(got), longest, attempts, throttled, store.refusedBetween(start, start.Add(window)))
				if longest < window/2 {
					t.Errorf("the longest write took %v: the store's window of %v was not felt", longest, window)
				}
			})
		})
	}
	f("throttled with Retry-After", func(s *outageStore, end time.Time) { s.throttleUntil, s.retryAfter = end, "1" })
	f("throttled without Retry-After", func(s *outageStore, end time.Time) { s.throttleUntil = end })
	f("connections refused", func(s *outageStore, end time.Time) { s.downUntil = end })
}

// When the window outlasts the hold, the loader gets sluice's pushback
// (here SLUICE_PUSHBACK_STATUS=503) with a Retry-After, reason
// hold_expired, about SLUICE_HOLD_MAX after it sent the write.
func TestHoldExpires(t *testing.T) {
	const hold = 5 * time.Second
	f := func(name string, setup func(s *outageStore, end time.Time), cause string) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				start := time.Now()
				setup(store, start.Add(time.Hour))
				s := newStoreServer(t, store, nil, "HOLD_MAX="+hold.String(), "PUSHBACK_STATUS=503")
				got, took := loadOnce(s.ProxyHandler(), 4, 2)
				for id, a := range got {
					if a.status != http.StatusServiceUnavailable || a.retryAfter == "" || a.body.Details["reason"] != "hold_expired" {
						t.Errorf("write %s: %d %+v (Retry-After %q), want 503 hold_expired with a Retry-After", id, a.status, a.body, a.retryAfter)
					}
					// The cause is what the last attempt got, if the
					// write was sent at all (it may have queued out its
					// hold behind the others).
					if c, ok := a.body.Details["cause"]; ok && c != cause {
						t.Errorf("write %s: cause %v, want %s", id, c, cause)
					}
					// It ends when a re-send's wait would pass the hold:
					// within the last Retry-After (1s, +10%) before it.
					if d := took[id]; d < hold-1100*time.Millisecond || d > hold+time.Second {
						t.Errorf("write %s answered after %v, want about the hold, %v", id, d, hold)
					}
				}
				if n := seriesValue(t, s, "sluice_proxy_backpressure_total", "reason", "hold_expired"); n != float64(len(got)) {
					t.Errorf("sluice_proxy_backpressure_total{reason=hold_expired} = %v, want %d", n, len(got))
				}
			})
		})
	}
	f("throttled with Retry-After", func(s *outageStore, end time.Time) { s.throttleUntil, s.retryAfter = end, "1" }, "status_429")
	f("throttled without Retry-After", func(s *outageStore, end time.Time) { s.throttleUntil = end }, "status_429")
	f("connections refused", func(s *outageStore, end time.Time) { s.downUntil = end }, "connection_refused")
}

// A loader that leaves ends its write's hold at once: no further attempt
// goes to the store, and nothing of it stays in sluice.
func TestHoldEndsWhenTheLoaderLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newOutageStore()
		store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "1"
		s := newStoreServer(t, store, nil, "HOLD_MAX=1m")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		writeOnce(s.ProxyHandler(), ctx, http.MethodPut, "leaver", "x")
		if took := time.Since(start); took > 3*time.Second+100*time.Millisecond {
			t.Errorf("the write ended %v after it was sent, want when its loader left (3s)", took)
		}
		attempts, _ := store.counts()
		time.Sleep(time.Minute)
		if later, _ := store.counts(); later != attempts {
			t.Errorf("%d attempts after the loader left, want none", later-attempts)
		}
		if snap := s.lim.Snapshot(); snap.InFlight != 0 || snap.Queued != 0 {
			t.Errorf("in flight %d, queued %d after the loader left; want 0, 0", snap.InFlight, snap.Queued)
		}
		if n := seriesValue(t, s, "sluice_proxy_requests_total", "code", "499"); n != 1 {
			t.Errorf("sluice_proxy_requests_total{code=499} = %v, want 1", n)
		}
	})
}

// A write sluice may not send twice is never held: a streamed body (over
// SLUICE_RETRY_BODY_MAX), or a POST without SLUICE_RETRY_POST. The loader
// gets the store's 429 at once, after one attempt.
func TestHoldNeverHoldsWhatCannotBeSentAgain(t *testing.T) {
	f := func(name, method string, size int) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "1"
				s := newStoreServer(t, store, nil, "HOLD_MAX=1m", "RETRY_BODY_MAX=1KiB")
				start := time.Now()
				a := writeOnce(s.ProxyHandler(), context.Background(), method, "once", strings.Repeat("x", size))
				attempts, _ := store.counts()
				if a.status != http.StatusTooManyRequests || a.body.Error != "" || attempts != 1 || time.Since(start) > time.Second {
					t.Errorf("%d %+v after %v and %d attempts, want the store's own 429 at once, after one attempt",
						a.status, a.body, time.Since(start), attempts)
				}
			})
		})
	}
	f("streamed PUT", http.MethodPut, 5000)
	f("buffered POST", http.MethodPost, 100)
}

// Timeouts, explicitly: outside hold mode a timed-out write is never sent
// again (the loader gets its 504 within the timeout); in hold mode a write
// that may be repeated (PUT, or POST with SLUICE_RETRY_POST) is sent again
// after a timeout, and acknowledged once the store answers, at the cost of
// the copy that may have landed; a POST without SLUICE_RETRY_POST is not.
func TestHoldTimeouts(t *testing.T) {
	f := func(name, method string, env []string, wantStatus int) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				store.hangUntil = time.Now().Add(2500 * time.Millisecond)
				s := newStoreServer(t, store, nil, append([]string{"UPSTREAM_TIMEOUT=1s"}, env...)...)
				a := writeOnce(s.ProxyHandler(), context.Background(), method, "slow", "x")
				if a.status != wantStatus {
					t.Errorf("%d %+v, want %d", a.status, a.body, wantStatus)
				}
			})
		})
	}
	f("PUT, no hold", http.MethodPut, nil, http.StatusGatewayTimeout)
	f("PUT, held", http.MethodPut, []string{"HOLD_MAX=30s"}, http.StatusOK)
	f("POST, held", http.MethodPost, []string{"HOLD_MAX=30s"}, http.StatusGatewayTimeout)
	f("POST with SLUICE_RETRY_POST, held", http.MethodPost, []string{"HOLD_MAX=30s", "RETRY_POST=true"}, http.StatusOK)
}

// The hold mode's variables: defaults off and 429, and invalid values
// refused naming the variable.
func TestHoldConfig(t *testing.T) {
	cfg := testConfig(t)
	if cfg.HoldMax != 0 || cfg.PushbackStatus != http.StatusTooManyRequests {
		t.Errorf("defaults: HOLD_MAX %v, PUSHBACK_STATUS %d; want 0 and 429", cfg.HoldMax, cfg.PushbackStatus)
	}
	f := func(key string, env ...string) {
		t.Helper()
		_, _, err := LoadConfig(append([]string{"SLUICE_UPSTREAM_URL=http://s"}, env...))
		ce, ok := err.(*ConfigError)
		if !ok {
			t.Fatalf("%v: %v, want a problem naming %s", env, err, key)
		}
		for _, p := range ce.Problems {
			if !strings.HasPrefix(p, key+":") {
				t.Errorf("%v: problem %q, want each to name %s", env, p, key)
			}
		}
	}
	f("SLUICE_HOLD_MAX", "SLUICE_HOLD_MAX=-1s")
	f("SLUICE_HOLD_MAX", "SLUICE_HOLD_MAX=soon")
	f("SLUICE_HOLD_MAX", "SLUICE_HOLD_MAX=1m", "SLUICE_RETRY_MAX=0")
	f("SLUICE_PUSHBACK_STATUS", "SLUICE_PUSHBACK_STATUS=502")
	f("SLUICE_PUSHBACK_STATUS", "SLUICE_PUSHBACK_STATUS=too-many")
	for _, env := range [][]string{{"SLUICE_PUSHBACK_STATUS=503"}, {"SLUICE_HOLD_MAX=1m"}, {"SLUICE_HOLD_MAX=0s", "SLUICE_RETRY_MAX=0"}} {
		if _, _, err := LoadConfig(append([]string{"SLUICE_UPSTREAM_URL=http://s"}, env...)); err != nil {
			t.Errorf("%v: %v", env, err)
		}
	}
}

// Shutdown ends a hold: a held write waiting out the store's Retry-After
// when sluice begins to shut down (the limiter closes, as Serve does
// first) is answered at once, not when its wait ends, which may be past
// the drain (SLUICE_MAX_RETRY_AFTER is 60s by default,
// SLUICE_SHUTDOWN_TIMEOUT 30s), where its connection would be cut. The
// answer is the pushback status with a Retry-After, which the loader
// retries: the write was not taken.
func TestHoldEndsAtShutdown(t *testing.T) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "50"
				s := newStoreServer(t, store, nil, "HOLD_MAX=5m", "PUSHBACK_STATUS="+strconv.Itoa(status))
				done := make(chan answer, 1)
				go func() { done <- writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, "held", "x") }()
				time.Sleep(time.Second) // throttled once, waiting out the Retry-After
				if attempts, _ := store.counts(); attempts != 1 {
					t.Fatalf("%d attempts before shutdown, want 1", attempts)
				}
				closed := time.Now()
				s.lim.Close()
				a := <-done
				if took := a.at.Sub(closed); took > time.Second || a.status != status || a.body.Error != "shutting_down" || a.retryAfter != "1" {
					t.Errorf("%d %+v Retry-After %q %v after shutdown began, want %d shutting_down with a Retry-After of 1 at once", a.status, a.body, a.retryAfter, took, status)
				}
				if attempts, _ := store.counts(); attempts != 1 {
					t.Errorf("%d attempts, want the one before shutdown", attempts)
				}
			})
		})
	}
}

// holdInBackoff writes, a second apart, until the store's throttles have
// put the default job in backoff.
func holdInBackoff(t *testing.T, s *Server, store *outageStore) {
	t.Helper()
	for {
		if v, err := s.jobs.Get("default"); err == nil && v.State == state.Backoff {
			return
		}
		if attempts, _ := store.counts(); attempts > 20 {
			t.Fatalf("the job is not held after %d throttled attempts", attempts)
		}
		writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, "w", "x")
		time.Sleep(time.Second)
	}
}

// Shutdown ends a wait for a held job too: a write waiting for the probe
// slot of its job, held in backoff by the store's Retry-After, when
// sluice begins to shut down is answered at once with the pushback
// status and a Retry-After, as a write waiting in the limiter's queue is,
// not when the slot comes (here 50s on), which may be past the drain,
// where its connection would be cut: admitted then, it would get no
// permit anyway.
func TestJobBackoffWaitEndsAtShutdown(t *testing.T) {
	for _, wait := range []string{"QUEUE_TIMEOUT=5m", "HOLD_MAX=5m"} {
		t.Run(wait, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newOutageStore()
				store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "50"
				s := newStoreServer(t, store, nil, wait, "RETRY_MAX=1", "PUSHBACK_STATUS=503")
				holdInBackoff(t, s, store)
				before, _ := store.counts()
				done := make(chan answer, 1)
				go func() { done <- writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, "held", "x") }()
				synctest.Wait() // waiting for the job's probe slot
				closed := time.Now()
				s.closeWaits()
				a := <-done
				if took := a.at.Sub(closed); took > time.Second || a.status != http.StatusServiceUnavailable || a.body.Error != "shutting_down" || a.retryAfter != "1" {
					t.Errorf("%d %+v Retry-After %q %v after shutdown began, want 503 shutting_down with a Retry-After of 1 at once", a.status, a.body, a.retryAfter, took)
				}
				if attempts, _ := store.counts(); attempts != before {
					t.Errorf("%d attempts, want the %d before shutdown", attempts, before)
				}
			})
		})
	}
}

// A write whose length the loader does not say (chunked: ClickHouse
// clients, vmctl) is buffered within SLUICE_RETRY_BODY_MAX and held like
// one with a Content-Length, its wait for a held job's probe slot
// included: that wait was SLUICE_QUEUE_TIMEOUT, so such a write got the
// pushback (here after 10 s) while one with a length waited for the slot
// (50 s on) and was stored.
func TestHoldWaitsForTheJobWhateverTheLength(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newOutageStore()
		store.throttleUntil, store.retryAfter = time.Now().Add(time.Hour), "50"
		s := newStoreServer(t, store, nil, "QUEUE_TIMEOUT=10s", "HOLD_MAX=5m", "RETRY_MAX=1", "PUSHBACK_STATUS=503")
		holdInBackoff(t, s, store)
		store.mu.Lock()
		store.throttleUntil = time.Now() // the store takes writes again; the job's probe slot is tens of seconds on
		store.mu.Unlock()
		req := httptest.NewRequest(http.MethodPut, "/doc/chunked", io.MultiReader(strings.NewReader("x")))
		req.ContentLength = -1 // sent chunked
		req.Header.Set(headerWriteID, "chunked")
		rec := httptest.NewRecorder()
		s.ProxyHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("a held job's chunked write: %d %s, want it held until the job's probe slot and stored", rec.Code, rec.Body)
		}
	})
}

// tokenStore throttles a write's first attempt with a long Retry-After and
// then takes only the current token, which the test rotates meanwhile.
type tokenStore struct {
	mu      sync.Mutex
	current string
	seen    []string // each attempt's Authorization
}

func (s *tokenStore) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	got := r.Header.Get("Authorization")
	s.seen = append(s.seen, got)
	rec := httptest.NewRecorder()
	switch {
	case len(s.seen) == 1:
		rec.Header().Set("Retry-After", "50")
		rec.WriteHeader(http.StatusTooManyRequests)
	case got != "Bearer "+s.current:
		rec.WriteHeader(http.StatusUnauthorized)
	default:
		rec.WriteHeader(http.StatusOK)
	}
	resp := wholeResult(rec)
	resp.Request = r
	return resp, nil
}

func (s *tokenStore) rotate(t *testing.T, file, tok string) {
	t.Helper()
	s.mu.Lock()
	s.current = tok
	s.mu.Unlock()
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A write sent again carries sluice's credential as it is then, however
// often it rotated since the write's earlier attempt. With
// SLUICE_AUTH_OVERRIDE=false the earlier attempt's header, two tokens
// old, used to be taken for the loader's own and forwarded: the store
// refused the expired token, and the loader got a 401 it does not retry.
func TestResentWriteCarriesTheCurrentCredential(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "token")
		store := &tokenStore{}
		store.rotate(t, file, "tok-1")
		s := newStoreServer(t, store, nil, "UPSTREAM_AUTH=bearer-file", "TOKEN_FILE="+file, "AUTH_OVERRIDE=false",
			"TOKEN_FILE_POLL=1s", "TOKEN_MIN_INTERVAL=1s", "HOLD_MAX=5m")
		synctest.Wait() // the first token is read
		done := make(chan answer, 1)
		go func() { done <- writeOnce(s.ProxyHandler(), context.Background(), http.MethodPut, "w", "x") }()
		// Two rotations while the write waits out the Retry-After.
		time.Sleep(10 * time.Second)
		store.rotate(t, file, "tok-2")
		time.Sleep(10 * time.Second)
		store.rotate(t, file, "tok-3")
		a := <-done
		store.mu.Lock()
		defer store.mu.Unlock()
		if a.status != http.StatusOK {
			t.Errorf("%d %+v; the store saw %q, want 200 after a re-send with tok-3", a.status, a.body, store.seen)
		}
	})
}
