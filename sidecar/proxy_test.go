package sidecar

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/proxy"
)

// greedyLoad runs writers that always have work against h for d: each write
// that is not accepted is retried after a short pause (50ms, ignoring any
// Retry-After, like many loaders do).
func greedyLoad(h http.Handler, writers int, d time.Duration) (ok, notOK int64) {
	var wg sync.WaitGroup
	var okN, badN atomic.Int64
	end := time.Now().Add(d)
	for range writers {
		wg.Go(func() {
			for time.Now().Before(end) {
				rec := send(h, context.Background(), http.MethodPost, "/write", `{"v":1}`)
				if rec.Code == http.StatusOK {
					okN.Add(1)
					continue
				}
				badN.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return okN.Load(), badN.Load()
}

// TestCapacityGoodput is the core promise: 64 greedy writers through sluice
// get at least 90% of a token-bucket store's capacity as goodput while the
// store throttles at most 5% of attempts; the same writers straight at the
// store see most attempts throttled.
func TestCapacityGoodput(t *testing.T) {
	const capacity = 200.0 // requests per second
	const warmup, measure = 10 * time.Second, 60 * time.Second

	t.Run("through sluice", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			store := newQuotaStore(capacity)
			s := newTestServer(t, store, "INITIAL_RATE=20")
			start := time.Now()
			var a0, th0 int
			warm := make(chan struct{})
			go func() {
				time.Sleep(warmup)
				a0, th0, _ = store.counts(start)
				close(warm)
			}()
			greedyLoad(s.ProxyHandler(), 64, warmup+measure)
			<-warm
			a1, th1, _ := store.counts(start)
			goodput := float64(a1-a0) / (capacity * measure.Seconds())
			throttleRatio := float64(th1-th0) / float64(a1-a0+th1-th0)
			t.Logf("goodput %.1f%% of capacity, store throttled %.2f%% of attempts (%d accepted, %d throttled after warm-up)",
				100*goodput, 100*throttleRatio, a1-a0, th1-th0)
			if goodput < 0.90 {
				t.Errorf("goodput = %.1f%% of capacity, want >= 90%%", 100*goodput)
			}
			if throttleRatio > 0.05 {
				t.Errorf("store throttled %.2f%% of attempts, want <= 5%%", 100*throttleRatio)
			}
		})
	})
	t.Run("direct", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			store := newQuotaStore(capacity)
			greedyLoad(store, 64, warmup+measure)
			a, th, _ := store.counts(time.Time{})
			ratio := float64(th) / float64(a+th)
			t.Logf("direct: store throttled %.1f%% of attempts", 100*ratio)
			if ratio < 0.5 {
				t.Errorf("direct writers saw %.1f%% throttled, want most (the double is too lenient)", 100*ratio)
			}
		})
	})
}

// TestHungStoreGets504: a store call that never answers must not hang the
// loader.
// The loader gets a 504 with a JSON body within the timeout + 1s, and the
// timeout is a congestion signal.
func TestHungStoreGets504(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hung := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		s := newTestServer(t, hung, "UPSTREAM_TIMEOUT=2s") // retries on, as by default
		start := time.Now()
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/doc/1", "x")
		took := time.Since(start)
		if rec.Code != http.StatusGatewayTimeout {
			t.Fatalf("status = %d, want 504; body %s", rec.Code, rec.Body)
		}
		if took > 3*time.Second {
			t.Errorf("took %v, want <= timeout + 1s", took)
		}
		var e apierror.Body
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error != "upstream_timeout" {
			t.Errorf("body = %s, want JSON error upstream_timeout", rec.Body)
		}
		if snap := s.lim.Snapshot(); snap.LastReason != "timeout" {
			t.Errorf("limiter's last signal = %q, want timeout", snap.LastReason)
		}
	})
}

// TestHungStoreRealSockets is the same over real loopback sockets and the
// real transport (1s timeout): nothing hangs and nothing leaks (goleak in
// TestMain).
func TestHungStoreRealSockets(t *testing.T) {
	release := make(chan struct{})
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer store.Close()
	defer close(release)
	cfg := testConfig(t, "UPSTREAM_URL="+store.URL, "UPSTREAM_TIMEOUT=1s", "RETRY_MAX=0")
	s, err := NewServer(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := s.StartLoops()
	defer stop()
	front := httptest.NewServer(s.ProxyHandler())
	defer front.Close()
	start := time.Now()
	resp, err := http.Post(front.URL+"/write", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 2*time.Second {
		t.Fatalf("status %d after %v, want 504 within 2s", resp.StatusCode, time.Since(start))
	}
}

// TestLoaderDisconnectCancelsUpstream: a loader that goes away mid-request
// cancels the upstream attempt.
func TestLoaderDisconnectCancelsUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arrived, cancelled := make(chan struct{}), make(chan struct{})
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done()
			close(cancelled)
		})
		s := newTestServer(t, store)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan *httptest.ResponseRecorder)
		go func() { done <- send(s.ProxyHandler(), ctx, http.MethodPut, "/doc/1", "x") }()
		<-arrived
		cancel()
		select {
		case <-cancelled:
		case <-time.After(time.Second):
			t.Fatal("the upstream attempt was not cancelled when the loader left")
		}
		<-done
		if snap := s.lim.Snapshot(); snap.InFlight != 0 {
			t.Errorf("in flight after the loader left = %d, want 0", snap.InFlight)
		}
	})
}

