package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// memTransport serves upstream attempts from an in-process handler, so that
// whole-proxy tests run under testing/synctest (no sockets). Like a real
// transport it gives up when the attempt's context ends.
type memTransport struct{ h http.Handler }

func (m memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil { // a server's request always has a body
		req = req.Clone(req.Context())
		req.Body = http.NoBody
	}
	done := make(chan *http.Response, 1)
	go func() {
		rec := httptest.NewRecorder()
		m.h.ServeHTTP(rec, req)
		// As net/http's server does once its handler returns: what the
		// handler left of the body is read and dropped (sluice passes a
		// success on only once the body was sent to its end).
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
		done <- wholeResult(rec)
	}()
	select {
	case resp := <-done:
		resp.Request = req
		return resp, nil
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
}

// wholeResult is rec's response with its length set when the handler did
// not flush, as net/http's server sets it for a small answer it holds
// whole. It also keeps ReverseProxy from flushing each answer through a
// timer of -1 (its way of saying "at once"), which inside a synctest
// bubble runs on the runtime's own stack and has crashed the race-enabled
// test binary (a fault in runtime.(*timer).modify).
func wholeResult(rec *httptest.ResponseRecorder) *http.Response {
	resp := rec.Result()
	if !rec.Flushed && resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 {
		resp.ContentLength = int64(rec.Body.Len())
		resp.Header.Set("Content-Length", strconv.Itoa(rec.Body.Len()))
	}
	return resp
}

// testConfig is a valid configuration from env pairs ("KEY=value", SLUICE_
// prefix optional) on top of an upstream URL.
func testConfig(t *testing.T, env ...string) Config {
	t.Helper()
	environ := []string{"SLUICE_UPSTREAM_URL=http://store.test", "SLUICE_ADMIN_ADDR=127.0.0.1:0", "SLUICE_LISTEN_ADDR=127.0.0.1:0"}
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvPrefix) {
			kv = EnvPrefix + kv
		}
		environ = append(environ, kv)
	}
	cfg, _, err := LoadConfig(environ)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// newTestServer builds a Server whose upstream is the in-memory handler
// store, with its loops running; they stop at the end of the test.
func newTestServer(t *testing.T, store http.Handler, env ...string) *Server {
	t.Helper()
	s := buildServer(t, store, &state.MemStore{}, env...)
	t.Cleanup(s.StartLoops())
	return s
}

// buildServer builds a Server whose upstream, and its actions' too, is the
// in-memory handler store, and whose job state is kept in jobs; its loops
// are not started.
func buildServer(t *testing.T, store http.Handler, jobs state.Store, env ...string) *Server {
	t.Helper()
	opts := Options{Logger: slog.New(slog.DiscardHandler), Store: jobs}
	if store != nil {
		opts.ActionClient = &http.Client{Transport: memTransport{store}}
		opts.Transport = memTransport{store}
	}
	s, err := NewServer(testConfig(t, env...), opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return s
}

// send makes one loader request through h and returns the recorded answer.
func send(h http.Handler, ctx context.Context, method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// quotaStore is a store test double with a token-bucket capacity: above it
// it answers 429 with Retry-After, like a gateway quota.
type quotaStore struct {
	mu         sync.Mutex
	rate       float64 // requests per second
	burst      float64
	tokens     float64
	last       time.Time
	latency    time.Duration
	retryAfter string
	slowDown   bool // refuse as S3 does (503 SlowDown), not with a 429

	accepted, throttled int
	acceptedAt          []time.Time
}

func newQuotaStore(rate float64) *quotaStore {
	return &quotaStore{rate: rate, burst: rate / 10, tokens: rate / 10, latency: 10 * time.Millisecond, retryAfter: "1"}
}

func (s *quotaStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	now := time.Now()
	if !s.last.IsZero() {
		s.tokens = min(s.burst, s.tokens+now.Sub(s.last).Seconds()*s.rate)
	}
	s.last = now
	ok := s.tokens >= 1
	if ok {
		s.tokens--
		s.accepted++
		s.acceptedAt = append(s.acceptedAt, now)
	} else {
		s.throttled++
	}
	s.mu.Unlock()
	if !ok && s.slowDown {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
		return
	}
	if !ok {
		w.Header().Set("Retry-After", s.retryAfter)
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "rate limit exceeded\n")
		return
	}
	time.Sleep(s.latency)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// acceptedBetween returns the attempts accepted in [from, to).
func (s *quotaStore) acceptedBetween(from, to time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.acceptedAt {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// counts returns accepted and throttled attempts, and the accepted ones at or
// after from.
func (s *quotaStore) counts(from time.Time) (accepted, throttled, acceptedSince int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.acceptedAt {
		if !t.Before(from) {
			acceptedSince++
		}
	}
	return s.accepted, s.throttled, acceptedSince
}

// metricValue is the sum of every series of the metric name on s's
// registry, as /metrics would show it.
func metricValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// roundTripFunc is an in-memory store as a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
