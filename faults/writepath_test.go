package faults

// The write-path fault tests (writepath_*_test.go) run the sluice binary
// between a loader in the test and a store double on 127.0.0.1, and check
// after every fault what sluice owes its loaders:
//
//   - truthful: a clean 2xx only if the store took (answered 2xx to) a copy
//     of the write equal, byte for byte, to what the loader sent; and no
//     copy the store took differs from it (a truncated, empty or replayed
//     tail stored as if it were the write);
//   - at most once: the store takes a write at most once unless sluice may
//     retry it, and receives a streamed body at most once (it cannot be
//     replayed: sluice did not keep it);
//   - released: afterwards /v1/status shows nothing in flight or buffered,
//     and as many normal writes as there are send slots succeed at once;
//   - no leak: once loader and store have closed their connections,
//     sluice's open descriptors (/proc/<pid>/fd) and goroutines
//     (go_goroutines on its /metrics) are back to their count when it
//     became ready.

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// HeaderFaultMode is the header with which a loader in the write-path
// tests asks an h1Store for a misbehaviour. sluice forwards it.
const HeaderFaultMode = "X-Fault-Mode"

// writePathEnv is the configuration the write-path tests share: two send
// slots (a leaked slot is soon felt), bodies up to 16 KiB buffered for
// retries, short retries, and a queue timeout that turns a lost slot into
// a 429 within 2 s instead of a hang.
func writePathEnv(upstream string) []string {
	return []string{
		"SLUICE_UPSTREAM_URL=" + upstream,
		"SLUICE_INITIAL_CONCURRENCY=2", "SLUICE_MAX_CONCURRENCY=2",
		"SLUICE_INITIAL_RATE=1000",
		"SLUICE_UPSTREAM_TIMEOUT=3s",
		"SLUICE_QUEUE_TIMEOUT=2s",
		"SLUICE_RETRY_MAX=2", "SLUICE_RETRY_BACKOFF_MIN=10ms", "SLUICE_RETRY_BACKOFF_MAX=50ms",
		"SLUICE_MAX_RETRY_AFTER=200ms",
		"SLUICE_RETRY_BODY_MAX=16KiB", "SLUICE_BUFFER_BUDGET=1MiB",
		"SLUICE_CONTROL_INTERVAL=100ms",
		"SLUICE_SHUTDOWN_TIMEOUT=2s",
	}
}

// Sizes of the write-path bodies against SLUICE_RETRY_BODY_MAX=16KiB.
const (
	smallBody = 12 << 10 // buffered: sluice may send it again
	largeBody = 40 << 10 // streamed: sent once, as the loader sends it
)

// wpSluice is the sluice binary under a write-path fault, with the
// descriptors and goroutines it had when it became ready.
type wpSluice struct {
	*proc
	fds0, goroutines0 int
}

// startWritePath runs the sluice binary with writePathEnv(upstream) and env
// on top (a later value of a variable wins) and notes its baseline.
func startWritePath(t *testing.T, upstream string, env ...string) *wpSluice {
	t.Helper()
	p := startProc(t, append(writePathEnv(upstream), env...)...)
	s := &wpSluice{proc: p}
	// The least of a few readings: an admin connection that is closing
	// (the readiness probe's, the last reading's) must not count.
	s.fds0, s.goroutines0 = math.MaxInt, math.MaxInt
	n := 0
	eventually(time.Second, func() bool {
		s.goroutines0 = min(s.goroutines0, s.goroutines(t))
		s.fds0 = min(s.fds0, s.fds(t))
		n++
		return n == 5
	})
	return s
}

// fds counts sluice's open file descriptors.
func (s *wpSluice) fds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("sluice's descriptors: %v", err)
	}
	return len(ents)
}

// goroutines reads go_goroutines from sluice's /metrics.
func (s *wpSluice) goroutines(t *testing.T) int {
	t.Helper()
	return int(metricValue(metricsText(t, s.admin), "go_goroutines"))
}