// TestRetryHonoursRetryAfter: a throttled idempotent write is retried by
// sluice, not before the store's Retry-After, and the loader gets the success.
func TestRetryHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls []time.Time
		var mu sync.Mutex
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			calls = append(calls, time.Now())
			n := len(calls)
			mu.Unlock()
			if string(body) != "payload" {
				t.Errorf("attempt %d got body %q", n, body)
			}
			if n == 1 {
				w.Header().Set("Retry-After", "3")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.WriteHeader(http.StatusCreated)
		})
		s := newTestServer(t, store)
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/doc/1", "payload")
		if rec.Code != http.StatusCreated {
			t.Fatalf("status = %d, want 201 after a retry", rec.Code)
		}
		if got := rec.Header().Get(proxy.HeaderAttempts); got != "2" {
			t.Errorf("%s = %q, want 2", proxy.HeaderAttempts, got)
		}
		if gap := calls[1].Sub(calls[0]); gap < 3*time.Second {
			t.Errorf("retried after %v, before the store's Retry-After of 3s", gap)
		}
	})
}

// TestRetryAfterCapped: an absurd Retry-After is capped by
// SLUICE_MAX_RETRY_AFTER (go-retryablehttp's default is uncapped).
func TestRetryAfterCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", strconv.Itoa(484289*3600))
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
		s := newTestServer(t, store, "MAX_RETRY_AFTER=5s")
		start := time.Now()
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/doc/1", "x")
		if rec.Code != http.StatusOK || time.Since(start) > 12*time.Second {
			t.Fatalf("status %d after %v, want 200 within about the 5s cap", rec.Code, time.Since(start))
		}
	})
}

// TestFinalStoreResponsePassesThrough: after the last attempt the loader gets
// the store's own response, byte for byte, not a sluice error.
func TestFinalStoreResponsePassesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, body)
		})
		s := newTestServer(t, store, "PROFILE=s3", "RETRY_MAX=2", "RETRY_BACKOFF_MAX=1s")
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/bucket/key", "x")
		if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != body {
			t.Fatalf("got %d %q, want the store's 503 SlowDown body", rec.Code, rec.Body)
		}
		if got := rec.Header().Get(proxy.HeaderAttempts); got != "3" {
			t.Errorf("attempts = %s, want 3 (1 + SLUICE_RETRY_MAX)", got)
		}
	})
}

// TestPostNotRetriedByDefault: POST is not idempotent unless the operator
// says so.
func TestPostNotRetriedByDefault(t *testing.T) {
	for _, tc := range []struct {
		env      []string
		attempts string
	}{
		{nil, "1"},
		{[]string{"RETRY_POST=true"}, "2"},
	} {
		synctest.Test(t, func(t *testing.T) {
			var n atomic.Int32
			store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			s := newTestServer(t, store, tc.env...)
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/_bulk", "x")
			if got := rec.Header().Get(proxy.HeaderAttempts); got != tc.attempts {
				t.Errorf("env %v: attempts = %s, want %s", tc.env, got, tc.attempts)
			}
		})
	}
}

// TestHeadersAndPath: sluice's own headers never go upstream, the upstream
// path prefix is joined, the query kept, X-Forwarded-For appended.
func TestHeadersAndPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := make(chan *http.Request, 1)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Clone(context.Background()) })
		s := newTestServer(t, store, "UPSTREAM_URL=http://store.test/prefix")
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/index/_doc/1?refresh=true", "x",
			proxy.HeaderJob, "job-1", "X-Sluice-Secret", "s", "X-Forwarded-For", "10.1.1.1", "Connection", "close")
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		r := <-got
		if r.URL.Path != "/prefix/index/_doc/1" || r.URL.RawQuery != "refresh=true" {
			t.Errorf("upstream got %s?%s", r.URL.Path, r.URL.RawQuery)
		}
		for k := range r.Header {
			if strings.HasPrefix(k, "X-Sluice-") {
				t.Errorf("sluice header %s forwarded upstream", k)
			}
		}
		if xff := r.Header.Get("X-Forwarded-For"); xff != "10.1.1.1, 192.0.2.1" {
			t.Errorf("X-Forwarded-For = %q, want the chain with the loader appended", xff)
		}
		if host := cmp.Or(r.Host, r.URL.Host); host != "store.test" {
			t.Errorf("Host = %q, want the upstream's", host)
		}
	})
}

