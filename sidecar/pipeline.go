package sidecar

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

// pipeline sends the writes sluice may repeat on HTTP/1.1 connections of
// its own, pipelined (RFC 9112 §9.3.2, SLUICE_PIPELINE): a write whose
// limiter permit is staged (limiter.Controller.AcquirePipelined) is written
// on the connection of a write in flight, before that one is answered.
// A server reads a connection's requests one after the other, so the store
// still works on one write per connection, and finds the next one in its
// socket the moment it answers one: a store that takes one insert at a
// time (VictoriaMetrics' -maxConcurrentInserts) is kept busy without a
// write waiting in its own queue, where it would be refused.
//
// Only writes whose body is in memory and whose method may be retried go
// this way: if a connection breaks, the writes behind the one it broke on
// were not answered and are sent again (the recovery from partial failure
// that §9.3.2 asks of a client that pipelines them).
type pipeline struct {
	dial      func(ctx context.Context) (net.Conn, error)
	idle      time.Duration // an unused connection is closed after this
	pipelined func()        // counts a write sent behind another

	mu     sync.Mutex
	conns  map[*pipeConn]struct{}
	onConn map[*limiter.Permit]*pipeCall // calls on a connection, not answered yet, by permit
	parked map[*limiter.Permit]*pipeCall // followers waiting for their leader to be written, by leader
	closed bool
}

// reasonPipelineBroken classifies a pipeBrokenError.
const reasonPipelineBroken = "pipeline_broken"

// pipeBrokenError is what a write gets when the connection it was pipelined
// on broke before its answer: it was not answered, and whether the store
// took it up is unknown only if it was at the head. Retryable.
type pipeBrokenError struct{ err error }

func (e *pipeBrokenError) Error() string {
	return "sluice: pipelined connection broke before the answer: " + e.err.Error()
}
func (e *pipeBrokenError) Unwrap() error { return e.err }

var (
	errPipeClosed = errors.New("the server closed the connection after an earlier answer")
	errPipeIdle   = errors.New("idle")
	errPipeDown   = errors.New("sluice is shutting down")
)

// pipeConn is one connection. Calls are written by its writer goroutine and
// answered by its reader goroutine, both in the order they were added.
type pipeConn struct {
	pl     *pipeline
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	writes chan *pipeCall // to the writer; capacity 2, never blocks
	reads  chan *pipeCall // to the reader; capacity 2, never blocks

	// Guarded by pl.mu.
	calls []*pipeCall // added and not yet answered, oldest first: calls[0] is the one the store is on
	err   error       // set once broken: no call is added
	timer *time.Timer // closes the connection once idle
}

// pipeCall is one write on a pipeConn.
type pipeCall struct {
	req    *http.Request
	permit *limiter.Permit
	pc     *pipeConn     // set when added, guarded by pl.mu
	added  chan struct{} // closed when a parked follower was added behind its leader
	result chan result   // capacity 1: exactly one result is sent
	state  atomic.Int32
	start  time.Time // when the store took it up; written before its result
	stop   func() bool
}

type result struct {
	resp *http.Response
	err  error
}

const (
	callWaiting   = iota
	callAnswered  // its result is sent
	callAbandoned // its caller left; the reader discards its answer
)

// deliver sends r to the caller, unless it left; it reports whether it did.
func (c *pipeCall) deliver(r result) bool {
	if !c.state.CompareAndSwap(callWaiting, callAnswered) {
		return false
	}
	c.result <- r
	return true
}