// checkReleased waits (at most 3 s) until sluice has nothing in flight and
// nothing buffered, then sends one normal write per send slot, all at once,
// and wants each answered 2xx within 3 s: a leaked slot makes one wait for
// the queue timeout and get 429.
func (s *wpSluice) checkReleased(t *testing.T, slots int, normal func(i int) outcome) {
	t.Helper()
	if !eventually(3*time.Second, func() bool {
		st := status(t, s.admin)
		return st.Limiter.InFlight == 0 && st.BufferBytes == 0
	}) {
		st := status(t, s.admin)
		t.Errorf("after the faults sluice still has %d writes in flight and %d bytes buffered; want 0, 0", st.Limiter.InFlight, st.BufferBytes)
	}
	outs := make([]outcome, slots)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() { outs[i] = normal(i) })
	}
	wg.Wait()
	for _, o := range outs {
		if !o.clean2xx() || o.duration > 3*time.Second {
			t.Errorf("a normal write after the faults (%d send slots): %v, body %.200q; want 2xx within 3s", slots, o, o.body)
		}
	}
}

// checkNoLeak, once the loaders and the store have closed their
// connections, waits (at most 5 s) for sluice's descriptors and goroutines
// to be back to their baseline, then kills it.
//
// go_goroutines also counts goroutines the Go runtime starts for itself as
// it needs them (signal handling, finalizers and cleanups under load), so a
// count over the baseline with no descriptor over it is decided by the
// stacks: a leak is a parked goroutine that serves a connection, a request
// or a write (see perRequestGoroutines), and the runtime's own are not.
func (s *wpSluice) checkNoLeak(t *testing.T) {
	t.Helper()
	var fds, gs int
	if eventually(5*time.Second, func() bool {
		fds, gs = s.fds(t), s.goroutines(t)
		return fds <= s.fds0 && gs <= s.goroutines0
	}) {
		t.Logf("sluice's descriptors %d → %d, goroutines %d → %d", s.fds0, fds, s.goroutines0, gs)
		s.kill(t)
		return
	}
	stacks := s.dumpGoroutines(t)
	if leaked := perRequestGoroutines(stacks); fds > s.fds0 || len(leaked) > 0 {
		t.Errorf("sluice leaks: %d open descriptors (%d when ready), %d goroutines (%d when ready), with no connection left open; serving a connection or a write: %d",
			fds, s.fds0, gs, s.goroutines0, len(leaked))
		t.Logf("sluice's goroutines:\n%s", stacks)
	} else {
		t.Logf("sluice's descriptors %d → %d; goroutines %d → %d, none of them serving a connection or a write (the runtime's own)", s.fds0, fds, s.goroutines0, gs)
	}
	s.kill(t)
}

// dumpGoroutines makes sluice print every goroutine's stack (SIGQUIT, as
// the Go runtime does; sluice exits) and returns them.
func (s *wpSluice) dumpGoroutines(t *testing.T) string {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
	out := s.stderr.String()
	if i := strings.Index(out, "goroutine "); i >= 0 {
		out = out[i:]
	}
	return out
}

// longLived are the creators of the goroutines a ready sluice always has:
// its listeners, loops and signal handling, and the runtime's.
var longLived = []string{
	"runtime.", "os/signal.", "main.",
	"sync.(*WaitGroup).Go", // the control loop, the job manager, the credential refresher
	"github.com/sluice-dev/sluice/sidecar.(*Server).Serve",
	"github.com/sluice-dev/sluice/sidecar.serveUntil",
	"github.com/sluice-dev/sluice/sidecar/auth.(*Authenticator).Start",
}

// perRequestGoroutines returns the stacks, in a SIGQUIT dump, of goroutines
// created by anything else (a connection, a request or a write's) that
// are parked. A leak waits for something that never comes; one caught
// running, runnable or in a system call is on its way, and the test's own
// last scrape of /metrics is served by such a one, which the dump, sent
// the moment that scrape is answered, can catch still finishing the
// answer (in CI it did: a connection's goroutine in a write of
// finishRequest, with no descriptor over the baseline).
func perRequestGoroutines(dump string) []string {
	var out []string
	for _, g := range strings.Split(dump, "\n\n") {
		_, creator, ok := strings.Cut(g, "created by ")
		if !ok {
			continue // goroutine 1, or not a goroutine's stack
		}
		if slices.ContainsFunc(longLived, func(p string) bool { return strings.HasPrefix(creator, p) }) {
			continue
		}
		switch goroutineState(g) {
		case "running", "runnable", "syscall":
			continue
		}
		out = append(out, g)
	}
	return out
}