// TestBackpressureRejectMode: with SLUICE_BACKPRESSURE=reject a write over
// the limit gets 429 at once with a Retry-After and a JSON reason.
func TestBackpressureRejectMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block })
		s := newTestServer(t, store, "BACKPRESSURE=reject", "INITIAL_CONCURRENCY=1", "MAX_CONCURRENCY=1")
		go send(s.ProxyHandler(), context.Background(), http.MethodPut, "/a", "x")
		synctest.Wait()
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/b", "x")
		close(block)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("got %d (Retry-After %q), want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
		}
		var e apierror.Body
		if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Details["reason"] != "no_capacity" {
			t.Errorf("body %s, want reason no_capacity", rec.Body)
		}
	})
}

// TestQueueBounds: past SLUICE_QUEUE_MAX waiting writes, or past
// SLUICE_QUEUE_TIMEOUT, the loader gets 429.
func TestQueueBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block })
		s := newTestServer(t, store, "INITIAL_CONCURRENCY=1", "MAX_CONCURRENCY=1", "QUEUE_MAX=2", "QUEUE_TIMEOUT=5s")
		codes := make(chan int, 4)
		for range 4 {
			go func() { codes <- send(s.ProxyHandler(), context.Background(), http.MethodPut, "/a", "x").Code }()
			synctest.Wait()
		}
		// One in flight, two queued, the fourth refused at once.
		if c := <-codes; c != http.StatusTooManyRequests {
			t.Fatalf("fourth write got %d, want 429 queue_full", c)
		}
		time.Sleep(6 * time.Second)
		for range 2 {
			if c := <-codes; c != http.StatusTooManyRequests {
				t.Errorf("queued write got %d after the queue timeout, want 429", c)
			}
		}
		close(block)
		<-codes
	})
}

// TestQueueTimeoutIsTheWrites: SLUICE_QUEUE_TIMEOUT bounds the time a
// write waits in sluice's queue over all its attempts, not per attempt: a
// write that queued most of it before a failed attempt waits only the rest
// for its retry, and is pushed back then, instead of queueing the whole
// timeout again behind the write that took its slot.
func TestQueueTimeoutIsTheWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failedB atomic.Bool
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/b" && !failedB.Swap(true) {
				w.WriteHeader(http.StatusInternalServerError) // retried: a PUT
				return
			}
			time.Sleep(4 * time.Second)
		})
		s := newTestServer(t, store, "INITIAL_CONCURRENCY=1", "MAX_CONCURRENCY=1", "QUEUE_TIMEOUT=5s", "RETRY_MAX=3",
			"RETRY_BACKOFF_MIN=100ms", "RETRY_BACKOFF_MAX=100ms")
		start := time.Now()
		type answer struct {
			code int
			at   time.Duration
		}
		answers := map[string]chan answer{"/a": make(chan answer, 1), "/b": make(chan answer, 1), "/c": make(chan answer, 1)}
		for _, path := range []string{"/a", "/b", "/c"} {
			go func() {
				code := send(s.ProxyHandler(), context.Background(), http.MethodPut, path, "x").Code
				answers[path] <- answer{code, time.Since(start)}
			}()
			synctest.Wait()
		}
		// a holds the one slot for 4s; b queues 4s, fails at once, and
		// its retry finds c in the slot until 8s: 1s of its 5s is left.
		b := <-answers["/b"]
		if b.code != http.StatusTooManyRequests || b.at > 5500*time.Millisecond {
			t.Errorf("write b: %d after %v, want 429 within its 5s queue timeout (and the 100ms backoff)", b.code, b.at)
		}
		if a, c := <-answers["/a"], <-answers["/c"]; a.code != http.StatusOK || c.code != http.StatusOK {
			t.Errorf("writes a, c: %d, %d, want 200", a.code, c.code)
		}
	})
}

func TestInvalidJobHeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) })
		s := newTestServer(t, store)
		for _, id := range []string{"a b", "../etc", "..", ".", "-rf", "--all", strings.Repeat("x", 129), "ünï", "a\tb"} {
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/a", "x", proxy.HeaderJob, id)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "invalid_job_id") {
				t.Errorf("job %q: got %d %s, want 400 invalid_job_id", id, rec.Code, rec.Body)
			}
		}
		if calls.Load() != 0 {
			t.Errorf("%d invalid writes were forwarded", calls.Load())
		}
	})
}
