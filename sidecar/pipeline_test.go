package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/rawstore"
	"github.com/sluice-dev/sluice/limiter"
)

// pipelinedServer is sluice with pipelining in front of upstream, held at
// one write in flight at the store.
func pipelinedServer(t *testing.T, upstream string, env ...string) *Server {
	t.Helper()
	return newTestServer(t, nil, append([]string{"UPSTREAM_URL=" + upstream, "PIPELINE=true", "RETRY_POST=true",
		"INITIAL_CONCURRENCY=1", "MAX_CONCURRENCY=1", "INITIAL_RATE=1000", "RETRY_BACKOFF_MIN=1ms", "RETRY_BACKOFF_MAX=5ms"}, env...)...)
}

// writeAll sends bodies through s from one loader goroutine each and
// returns the statuses they got, in the order of bodies.
func writeAll(s *Server, bodies []string) []int {
	codes := make([]int, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Go(func() {
			codes[i] = send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", b).Code
		})
	}
	wg.Wait()
	return codes
}

// wantAllWritten sends bodies as writeAll does and wants each answered 204.
func wantAllWritten(t *testing.T, s *Server, bodies []string) {
	t.Helper()
	for i, code := range writeAll(s, bodies) {
		if code != http.StatusNoContent {
			t.Errorf("%s: loader got %d, want 204", bodies[i], code)
		}
	}
}