// goroutineState returns the state in the first line of a goroutine's
// stack in a dump ("IO wait" of "goroutine 7 [IO wait, 2 minutes]:"), or
// "" if it has none.
func goroutineState(stack string) string {
	header, _, _ := strings.Cut(stack, "\n")
	_, state, ok := strings.Cut(header, "[")
	if !ok {
		return ""
	}
	state, _, _ = strings.Cut(state, "]")
	state, _, _ = strings.Cut(state, ",")
	return state
}

func TestPerRequestGoroutines(t *testing.T) {
	// Shapes from a real dump: a goroutine of sluice's own, one serving a
	// connection that waits for a request that never comes (a leak), and
	// one finishing an answer in a write (the test's own scrape, on its
	// way out), once in a system call and once runnable.
	dump := strings.Join([]string{
		"goroutine 64 gp=0x1 m=nil [select]:\ngithub.com/sluice-dev/sluice/sidecar.(*Server).controlLoop(0x1)\ngithub.com/sluice-dev/sluice/sidecar.(*Server).StartLoops.func1()\ncreated by sync.(*WaitGroup).Go in goroutine 1",
		"goroutine 90 [IO wait, 2 minutes]:\nnet/http.(*conn).serve(0x1)\ncreated by net/http.(*Server).Serve in goroutine 86",
		"goroutine 1476 gp=0x2 m=7 mp=0x3 [syscall]:\nnet/http.checkConnErrorWriter.Write({0x0})\nnet/http.(*response).finishRequest(0x1)\nnet/http.(*conn).serve(0x1)\ncreated by net/http.(*Server).Serve in goroutine 86",
		"goroutine 1477 [runnable]:\nnet/http.(*conn).serve(0x1)\ncreated by net/http.(*Server).Serve in goroutine 86",
	}, "\n\n")
	got := perRequestGoroutines(dump)
	if len(got) != 1 || !strings.HasPrefix(got[0], "goroutine 90 ") {
		t.Errorf("per-request goroutines: %q; want only goroutine 90, parked in IO wait", got)
	}
	for stack, want := range map[string]string{
		"goroutine 7 [IO wait, 2 minutes]:\nx":                 "IO wait",
		"goroutine 8 gp=0x1 m=nil [select, locked to thread]:": "select",
		"goroutine 9 [running]:":                               "running",
		"not a goroutine":                                      "",
	} {
		if got := goroutineState(stack); got != want {
			t.Errorf("goroutineState(%q) = %q, want %q", stack, got, want)
		}
	}
}

// upload is one write a write-path test sends through sluice.
type upload struct {
	id      string
	method  string // PUT unless set
	path    string // /write unless set
	body    []byte
	chunked bool // no Content-Length: the loader sends it chunked
	header  map[string]string
}

func (u upload) String() string {
	framing := "Content-Length"
	if u.chunked {
		framing = "chunked"
	}
	return fmt.Sprintf("%s %s (%d B, %s)", cmp.Or(u.method, http.MethodPut), u.id, len(u.body), framing)
}

// payload is n bytes of lines that name id, so that no two writes share
// a body and a tail of one is not the whole of another.
func payload(id string, n int) []byte {
	b := make([]byte, 0, n+len(id)+32)
	for i := 0; len(b) < n; i++ {
		b = append(b, id...)
		b = append(b, " line "...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, '\n')
	}
	return b[:n]
}

// request builds u's request to sluice at proxyURL.
func (u upload) request(proxyURL string) *http.Request {
	if u.method == "" {
		u.method = http.MethodPut
	}
	if u.path == "" {
		u.path = "/write"
	}
	req, err := http.NewRequest(u.method, proxyURL+u.path, bytes.NewReader(u.body))
	if err != nil {
		panic("BUG: faults: " + err.Error())
	}
	if u.chunked {
		// Hide the reader's length from net/http: it sends the body chunked.
		req.Body = io.NopCloser(struct{ io.Reader }{bytes.NewReader(u.body)})
		req.ContentLength, req.GetBody = -1, nil
	}
	req.Header.Set(HeaderRequestID, u.id)
	req.Header.Set("Content-Type", "application/x-ndjson")
	for k, v := range u.header {
		req.Header.Set(k, v)
	}
	return req
}

