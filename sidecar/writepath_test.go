package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/rawstore"
	"github.com/sluice-dev/sluice/sidecar/proxy"

	"github.com/sluice-dev/sluice/state"
)

// recordingTransport is an in-memory store seen from the transport's seam:
// it records what each attempt offered net/http, and answers 204.
type recordingTransport struct {
	mu       sync.Mutex
	getBody  []bool   // whether the attempt had a GetBody
	replayed []string // what GetBody gave back, read whole
	bodies   []string // what the body carried
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	replay := ""
	if req.GetBody != nil {
		// What net/http would send again after REFUSED_STREAM, GOAWAY or
		// a dropped connection, and what SigV4 would hash.
		if rc, err := req.GetBody(); err == nil {
			b, _ := io.ReadAll(rc)
			replay = string(b)
		}
	}
	rt.mu.Lock()
	rt.getBody = append(rt.getBody, req.GetBody != nil)
	rt.replayed = append(rt.replayed, replay)
	rt.bodies = append(rt.bodies, string(body))
	rt.mu.Unlock()
	return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// A body that sluice sends once (too large to buffer, or of unknown length
// past the limit) offers no GetBody to any layer below it: net/http would
// send the already-read stream again, empty or cut, and the store would
// acknowledge that. A buffered body offers one that gives back exactly
// the same bytes.
func TestStreamedBodyOffersNoReplay(t *testing.T) {
	rt := &recordingTransport{}
	cfg := testConfig(t, "UPSTREAM_URL=http://store.test", "RETRY_BODY_MAX=1KiB", "RETRY_POST=true")
	s, err := NewServer(cfg, Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StartLoops())
	small := strings.Repeat("s", 100)
	large := strings.Repeat("L", 5000)
	f := func(name, body string, knownLength, wantGetBody bool) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/write", nil)
		req.Body = io.NopCloser(strings.NewReader(body))
		req.ContentLength = -1
		if knownLength {
			req.ContentLength = int64(len(body))
		}
		rec := httptest.NewRecorder()
		s.ProxyHandler().ServeHTTP(rec, req)
		rt.mu.Lock()
		defer rt.mu.Unlock()
		i := len(rt.bodies) - 1
		if rec.Code != http.StatusNoContent || i < 0 {
			t.Fatalf("%s: loader got %d %s", name, rec.Code, rec.Body)
		}
		if rt.bodies[i] != body {
			t.Errorf("%s: the store got %d bytes, want %d", name, len(rt.bodies[i]), len(body))
		}
		if rt.getBody[i] != wantGetBody {
			t.Errorf("%s: GetBody offered = %v, want %v", name, rt.getBody[i], wantGetBody)
		}
		if wantGetBody && rt.replayed[i] != body {
			t.Errorf("%s: GetBody gave back %d bytes, want the %d sent", name, len(rt.replayed[i]), len(body))
		}
	}
	f("buffered, length known", small, true, true)
	f("buffered, length unknown", small, false, true)
	f("streamed, length known", large, true, false)
	f("streamed, length unknown", large, false, false)
}

// The same over real sockets: a store that reads a streamed write with an
// Idempotency-Key (which makes net/http deem it replayable) and drops the
// reused connection without answering. The write must fail truthfully,
// with sluice's pushback (no store answered it: connection_reset), which
// the loader sends again; it used to be sent again by net/http with an
// empty body, answered 204.
func TestStreamedBodyNotReplayedAfterDroppedConnection(t *testing.T) {
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if seq == 1 {
			c.HangUp()
			return
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	s := newTestServer(t, nil, "UPSTREAM_URL="+store.URL(), "RETRY_BODY_MAX=1KiB")
	h := s.ProxyHandler()
	if code := send(h, context.Background(), http.MethodPut, "/warm", "warm").Code; code != http.StatusNoContent {
		t.Fatalf("warm-up write: %d", code) // leaves a kept-alive connection to reuse
	}
	// Of unknown length: a replay of the read stream goes out as an empty
	// chunked body, which the store takes (with a length, net/http
	// would refuse to send it short).
	req := httptest.NewRequest(http.MethodPost, "/write", nil)
	req.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 20000)))
	req.ContentLength = -1
	req.Header.Set("Idempotency-Key", "k1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	_, _, answered := store.Counts()
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "connection_reset") {
		t.Errorf("a streamed write whose connection dropped before the answer got %d %s, want 429 with a Retry-After, cause connection_reset",
			rec.Code, rec.Body)
	}
	if len(answered) != 1 || answered[0] != "warm" {
		t.Errorf("the store acknowledged %d writes (%.20q…), want only the warm-up", len(answered), answered)
	}
	wantNoneInFlight(t, s)
}