func bodies(n int) []string {
	b := make([]string, n)
	for i := range b {
		b[i] = fmt.Sprintf("write-%02d", i)
	}
	return b
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// A store that takes one write at a time finds the next write on its
// connection before it answers the one it is on, and sluice never opens a
// second connection to it.
func TestPipelineSendsTheNextWriteBeforeTheAnswer(t *testing.T) {
	const n = 12
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		// The first write is answered at once: nothing is pipelined
		// before the store has answered once. Every other one but the
		// last waits for the next to arrive.
		if seq > 0 && seq < n-1 && !c.AwaitNext(10*time.Second) {
			t.Errorf("write %d: the next write did not arrive before its answer", seq)
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.URL())
	want := bodies(n)
	wantAllWritten(t, s, want)
	conns, pipelined, answered := store.Counts()
	if conns != 1 {
		t.Errorf("store saw %d connections, want 1 (one write at a time)", conns)
	}
	if pipelined != n-2 {
		t.Errorf("%d writes arrived before the answer ahead of them, want %d", pipelined, n-2)
	}
	if got := sortedCopy(answered); !slices.Equal(got, want) {
		t.Errorf("store answered %v, want each of %v once", got, want)
	}
	if got := metricValue(t, s, "sluice_upstream_pipelined_total"); got != n-2 {
		t.Errorf("sluice_upstream_pipelined_total = %v, want %d", got, n-2)
	}
	wantNoneInFlight(t, s)
}

// A connection that breaks with a write pipelined behind the one the store
// is on: the one it broke on is retried as any write whose answer was
// lost, and the one behind it, never answered, is sent again without
// counting as a failure of the store.
func TestPipelineBrokenConnection(t *testing.T) {
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if c.Index == 0 && seq == 1 {
			c.AwaitNext(10 * time.Second)
			c.HangUp() // on write 1, with the next one in the socket
			return
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.URL())
	want := bodies(3)
	wantAllWritten(t, s, want)
	_, pipelined, answered := store.Counts()
	if pipelined != 1 {
		t.Fatalf("%d writes pipelined, want 1", pipelined)
	}
	if got := sortedCopy(answered); !slices.Equal(got, want) {
		t.Errorf("store answered %v, want each of %v once", got, want)
	}
	snap := s.lim.Snapshot()
	if snap.Samples[limiter.Unreachable] != 1 || snap.Samples[limiter.Neutral] != 1 {
		t.Errorf("samples %v: want one unreachable (the write the connection broke on before any answer) and one neutral (the one behind it)", snap.Samples)
	}
	wantNoneInFlight(t, s)
}

// An answer that closes the connection: the write behind it was not taken
// up, and goes again on a new connection.
func TestPipelineAnswerClosesConnection(t *testing.T) {
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if c.Index == 0 && seq == 1 {
			c.AwaitNext(10 * time.Second)
			c.Answer(http.StatusNoContent, body, true)
			return
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.URL())
	want := bodies(3)
	wantAllWritten(t, s, want)
	conns, pipelined, answered := store.Counts()
	if conns != 2 || pipelined != 1 {
		t.Fatalf("%d connections, %d writes pipelined; want 2, 1", conns, pipelined)
	}
	if got := sortedCopy(answered); !slices.Equal(got, want) {
		t.Errorf("store answered %v, want each of %v once", got, want)
	}
	if snap := s.lim.Snapshot(); snap.Samples[limiter.Failed] != 0 || snap.Samples[limiter.Success] != 3 {
		t.Errorf("samples %v: want 3 successes, no failure", snap.Samples)
	}
	wantNoneInFlight(t, s)
}

// A store that does not answer the write it is on: at the upstream
// timeout the loader gets 504 for it (not retried: it may have landed),
// and the write pipelined behind it goes again on a new connection.
func TestPipelineTimeoutAtTheHead(t *testing.T) {
	hung := make(chan struct{})
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if c.Index == 0 && seq == 1 {
			c.AwaitNext(10 * time.Second)
			select {
			case <-hung:
			case <-time.After(10 * time.Second):
			}
			return
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	t.Cleanup(func() { close(hung) }) // before the store's cleanup, which waits for it
	s := pipelinedServer(t, store.URL(), "UPSTREAM_TIMEOUT=300ms")
	first := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", "write-00").Code
	if first != http.StatusNoContent {
		t.Fatalf("first write: %d", first)
	}
	codes := writeAll(s, []string{"write-01", "write-02"})
	slices.Sort(codes)
	if !slices.Equal(codes, []int{http.StatusNoContent, http.StatusGatewayTimeout}) {
		t.Errorf("loaders got %v, want one 204 and one 504", codes)
	}
	conns, pipelined, answered := store.Counts()
	if conns != 2 || pipelined != 1 || len(answered) != 2 {
		t.Errorf("%d connections, %d pipelined, answered %v; want 2, 1, two writes", conns, pipelined, answered)
	}
	wantNoneInFlight(t, s)
}

// wantNoneInFlight checks that every permit came back.
func wantNoneInFlight(t *testing.T, s *Server) {
	t.Helper()
	if snap := s.lim.Snapshot(); snap.InFlight != 0 || snap.Staged != 0 {
		t.Errorf("in flight %d, staged %d after the writes; want 0, 0", snap.InFlight, snap.Staged)
	}
}

// A write's deadline runs from when the store takes it up: one pipelined
// behind a slow write is not cut short by the time it waited.
func TestPipelineFollowerDeadlineFromItsStart(t *testing.T) {
	const slow = 1200 * time.Millisecond // each of the two, against a 2 s timeout
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		switch seq {
		case 1:
			c.AwaitNext(10 * time.Second)
			time.Sleep(slow)
		case 2:
			time.Sleep(slow)
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.URL(), "UPSTREAM_TIMEOUT=2s")
	if code := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", "write-00").Code; code != http.StatusNoContent {
		t.Fatalf("first write: %d", code)
	}
	wantAllWritten(t, s, []string{"write-01", "write-02"}) // each answered 1.2 s after the store took it up
	if _, pipelined, _ := store.Counts(); pipelined != 1 {
		t.Errorf("%d pipelined, want 1", pipelined)
	}
	wantNoneInFlight(t, s)
}

// A loader that leaves while its write waits behind another: its answer is
// dropped when it comes, another write may be pipelined behind the same
// leader meanwhile (three on the connection), and everything completes.
func TestPipelineLoaderLeavesBehind(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if seq == 1 {
			c.AwaitNext(10 * time.Second)
			close(held)
			<-release
		}
		if body == "write-02" {
			c.Answer(http.StatusOK, body, false) // with a body, which sluice drops
			return
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.URL())
	h := s.ProxyHandler()
	if code := send(h, context.Background(), http.MethodPost, "/write", "write-00").Code; code != http.StatusNoContent {
		t.Fatalf("first write: %d", code)
	}
	var wg sync.WaitGroup
	codes := make([]int, 3)
	wg.Go(func() { codes[0] = send(h, context.Background(), http.MethodPost, "/write", "write-01").Code })
	ctx, leave := context.WithCancel(context.Background())
	<-waitFor(func() bool { return s.lim.Snapshot().InFlight == 1 })
	wg.Go(func() { codes[1] = send(h, ctx, http.MethodPost, "/write", "write-02").Code })
	<-held // write-02 is in the store's socket behind write-01
	leave()
	<-waitFor(func() bool { return s.lim.Snapshot().Staged == 0 })
	wg.Go(func() { codes[2] = send(h, context.Background(), http.MethodPost, "/write", "write-03").Code })
	<-waitFor(func() bool { return s.lim.Snapshot().Staged == 1 })
	close(release)
	wg.Wait()
	if codes[0] != http.StatusNoContent || codes[2] != http.StatusNoContent {
		t.Errorf("loaders that stayed got %d and %d, want 204", codes[0], codes[2])
	}
	conns, _, answered := store.Counts()
	if conns != 1 || len(answered) != 4 {
		t.Errorf("%d connections, answered %v; want 1 connection and all four writes (the one whose loader left was sent)", conns, answered)
	}
	wantNoneInFlight(t, s)
}

// waitFor returns a channel closed once cond holds (polled; bounded by the
// test's own timeout).
func waitFor(cond func() bool) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for !cond() {
			time.Sleep(time.Millisecond)
		}
		close(ch)
	}()
	return ch
}

// A write pipelined behind another has a deadline of its own once the store
// has taken it up.
func TestPipelineTimeoutBehind(t *testing.T) {
	hung := make(chan struct{})
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		switch {
		case c.Index == 0 && seq == 1:
			c.AwaitNext(10 * time.Second)
		case c.Index == 0 && seq == 2:
			<-hung
			return
		}
		c.Answer(http.StatusNoContent, body, false)
	})
	t.Cleanup(func() { close(hung) }) // before the store's cleanup, which waits for it
	s := pipelinedServer(t, store.URL(), "UPSTREAM_TIMEOUT=300ms")
	if code := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", "write-00").Code; code != http.StatusNoContent {
		t.Fatalf("first write: %d", code)
	}
	codes := writeAll(s, []string{"write-01", "write-02"})
	slices.Sort(codes)
	if !slices.Equal(codes, []int{http.StatusNoContent, http.StatusGatewayTimeout}) {
		t.Errorf("loaders got %v, want one 204 and one 504", codes)
	}
	wantNoneInFlight(t, s)
}