// sendUpload sends u through c and records what the loader got.
func sendUpload(c *http.Client, proxyURL string, u upload) outcome {
	return doRequest(c, u.id, u.request(proxyURL))
}

// doRequest sends req through c and records what the loader got.
func doRequest(c *http.Client, id string, req *http.Request) outcome {
	start := time.Now()
	resp, err := c.Do(req)
	o := outcome{id: id}
	if err != nil {
		o.err, o.duration = err, time.Since(start)
		return o
	}
	o.status = resp.StatusCode
	o.body, o.err = io.ReadAll(resp.Body)
	resp.Body.Close()
	o.duration = time.Since(start)
	o.code = errorCode(resp.Header, o.status, o.body)
	return o
}

// errorCode is sluice's JSON error code in an answer, if it is one.
func errorCode(h http.Header, status int, body []byte) string {
	if status < 400 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		return ""
	}
	var e struct{ Error string }
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// newWritePathClient is a loader's client: no compression, short idle life.
func newWritePathClient() *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}
}

// bodyCopy is one request carrying a write's id as the store received it.
type bodyCopy struct {
	n     int64
	sum   [sha256.Size]byte
	whole bool // its body ended where its framing said, not cut off
	taken bool // the store answered it 2xx: it stored the write
}

// is reports whether c is a whole copy of body.
func (c bodyCopy) is(body []byte) bool {
	return c.whole && c.n == int64(len(body)) && c.sum == sha256.Sum256(body)
}

func (c bodyCopy) String() string {
	return fmt.Sprintf("{%d B sha256 %x… whole=%v taken=%v}", c.n, c.sum[:4], c.whole, c.taken)
}

// received records, per write id, every copy a store double received. It
// is safe for concurrent use.
type received struct {
	mu sync.Mutex
	m  map[string][]bodyCopy
}

// add records a copy of id and returns its index.
func (r *received) add(id string, c bodyCopy) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string][]bodyCopy{}
	}
	r.m[id] = append(r.m[id], c)
	return len(r.m[id]) - 1
}

// take marks copy i of id stored.
func (r *received) take(id string, i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[id][i].taken = true
}

// of returns the copies of id received so far.
func (r *received) of(id string) []bodyCopy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.m[id])
}

// readCopy reads a request body to its end (or its first error) and
// returns the copy it was.
func readCopy(body io.Reader) bodyCopy {
	h := sha256.New()
	n, err := io.Copy(h, body)
	c := bodyCopy{n: n, whole: err == nil}
	h.Sum(c.sum[:0])
	return c
}

// writeRule is what a write may come to.
type writeRule struct {
	// streamed: the body is over SLUICE_RETRY_BODY_MAX (or cannot be
	// buffered): sluice can send it once only.
	streamed bool
	// retryable: sluice may send it again (buffered, and PUT, or POST with
	// SLUICE_RETRY_POST): the store may take it more than once.
	retryable bool
	// also lists the statuses the loader may get besides a clean 2xx of
	// a whole copy the store took; a 5xx must carry sluice's JSON error.
	also []int
}