func newPipeline(tr *http.Transport, up *url.URL, pipelined func()) *pipeline {
	host := up.Host
	if up.Port() == "" {
		if up.Scheme == "https" {
			host = net.JoinHostPort(up.Hostname(), "443")
		} else {
			host = net.JoinHostPort(up.Hostname(), "80")
		}
	}
	pl := &pipeline{idle: tr.IdleConnTimeout, pipelined: pipelined, conns: map[*pipeConn]struct{}{},
		onConn: map[*limiter.Permit]*pipeCall{}, parked: map[*limiter.Permit]*pipeCall{}}
	pl.dial = func(ctx context.Context) (net.Conn, error) {
		nc, err := tr.DialContext(ctx, "tcp", host)
		if err != nil || up.Scheme != "https" {
			return nc, err
		}
		cfg := tr.TLSClientConfig.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = up.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"} // pipelining is HTTP/1.1's
		hctx, cancel := context.WithTimeout(ctx, tr.TLSHandshakeTimeout)
		defer cancel()
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	return pl
}

// roundTrip sends req under permit and returns the store's answer, and
// when the store took req up: when it was written, or when the store
// answered the write ahead of it. The answer's body must be read to its
// end or closed: the next answer on the connection comes after it. ctx
// bounds the whole write: at its deadline the connection is closed (the
// writes behind req get a pipeBrokenError); if it is cancelled, req's
// answer is read and dropped when it comes, the connection stays.
func (pl *pipeline) roundTrip(ctx context.Context, req *http.Request, permit *limiter.Permit) (*http.Response, time.Time, error) {
	c := &pipeCall{req: req, permit: permit, result: make(chan result, 1)}
	c.stop = context.AfterFunc(ctx, func() { pl.cancel(c, ctx.Err()) })
	if err := pl.add(ctx, c); err != nil {
		c.stop()
		return nil, time.Time{}, err
	}
	r := <-c.result
	if r.err != nil {
		c.stop()
		return nil, time.Time{}, r.err
	}
	return r.resp, c.start, nil
}

// add puts c on a connection: a staged write right behind its leader,
// any other on an idle connection or a new one.
func (pl *pipeline) add(ctx context.Context, c *pipeCall) error {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return errPipeDown
	}
	if l := c.permit.Leader(); l != nil {
		if lc := pl.onConn[l]; lc != nil {
			lc.pc.addLocked(c)
			pl.mu.Unlock()
			pl.pipelined()
			return nil
		}
		// The leader is not written yet: wait for it, or for the slot
		// (the leader was answered, or ended unsent). The limiter hands
		// the follower the leader's slot in those cases, so the store
		// never sees more writes than the limit.
		c.added = make(chan struct{})
		pl.parked[l] = c
		pl.mu.Unlock()
		select {
		case <-c.added:
			pl.pipelined()
			return nil
		case <-c.permit.Ready():
		case <-ctx.Done():
		}
		pl.mu.Lock()
		if pl.parked[l] != c {
			pl.mu.Unlock()
			pl.pipelined()
			return nil // added behind its leader meanwhile
		}
		delete(pl.parked, l)
		if err := ctx.Err(); err != nil {
			pl.mu.Unlock()
			return err
		}
	}
	for pc := range pl.conns {
		if pc.err == nil && len(pc.calls) == 0 {
			pc.addLocked(c)
			pl.mu.Unlock()
			return nil
		}
	}
	pl.mu.Unlock()

	nc, err := pl.dial(ctx)
	if err != nil {
		return err
	}
	pc := &pipeConn{
		pl: pl, nc: nc,
		br:     bufio.NewReader(nc),
		bw:     bufio.NewWriterSize(nc, 64<<10),
		writes: make(chan *pipeCall, 2),
		reads:  make(chan *pipeCall, 2),
	}
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		nc.Close()
		return errPipeDown
	}
	pl.conns[pc] = struct{}{}
	pc.addLocked(c)
	pl.mu.Unlock()
	go pc.writeLoop()
	go pc.readLoop()
	return nil
}

// addLocked queues c for writing and reading, and its follower right
// behind it if that is parked. Requires that pl.mu is held and pc is not
// broken.
func (pc *pipeConn) addLocked(c *pipeCall) {
	pl := pc.pl
	if pc.timer != nil {
		pc.timer.Stop()
	}
	if len(pc.calls) == 0 {
		c.start = time.Now()
	}
	c.pc = pc
	pc.calls = append(pc.calls, c)
	pl.onConn[c.permit] = c
	pc.writes <- c
	pc.reads <- c
	if f := pl.parked[c.permit]; f != nil && len(pc.calls) == 1 {
		delete(pl.parked, c.permit)
		pc.addLocked(f)
		close(f.added)
	}
}

// cancel ends c's wait when its context ends: at a deadline the store is
// not answering, and the connection goes; a caller that left abandons c.
func (pl *pipeline) cancel(c *pipeCall, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		pl.mu.Lock()
		pc := c.pc
		pl.mu.Unlock()
		if pc != nil {
			pc.fail(err, c)
		}
	}
	if c.state.CompareAndSwap(callWaiting, callAbandoned) {
		c.result <- result{err: err}
	}
}

