package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/limiter"
)

// rawStore is an HTTP/1.1 store written by hand, so that a test decides,
// request by request, when and how each is answered, and sees which
// requests arrived while the one ahead of them on their connection was not
// answered yet (pipelined). It reads a connection's requests one after the
// other, as every HTTP/1.1 server does.
type rawStore struct {
	t  *testing.T
	ln net.Listener
	// script decides what happens to request seq (0-based, over the whole
	// store) on connection conn (0-based): it may wait for the next request
	// to arrive, answer, or hang up.
	script func(c *rawConn, seq int, body string)

	mu        sync.Mutex
	conns     int
	seq       int
	answered  []string // bodies answered 2xx, in order
	pipelined int      // requests that arrived while the one ahead was unanswered
	wg        sync.WaitGroup
}

type rawConn struct {
	s     *rawStore
	nc    net.Conn
	br    *bufio.Reader
	index int
	// hungUp: the script closed the connection; what was read past the
	// current request is dropped with it.
	hungUp bool
}

func newRawStore(t *testing.T, script func(c *rawConn, seq int, body string)) *rawStore {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawStore{t: t, ln: ln, script: script}
	s.wg.Go(s.accept)
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *rawStore) url() string { return "http://" + s.ln.Addr().String() }

func (s *rawStore) accept() {
	var conns []net.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		conns = append(conns, nc)
		s.mu.Lock()
		c := &rawConn{s: s, nc: nc, br: bufio.NewReader(nc), index: s.conns}
		s.conns++
		s.mu.Unlock()
		s.wg.Go(c.serve)
	}
}

func (c *rawConn) serve() {
	defer c.nc.Close()
	for {
		req, err := http.ReadRequest(c.br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		c.s.mu.Lock()
		seq := c.s.seq
		c.s.seq++
		c.s.mu.Unlock()
		c.s.script(c, seq, string(body))
		if c.hungUp {
			return
		}
	}
}

// awaitNext waits up to d for the next request on c to arrive, before the
// current one is answered, and counts it as pipelined if it did.
func (c *rawConn) awaitNext(d time.Duration) bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.Peek(1)
	_ = c.nc.SetReadDeadline(time.Time{})
	if err != nil {
		return false
	}
	c.s.mu.Lock()
	c.s.pipelined++
	c.s.mu.Unlock()
	return true
}

// answer answers the current request; with closing, it says so and hangs
// up after the answer.
func (c *rawConn) answer(status int, body string, closing bool) {
	if status < 300 {
		c.s.mu.Lock()
		c.s.answered = append(c.s.answered, body)
		c.s.mu.Unlock()
	}
	conn := ""
	if closing {
		conn = "Connection: close\r\n"
	}
	payload := "ok"
	if status == http.StatusNoContent {
		payload = ""
	}
	fmt.Fprintf(c.nc, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s\r\n%s", status, http.StatusText(status), len(payload), conn, payload)
	if closing {
		c.hangUp()
	}
}

func (c *rawConn) hangUp() {
	c.nc.Close()
	c.hungUp = true
}

func (s *rawStore) counts() (conns, pipelined int, answered []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, s.pipelined, slices.Clone(s.answered)
}

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
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		// The first write is answered at once: nothing is pipelined
		// before the store has answered once. Every other one but the
		// last waits for the next to arrive.
		if seq > 0 && seq < n-1 && !c.awaitNext(10*time.Second) {
			t.Errorf("write %d: the next write did not arrive before its answer", seq)
		}
		c.answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.url())
	want := bodies(n)
	wantAllWritten(t, s, want)
	conns, pipelined, answered := store.counts()
	if conns != 1 {
		t.Errorf("store saw %d connections, want 1 (one write at a time)", conns)
	}
	if pipelined != n-2 {
		t.Errorf("%d writes arrived before the answer ahead of them, want %d", pipelined, n-2)
	}
	if got := sortedCopy(answered); !slices.Equal(got, want) {
		t.Errorf("store answered %v, want each of %v once", got, want)
	}
	if got := testutil.ToFloat64(s.proxy.m.pipelined); got != n-2 {
		t.Errorf("sluice_upstream_pipelined_total = %v, want %d", got, n-2)
	}
	wantNoneInFlight(t, s)
}