// checkWrite checks one write's invariants against the copies its store
// received.
func checkWrite(t *testing.T, u upload, o outcome, got []bodyCopy, rule writeRule) {
	t.Helper()
	var taken, whole int
	for _, c := range got {
		if !c.taken {
			continue
		}
		taken++
		if c.is(u.body) {
			whole++
		} else {
			t.Errorf("%v: the store took a copy that is not the write: %v, the loader sent %d B sha256 %x… (loader got %v)",
				u, c, len(u.body), sha256.Sum256(u.body), o)
		}
	}
	switch {
	case o.clean2xx() && whole == 0:
		t.Errorf("%v: the loader got %d, but the store took no whole copy of it (copies %v)", u, o.status, got)
	case o.clean2xx():
	case !slices.Contains(rule.also, o.status):
		t.Errorf("%v: the loader got %v, body %.300q; want a 2xx of a whole copy or one of %v (copies at the store %v)", u, o, o.body, rule.also, got)
	case o.status >= 500 && o.code == "":
		t.Errorf("%v: %d without sluice's JSON error body: %.300q", u, o.status, o.body)
	case o.status/100 == 4 && taken > 0:
		t.Errorf("%v: the loader was told %d (refused), but the store took the write (copies %v)", u, o.status, got)
	}
	if taken > 1 && !rule.retryable {
		t.Errorf("%v: a write sluice may not repeat was stored %d times (copies %v)", u, taken, got)
	}
	if rule.streamed && len(got) > 1 {
		t.Errorf("%v: a streamed body reached the store %d times, so it was replayed (copies %v; loader got %d)", u, len(got), got, o.status)
	}
}

// h1Store is a store double that speaks HTTP/1.1 by hand. Each request asks
// for its misbehaviour in its X-Fault-Mode header (see serveRequest), so
// that one store serves a table of faults and the normal writes between
// them; a fault meant to be survived (a drop) hits only the first copy of
// a write. Every method is safe for concurrent use; Close stops it and
// waits for its goroutines.
type h1Store struct {
	*conns // Done: holds end
	opts   h1Options
	got    received

	// held receives the id of a hold-for-next request; each value sent
	// on release lets one go on.
	held    chan string
	release chan struct{}

	mu           sync.Mutex
	upgrades     map[string]int // id → requests that carried Upgrade, HTTP2-Settings or Connection: upgrade
	busy         atomic.Int64   // requests being served
	switched     atomic.Int64   // connections switched by a 101
	switchClosed atomic.Int64   // of them, those the peer (sluice) closed
}

// h1Options tunes an h1Store.
type h1Options struct {
	// beforeTake, if set, runs before the store takes (answers 2xx) a
	// write, on the connection's goroutine.
	beforeTake func(id string)
}

func newH1Store(t *testing.T, opts h1Options) *h1Store {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h1Store{opts: opts, held: make(chan string, 64), release: make(chan struct{}), upgrades: map[string]int{}}
	s.conns = newConns(ln)
	s.start(s.serve)
	t.Cleanup(s.Close)
	return s
}

func (s *h1Store) URL() string { return "http://" + s.Addr() }

// upgradesSeen reports how many requests of id carried upgrade headers.
func (s *h1Store) upgradesSeen(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upgrades[id]
}

func (s *h1Store) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		s.busy.Add(1)
		next := s.serveRequest(c, br, req)
		s.busy.Add(-1)
		switch next {
		case connKeep:
			continue
		case connSwitched:
			s.switched.Add(1)
			if s.awaitPeerClose(c, br) {
				s.switchClosed.Add(1)
			}
		}
		return
	}
}

// settle waits (at most 5 s) until the store is not in the middle of a
// request, so that what it received is final.
func (s *h1Store) settle() bool {
	return eventually(5*time.Second, func() bool { return s.busy.Load() == 0 })
}

const storeAnswer = `{"ok":true}`

// answer writes a final answer; a 2xx takes copy i of id first.
func (s *h1Store) answer(c net.Conn, id string, i int, status int, extra string) bool {
	if status/100 == 2 {
		if s.opts.beforeTake != nil {
			s.opts.beforeTake(id)
		}
		s.got.take(id, i)
	}
	body := storeAnswer
	if status/100 != 2 {
		body = storeRefusal(status)
	}
	_, err := fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s",
		status, http.StatusText(status), len(body), extra, body)
	return err == nil
}

// storeRefusal is the body of a store double's non-2xx answer.
func storeRefusal(status int) string {
	return fmt.Sprintf(`{"message":%q,"from":"store"}`, http.StatusText(status))
}

// connNext is what becomes of a connection after a request.
type connNext int

const (
	connKeep     connNext = iota // it may carry another request
	connClose                    // the store closes it
	connSwitched                 // switched by a 101: held until the peer closes it
)