// A store that answers 101 to a write that asked for no upgrade: each
// attempt ends (its slot is freed) and the loader gets a 502. With two
// slots, two such answers used to leave every later write waiting.
func TestSwitchingProtocolsFreesTheSlot(t *testing.T) {
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		fmt.Fprint(c.NC, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
	})
	s := newTestServer(t, nil, "UPSTREAM_URL="+store.URL(), "INITIAL_CONCURRENCY=2", "MAX_CONCURRENCY=2", "QUEUE_TIMEOUT=2s")
	for i := range 3 {
		rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/write", "x")
		if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "switched_protocols") {
			t.Errorf("write %d: %d %s, want 502 switched_protocols", i, rec.Code, rec.Body)
		}
	}
	wantNoneInFlight(t, s)
}

// A loader that offers an upgrade (Java's HttpClient offers h2c on every
// http:// URL) has its write forwarded as plain HTTP/1.1.
func TestUpgradeOfferNotForwarded(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	s := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	rec := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", "x",
		"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")
	if rec.Code != http.StatusNoContent {
		t.Fatalf("loader got %d %s", rec.Code, rec.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range []string{"Upgrade", "Connection", "Http2-Settings"} {
		if v := seen[0].Get(h); v != "" {
			t.Errorf("the store saw %s: %q", h, v)
		}
	}
}

// A buffered body of unknown length holds no more memory than the budget
// counts for it, while it is held and after.
func TestUnknownLengthBufferCountedWhole(t *testing.T) {
	var held, reserved int64
	var s *Server
	s = newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reserved = s.budget.InUse()
		b, _ := io.ReadAll(r.Body)
		held = int64(len(b))
		w.WriteHeader(http.StatusNoContent)
	}), "RETRY_BODY_MAX=1MiB", "BUFFER_BUDGET=8MiB")
	for _, size := range []int{1, 40_000, 600_000, 1 << 20, 1<<20 + 1} {
		req := httptest.NewRequest(http.MethodPut, "/write", nil)
		req.Body = io.NopCloser(bytes.NewReader(make([]byte, size)))
		req.ContentLength = -1
		rec := httptest.NewRecorder()
		s.ProxyHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent || held != int64(size) {
			t.Fatalf("size %d: %d, store got %d bytes", size, rec.Code, held)
		}
		// Capacity grows by doubling from 32 KiB, at most to the limit.
		want := int64(32 << 10)
		for want < int64(size) && want < 1<<20 {
			want = min(2*want, 1<<20)
		}
		if reserved != want {
			t.Errorf("size %d: budget counted %d bytes while the write was sent, want %d (the buffer's capacity)", size, reserved, want)
		}
		if u := s.budget.InUse(); u != 0 {
			t.Errorf("size %d: %d bytes still reserved after the write", size, u)
		}
	}
}

// sigv4Server is sluice signing with SigV4 for a service whose payload is
// hashed, in front of a store that checks that the hash it was told is the
// hash of what it got. It waits for the first credential.
func sigv4Server(t *testing.T, env ...string) (*Server, func() []string) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	var mu sync.Mutex
	var got []string
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		mu.Lock()
		got = append(got, fmt.Sprintf("len=%d err=%v hash=%v", len(b), err, hex.EncodeToString(sum[:]) == r.Header.Get("X-Amz-Content-Sha256")))
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(store.Close)
	s := newTestServer(t, nil, append([]string{"UPSTREAM_URL=" + store.URL,
		"UPSTREAM_AUTH=aws-sigv4", "AWS_SERVICE=es", "AWS_REGION=us-east-1"}, env...)...)
	<-waitFor(s.auth.Ready)
	return s, func() []string {
		mu.Lock()
		defer mu.Unlock()
		g := got
		got = nil
		return g
	}
}