// A connection that breaks with a write pipelined behind the one the store
// is on: the one it broke on is retried as any write whose answer was
// lost, and the one behind it, never answered, is sent again without
// counting as a failure of the store.
func TestPipelineBrokenConnection(t *testing.T) {
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		if c.index == 0 && seq == 1 {
			c.awaitNext(10 * time.Second)
			c.hangUp() // on write 1, with the next one in the socket
			return
		}
		c.answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.url())
	want := bodies(3)
	wantAllWritten(t, s, want)
	_, pipelined, answered := store.counts()
	if pipelined != 1 {
		t.Fatalf("%d writes pipelined, want 1", pipelined)
	}
	if got := sortedCopy(answered); !slices.Equal(got, want) {
		t.Errorf("store answered %v, want each of %v once", got, want)
	}
	snap := s.lim.Snapshot()
	if snap.Samples[limiter.Failed] != 1 || snap.Samples[limiter.Neutral] != 1 {
		t.Errorf("samples %v: want one failure (the write the connection broke on) and one neutral (the one behind it)", snap.Samples)
	}
	wantNoneInFlight(t, s)
}

// An answer that closes the connection: the write behind it was not taken
// up, and goes again on a new connection.
func TestPipelineAnswerClosesConnection(t *testing.T) {
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		if c.index == 0 && seq == 1 {
			c.awaitNext(10 * time.Second)
			c.answer(http.StatusNoContent, body, true)
			return
		}
		c.answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.url())
	want := bodies(3)
	wantAllWritten(t, s, want)
	conns, pipelined, answered := store.counts()
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
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		if c.index == 0 && seq == 1 {
			c.awaitNext(10 * time.Second)
			select {
			case <-hung:
			case <-time.After(10 * time.Second):
			}
			return
		}
		c.answer(http.StatusNoContent, body, false)
	})
	t.Cleanup(func() { close(hung) }) // before the store's cleanup, which waits for it
	s := pipelinedServer(t, store.url(), "UPSTREAM_TIMEOUT=300ms")
	first := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", "write-00").Code
	if first != http.StatusNoContent {
		t.Fatalf("first write: %d", first)
	}
	codes := writeAll(s, []string{"write-01", "write-02"})
	slices.Sort(codes)
	if !slices.Equal(codes, []int{http.StatusNoContent, http.StatusGatewayTimeout}) {
		t.Errorf("loaders got %v, want one 204 and one 504", codes)
	}
	conns, pipelined, answered := store.counts()
	if conns != 2 || pipelined != 1 || len(answered) != 2 {
		t.Errorf("%d connections, %d pipelined, answered %v; want 2, 1, two writes", conns, pipelined, answered)
	}
	wantNoneInFlight(t, s)
}

// The slot passes to the write behind when the store's answer to the one
// ahead arrives, not when that answer has been copied to its loader: the
// store is on the follower from then on.
func TestPipelinePassesTheSlotWithTheAnswer(t *testing.T) {
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		if seq == 0 {
			c.awaitNext(10 * time.Second)
			c.answer(http.StatusOK, body, false)
			return
		}
		c.answer(http.StatusNoContent, body, false)
	})
	pl, lim, req := testPipeline(t, store, 1)

	ctx := context.Background()
	a, _ := lim.AcquirePipelined(ctx, 1)
	b, _ := lim.AcquirePipelined(ctx, 1)
	if b.Leader() != a {
		t.Fatal("b not staged behind a")
	}
	bDone := make(chan *http.Response, 1)
	go func() {
		resp, _, err := pl.roundTrip(ctx, ctx, req("b"), b, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		bDone <- resp
	}()
	respA, _, err := pl.roundTrip(ctx, ctx, req("a"), a, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if snap := lim.Snapshot(); b.Staged() || snap.InFlight != 1 || snap.Staged != 0 {
		t.Errorf("with a's answer read: b staged %v, in flight %d, staged %d; want b holding the one slot", b.Staged(), snap.InFlight, snap.Staged)
	}
	io.Copy(io.Discard, respA.Body)
	respA.Body.Close()
	a.Done(limiter.Sample{Outcome: limiter.Success})
	respB := <-bDone
	if respB == nil || respB.StatusCode != http.StatusNoContent {
		t.Fatalf("b: %v", respB)
	}
	respB.Body.Close()
	b.Done(limiter.Sample{Outcome: limiter.Success})
	if snap := lim.Snapshot(); snap.InFlight != 0 {
		t.Errorf("in flight %d after both, want 0", snap.InFlight)
	}
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
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		switch seq {
		case 1:
			c.awaitNext(10 * time.Second)
			time.Sleep(slow)
		case 2:
			time.Sleep(slow)
		}
		c.answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.url(), "UPSTREAM_TIMEOUT=2s")
	if code := send(s.ProxyHandler(), context.Background(), http.MethodPost, "/write", "write-00").Code; code != http.StatusNoContent {
		t.Fatalf("first write: %d", code)
	}
	wantAllWritten(t, s, []string{"write-01", "write-02"}) // each answered 1.2 s after the store took it up
	if _, pipelined, _ := store.counts(); pipelined != 1 {
		t.Errorf("%d pipelined, want 1", pipelined)
	}
	wantNoneInFlight(t, s)
}