// serveRequest serves one request as its X-Fault-Mode says and reports
// what becomes of the connection:
//
//	(none)           a store that works: 100 Continue first if the request
//	                 expects it; reads the body; 200. A request that asks to
//	                 upgrade (Upgrade: h2c) is accepted: 101, then the
//	                 connection is held until the peer closes it.
//	drop-after-body  reads the whole body, then closes the connection
//	                 without an answer (it crashed). First copy only.
//	drop-mid-body    reads 8 KiB of the body, then resets the connection.
//	                 First copy only.
//	early-hints      103 Early Hints before reading the body, then 200.
//	continue         100 Continue (unasked for) before the body, then 200.
//	switch           reads the body, answers 101 Switching Protocols to
//	                 websocket, and holds the connection until the peer
//	                 closes it.
//	refuse-429, refuse-413  answers 429 or 413 without reading the body
//	                 (and without 100 Continue), then closes the connection.
//	hold-for-next    reads the body, waits for the next request to arrive
//	                 on the connection (at most 5 s), reports the id on held
//	                 and waits for release before answering 200.
func (s *h1Store) serveRequest(c net.Conn, br *bufio.Reader, req *http.Request) connNext {
	id := req.Header.Get(HeaderRequestID)
	mode := req.Header.Get(HeaderFaultMode)
	upgrade := req.Header.Get("Upgrade") != "" || req.Header.Get("Http2-Settings") != "" ||
		strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade")
	if upgrade {
		s.mu.Lock()
		s.upgrades[id]++
		s.mu.Unlock()
	}
	first := len(s.got.of(id)) == 0
	switch {
	case mode == "drop-after-body" && first:
		s.got.add(id, readCopy(req.Body))
		return connClose
	case mode == "drop-mid-body" && first:
		c8 := readCopy(io.LimitReader(req.Body, 8<<10))
		c8.whole = false
		s.got.add(id, c8)
		reset(c)
		return connClose
	case mode == "refuse-429" || mode == "refuse-413":
		s.got.add(id, bodyCopy{})
		status, _ := strconv.Atoi(strings.TrimPrefix(mode, "refuse-"))
		s.answer(c, id, 0, status, "Connection: close\r\n")
		lingerClose(c)
		return connClose
	case mode == "early-hints":
		if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"); err != nil {
			return connClose
		}
	case mode == "continue" || req.Header.Get("Expect") == "100-continue":
		if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return connClose
		}
	}
	cp := readCopy(req.Body)
	i := s.got.add(id, cp)
	if !cp.whole {
		return connClose
	}
	switch {
	case mode == "switch" || upgrade:
		proto := "websocket"
		if upgrade {
			proto = cmp.Or(req.Header.Get("Upgrade"), "h2c")
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", proto); err != nil {
			return connClose
		}
		return connSwitched
	case mode == "hold-for-next":
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := br.Peek(1)
		_ = c.SetReadDeadline(time.Time{})
		if err == nil {
			s.held <- id
		}
		if !s.hold() {
			return connClose
		}
	}
	if !s.answer(c, id, i, http.StatusOK, "") {
		return connClose
	}
	return connKeep
}

// hold waits for a value on release (true) or for the store to close.
func (s *h1Store) hold() bool {
	select {
	case <-s.release:
		return true
	case <-s.Done():
		return false
	}
}

// awaitPeerClose reads and discards until the peer closes the connection
// (true) or the store closes (false).
func (s *h1Store) awaitPeerClose(c net.Conn, br *bufio.Reader) bool {
	_, err := io.Copy(io.Discard, br)
	return !errors.Is(err, net.ErrClosed) // EOF or a reset: the peer's doing
}

// lingerClose closes c after an answer sent without reading the request
// body: it sends FIN, then drains what the peer still sends (at most 2 s),
// so that the peer reads the answer instead of a reset.
func lingerClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}

// normalWriter returns a func that sends a normal small PUT through
// sluice at proxyURL, for checkReleased.
func normalWriter(c *http.Client, proxyURL, prefix string) func(int) outcome {
	return func(i int) outcome {
		id := fmt.Sprintf("%s-normal-%d", prefix, i)
		return sendUpload(c, proxyURL, upload{id: id, body: payload(id, 100)})
	}
}