// The bytes sluice sends are exactly the bytes it hashed for SigV4, for a
// buffered body and for one that streams, with or without a length.
func TestSigV4HashesWhatItSends(t *testing.T) {
	s, stored := sigv4Server(t, "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=1MiB")
	for _, size := range []int{100, 20_000, 300_000} {
		for _, known := range []bool{true, false} {
			body := strings.Repeat("0123456789abcdef", size/16)
			req := httptest.NewRequest(http.MethodPut, "/idx/_doc/1", nil)
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = -1
			if known {
				req.ContentLength = int64(len(body))
			}
			rec := httptest.NewRecorder()
			s.ProxyHandler().ServeHTTP(rec, req)
			got := stored()
			want := fmt.Sprintf("len=%d err=<nil> hash=true", len(body))
			if rec.Code != http.StatusOK || len(got) != 1 || got[0] != want {
				t.Errorf("%d bytes, length known %v: loader got %d %s; store saw %v, want [%s]", len(body), known, rec.Code, rec.Body, got, want)
			}
		}
	}
	if u := s.budget.InUse(); u != 0 {
		t.Errorf("%d bytes of the budget still reserved", u)
	}
}

// A body that must be hashed and that the budget cannot hold is refused
// with 413, and nothing reaches the store.
func TestSigV4RefusesWhatItCannotBuffer(t *testing.T) {
	s, stored := sigv4Server(t, "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=64KiB")
	for _, known := range []bool{true, false} {
		body := strings.Repeat("x", 200_000)
		req := httptest.NewRequest(http.MethodPut, "/idx/_doc/1", nil)
		req.Body = io.NopCloser(strings.NewReader(body))
		req.ContentLength = -1
		if known {
			req.ContentLength = int64(len(body))
		}
		rec := httptest.NewRecorder()
		s.ProxyHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "body_too_large_to_sign") {
			t.Errorf("length known %v: loader got %d %s, want 413 body_too_large_to_sign", known, rec.Code, rec.Body)
		}
		if got := stored(); len(got) != 0 {
			t.Errorf("length known %v: the store saw %v", known, got)
		}
	}
	if u := s.budget.InUse(); u != 0 {
		t.Errorf("%d bytes of the budget still reserved", u)
	}
}

// behindOther is a pipelining sidecar whose store holds the write
// "other-1", once the write behind it on its connection has come, until
// release is closed (held is closed then), after a first write "warm"
// (the limiter pipelines only after a first answer). landed lists the
// bodies the store took, in order.
type behindOther struct {
	s             *Server
	h             http.Handler
	held, release chan struct{}
	mu            sync.Mutex
	landed        []string
}

func newBehindOther(t *testing.T) *behindOther {
	t.Helper()
	b := &behindOther{held: make(chan struct{}), release: make(chan struct{})}
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if body == "other-1" {
			c.AwaitNext(10 * time.Second)
			close(b.held)
			<-b.release
		}
		b.mu.Lock()
		b.landed = append(b.landed, body)
		b.mu.Unlock()
		c.Answer(http.StatusNoContent, body, false)
	})
	b.s = pipelinedServer(t, store.URL())
	b.h = b.s.ProxyHandler()
	if code := send(b.h, context.Background(), http.MethodPost, "/write", "warm", proxy.HeaderJob, "other").Code; code != http.StatusNoContent {
		t.Fatalf("first write: %d", code)
	}
	return b
}

// stored reports whether the store took body.
func (b *behindOther) stored(body string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.landed, body)
}