// fail breaks pc: every call not yet answered gets an error, culprit its
// cause and the others a pipeBrokenError, and the connection is closed.
func (pc *pipeConn) fail(cause error, culprit *pipeCall) {
	pl := pc.pl
	pl.mu.Lock()
	if pc.err != nil {
		pl.mu.Unlock()
		return
	}
	pc.err = cause
	calls := pc.calls
	pc.calls = nil
	for _, c := range calls {
		delete(pl.onConn, c.permit)
	}
	delete(pl.conns, pc)
	close(pc.writes)
	close(pc.reads)
	if pc.timer != nil {
		pc.timer.Stop()
	}
	pl.mu.Unlock()
	pc.nc.Close()
	for i, c := range calls {
		err := cause
		if c != culprit && (culprit != nil || i > 0) {
			err = &pipeBrokenError{cause}
		}
		c.deliver(result{err: err})
	}
}

func (pc *pipeConn) writeLoop() {
	for c := range pc.writes {
		err := c.req.Write(pc.bw)
		if err == nil {
			err = pc.bw.Flush()
		}
		if err != nil {
			pc.fail(err, nil)
			return
		}
	}
}

func (pc *pipeConn) readLoop() {
	for {
		// Wait for an answer, or notice that the server closed the
		// connection while it was idle.
		if _, err := pc.br.Peek(1); err != nil {
			pc.fail(err, nil)
			return
		}
		var c *pipeCall
		select {
		case c = <-pc.reads:
		default:
		}
		if c == nil {
			pc.fail(errors.New("sluice: the store sent bytes that answer no request"), nil)
			return
		}
		resp, err := readFinalResponse(pc.br, c.req)
		if err != nil {
			pc.fail(err, nil)
			return
		}
		pl := pc.pl
		pl.mu.Lock()
		if pc.err != nil {
			pl.mu.Unlock()
			resp.Body.Close()
			return
		}
		pc.calls = pc.calls[1:]
		delete(pl.onConn, c.permit)
		if len(pc.calls) > 0 && !resp.Close {
			// The store has moved on to the write behind c.
			pc.calls[0].start = time.Now()
		}
		// c's follower takes its slot, written behind it or not yet.
		c.permit.Pass()
		pl.mu.Unlock()

		done := make(chan error, 1)
		if resp.Body != http.NoBody {
			resp.Body = &pipeBody{rc: resp.Body, done: done, stop: c.stop}
		} else {
			c.stop()
			done <- nil
		}
		if !c.deliver(result{resp: resp}) {
			// Abandoned: the answer is read and dropped here.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err := <-done; err != nil {
			pc.fail(err, nil)
			return
		}
		if resp.Close {
			// The writes behind c were not taken up.
			pc.fail(&pipeBrokenError{errPipeClosed}, nil)
			return
		}
		pl.mu.Lock()
		if len(pc.calls) == 0 && pc.err == nil {
			if pc.timer == nil {
				pc.timer = time.AfterFunc(pl.idle, pc.closeIdle)
			} else {
				pc.timer.Reset(pl.idle)
			}
		}
		pl.mu.Unlock()
	}
}

// readFinalResponse reads req's answer, past any 1xx interim ones.
func readFinalResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			resp.Body.Close()
			return nil, fmt.Errorf("sluice: the store switched protocols on a pipelined write")
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			continue
		}
		return resp, nil
	}
}

func (pc *pipeConn) closeIdle() {
	pl := pc.pl
	pl.mu.Lock()
	idle := len(pc.calls) == 0
	pl.mu.Unlock()
	if idle {
		pc.fail(errPipeIdle, nil)
	}
}

// close closes every connection: the calls still on them get errors.
func (pl *pipeline) close() {
	pl.mu.Lock()
	pl.closed = true
	conns := make([]*pipeConn, 0, len(pl.conns))
	for pc := range pl.conns {
		conns = append(conns, pc)
	}
	pl.mu.Unlock()
	for _, pc := range conns {
		pc.fail(errPipeDown, nil)
	}
}

// pipeBody is an answer's body on a pipelined connection: the reader waits
// for its end before it reads the next answer.
type pipeBody struct {
	rc   io.ReadCloser
	done chan error
	stop func() bool
	once sync.Once
}

func (b *pipeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		if err == io.EOF {
			b.finish(nil)
		} else {
			b.finish(err)
		}
	}
	return n, err
}

// Close reads what is left of the body (net/http's client bodies do), so
// the connection stays usable; the attempt's deadline bounds that.
func (b *pipeBody) Close() error {
	err := b.rc.Close()
	b.finish(err)
	return err
}

func (b *pipeBody) finish(err error) {
	b.once.Do(func() {
		b.stop()
		b.done <- err
	})
}