// A loader that leaves while its write waits behind another: its answer is
// dropped when it comes, another write may be pipelined behind the same
// leader meanwhile (three on the connection), and everything completes.
func TestPipelineLoaderLeavesBehind(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		if seq == 1 {
			c.awaitNext(10 * time.Second)
			close(held)
			<-release
		}
		if body == "write-02" {
			c.answer(http.StatusOK, body, false) // with a body, which sluice drops
			return
		}
		c.answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.url())
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
	conns, _, answered := store.counts()
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
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		switch {
		case c.index == 0 && seq == 1:
			c.awaitNext(10 * time.Second)
		case c.index == 0 && seq == 2:
			<-hung
			return
		}
		c.answer(http.StatusNoContent, body, false)
	})
	t.Cleanup(func() { close(hung) }) // before the store's cleanup, which waits for it
	s := pipelinedServer(t, store.url(), "UPSTREAM_TIMEOUT=300ms")
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

// While a loader reads an answer's body slowly, its connection is not
// idle: a new write goes on another connection rather than behind an
// answer nobody can read yet.
func TestPipelineDrainingConnectionIsNotIdle(t *testing.T) {
	store := newRawStore(t, func(c *rawConn, seq int, body string) {
		c.answer(http.StatusOK, body, false) // with a body
	})
	pl, lim, req := testPipeline(t, store, 2)
	ctx := context.Background()
	a, _ := lim.AcquirePipelined(ctx, 1)
	respA, _, err := pl.roundTrip(ctx, ctx, req("a"), a, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// a's body is not read yet.
	b, _ := lim.AcquirePipelined(ctx, 1)
	if b.Staged() {
		t.Fatal("b staged with a slot free")
	}
	bDone := make(chan error, 1)
	go func() {
		resp, _, err := pl.roundTrip(ctx, ctx, req("b"), b, 10*time.Second)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		bDone <- err
	}()
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("b: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b waited behind a's unread body")
	}
	io.Copy(io.Discard, respA.Body)
	respA.Body.Close()
	if conns, _, answered := store.counts(); conns != 2 || len(answered) != 2 {
		t.Errorf("%d connections, answered %v; want 2 connections, both writes", conns, answered)
	}
	a.Done(limiter.Sample{Outcome: limiter.Success})
	b.Done(limiter.Sample{Outcome: limiter.Success})
}

// testPipeline is a pipeline to store on its own, with a limiter of slots
// concurrent writes and rate to spare, and how to make a write of a body.
func testPipeline(t *testing.T, store *rawStore, slots int) (*pipeline, *limiter.Controller, func(body string) *http.Request) {
	t.Helper()
	lim, err := limiter.New(limiter.Config{InitialRate: 100, MinRate: 1, MaxRate: 100, InitialConcurrency: slots, MaxConcurrency: slots, Burst: 10})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "UPSTREAM_URL="+store.url())
	tr, err := newTransport(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse(store.url())
	pl := newPipeline(tr, up, func() {})
	t.Cleanup(pl.close)
	req := func(body string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, store.url()+"/write", strings.NewReader(body))
		return r
	}
	return pl, lim, req
}