// A job cancelled while its pipelined write sits in the store's socket
// behind another: that write cannot be recalled, so its loader waits for
// the store's answer and gets it, and the job is cancelled (its cancel
// action run) only after. A write of the job still queued in sluice is
// never sent.
func TestPipelinedWriteOfCancelledJob(t *testing.T) {
	b := newBehindOther(t)
	s, h, held, release := b.s, b.h, b.held, b.release
	var wg sync.WaitGroup
	codes := map[string]int{}
	var cmu sync.Mutex
	write := func(body, job string) {
		wg.Go(func() {
			code := send(h, context.Background(), http.MethodPost, "/write", body, proxy.HeaderJob, job).Code
			cmu.Lock()
			codes[body] = code
			cmu.Unlock()
		})
	}
	write("other-1", "other")
	<-waitFor(func() bool { return s.lim.Snapshot().InFlight == 1 })
	write("j-1", "j")
	<-held // j-1 is in the store's socket behind other-1
	write("j-2", "j")
	<-waitFor(func() bool { return s.lim.Snapshot().Queued+s.lim.Snapshot().InFlight >= 2 })
	if _, err := s.jobs.Cancel("j", false, "test"); err != nil {
		t.Fatal(err)
	}
	// j-2 was not sent: it is refused at once. j-1 waits for the store.
	<-waitFor(func() bool { cmu.Lock(); defer cmu.Unlock(); return codes["j-2"] != 0 })
	if v, _ := s.jobs.Get("j"); v.State == state.Cancelled {
		t.Errorf("job j cancelled while its write j-1 was still the store's")
	}
	close(release)
	wg.Wait()
	<-waitFor(func() bool { v, _ := s.jobs.Get("j"); return v.State == state.Cancelled })
	cmu.Lock()
	defer cmu.Unlock()
	if codes["j-1"] != http.StatusNoContent || codes["other-1"] != http.StatusNoContent {
		t.Errorf("j-1 got %d and other-1 %d: both were stored, want 204 each", codes["j-1"], codes["other-1"])
	}
	if codes["j-2"] != http.StatusConflict {
		t.Errorf("j-2 got %d, want 409: it was never sent", codes["j-2"])
	}
	if b.stored("j-2") {
		t.Errorf("j-2, refused to its loader, was stored: %v", b.landed)
	}
	wantNoneInFlight(t, s)
}

// A job's cancel waits for the job's writes the store already has, so that
// none lands after its cancel and cleanup; a pipelined write in the store's
// socket cannot be recalled. Its loader leaving (a loader told 409 for
// its other writes exits) does not take it out of the store's socket: the
// store still takes it up once it answers the write ahead, so the cancel
// must still wait for it.
func TestCancelWaitsForAPipelinedWriteItsLoaderLeft(t *testing.T) {
	b := newBehindOther(t)
	s, h := b.s, b.h
	var wg sync.WaitGroup
	wg.Go(func() { send(h, context.Background(), http.MethodPost, "/write", "other-1", proxy.HeaderJob, "other") })
	<-waitFor(func() bool { return s.lim.Snapshot().InFlight == 1 })
	ctx, leave := context.WithCancel(context.Background())
	left := make(chan struct{})
	wg.Go(func() {
		defer close(left)
		send(h, ctx, http.MethodPost, "/write", "j-1", proxy.HeaderJob, "j")
	})
	<-b.held // j-1 is in the store's socket behind other-1
	if _, err := s.jobs.Cancel("j", false, "test"); err != nil {
		t.Fatal(err)
	}
	leave()
	<-left
	if v, _ := s.jobs.Get("j"); !b.stored("j-1") && v.InFlight == 0 {
		t.Errorf("job j in %s counts no write in flight while its write j-1 is still in the store's socket: its cancel and cleanup may run before j-1 lands", v.State)
	}
	<-waitFor(func() bool { v, _ := s.jobs.Get("j"); return v.State == state.Cancelled || v.InFlight > 0 })
	if v, _ := s.jobs.Get("j"); v.State == state.Cancelled && !b.stored("j-1") {
		t.Errorf("job j cancelled (cancel and cleanup done) while its write j-1 was still in the store's socket, to land after")
	}
	close(b.release)
	wg.Wait()
	<-waitFor(func() bool { v, _ := s.jobs.Get("j"); return v.State == state.Cancelled })
}
