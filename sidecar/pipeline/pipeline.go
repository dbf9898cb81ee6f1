// Package pipeline is sluice's HTTP/1.1 pipelining client (RFC 9112
// §9.3.2, SLUICE_PIPELINE): writes that may be sent again go on connections
// of its own, the next one written before the store answers the one ahead.
// It owns those connections, the order of writes and answers on them, and
// each write's deadline from when the store takes it up. It does not decide
// which writes are pipelined, nor when a write may go behind another: the
// limiter does (limiter.Controller.AcquirePipelined), and the pipeline
// reads that decision through Permit.
package pipeline

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Permit is what the pipeline needs of a write's limiter permit. Values are
// compared with ==, so an implementation is a comparable value (a pointer,
// or a struct of one).
type Permit interface {
	// Leader is the permit this write was staged behind: it goes on the
	// leader's connection, right behind it. Nil for a write that is not
	// staged.
	Leader() Permit
	// Ready is closed when a staged write takes a send slot of its own
	// (its leader was answered, or ended unsent).
	Ready() <-chan struct{}
	// Pass hands the permit's slot to its follower: called when the
	// store's answer to this write arrives.
	Pass()
}

// Pipeline sends writes pipelined: a write whose permit is staged is
// written on its leader's connection, before the leader is answered. A
// server reads a connection's requests one after the other, so the store
// still works on one write per connection, and finds the next one in its
// socket the moment it answers one: a store that takes one insert at a time
// (VictoriaMetrics' -maxConcurrentInserts) is kept busy without a write
// waiting in its own queue, where it would be refused.
//
// Only writes whose body is in memory and whose method may be retried go
// this way: if a connection breaks, the writes behind the one it broke on
// were not answered and are sent again (the recovery from partial failure
// that §9.3.2 asks of a client that pipelines them).
//
// Each write's deadline runs from when the store takes it up: when it is
// written at the front of its connection, or when the write ahead of it is
// answered. A write waits behind another at most until that one's
// deadline, which closes the connection.
type Pipeline struct {
	dial      func(ctx context.Context) (net.Conn, error)
	idle      time.Duration // an unused connection is closed after this
	pipelined func()        // counts a write sent behind another
	maxHeader int64         // bytes of an answer's head, as tr.MaxResponseHeaderBytes

	mu     sync.Mutex
	conns  map[*pipeConn]struct{}
	onConn map[Permit]*pipeCall // calls on a connection and not answered, by permit
	parked map[Permit]*pipeCall // followers waiting for their leader to be written, by leader
	closed bool
}

// BrokenError is what a write gets when the connection it was pipelined
// on broke before its answer, and the store had not taken it up: it was
// behind the write the connection broke on, the server had closed the
// connection before it, or it was not written yet. It is sent again.
type BrokenError struct{ err error }

func (e *BrokenError) Error() string {
	return "sluice: pipelined connection broke before the answer: " + e.err.Error()
}
func (e *BrokenError) Unwrap() error { return e.err }

var (
	errPipeClosed   = errors.New("the server closed the connection after an earlier answer")
	errPipeIdle     = errors.New("idle")
	errPipeDown     = errors.New("sluice is shutting down")
	errPipeStranger = errors.New("sluice: the store sent bytes that answer no request")
	errPipeUnread   = errors.New("sluice: the answer ahead was still being read at its deadline")
)

// pipeConn is one connection: its writer goroutine writes the calls in the
// order they were added, its reader goroutine reads their answers in the
// same order.
type pipeConn struct {
	pl   *Pipeline
	nc   net.Conn
	head *io.LimitedReader // under br: bounds the head of each answer (readFinalResponse)
	br   *bufio.Reader
	bw   *bufio.Writer
	kick chan struct{} // capacity 1: wakes the writer
	done chan struct{} // closed when the connection breaks

	// Guarded by pl.mu.
	calls  []*pipeCall // added and not answered, oldest first: calls[0] is the one the store is on
	unsent []*pipeCall // of them, the ones not written yet
	err    error       // set once broken: no call is added
	idle   *time.Timer // closes the connection once unused for pl.idle
	// draining: an answer's body is being read, so no later answer can
	// be; closing: the server said it closes after that answer. Either
	// way no write is added as to an idle connection.
	draining bool
	closing  bool
}

// pipeCall is one write on a pipeConn.
type pipeCall struct {
	req     *http.Request
	permit  Permit
	timeout time.Duration
	result  chan result // capacity 1: exactly one result is sent
	state   atomic.Int32
	stop    func() bool // stops the watch on the caller's context
	dropped atomic.Bool // its body was closed unsent

	// Guarded by pl.mu.
	pc        *pipeConn
	withdrawn bool          // its context ended before it was written: never to be
	sent      bool          // its writer has begun to write it
	added     chan struct{} // closed when a parked follower was added behind its leader
	start     time.Time     // when the store took it up
	deadline  *time.Timer   // from start
	finished  bool          // its answer was read to the end, or it failed
	settled   chan struct{} // made when its caller left it written: closed when finished
}

type result struct {
	resp *http.Response
	err  error
}

const (
	callWaiting   = iota
	callAnswered  // its result is sent
	callAbandoned // its caller left; the reader drops its answer
)

// drop closes c's body, once c will never be written. A RoundTripper
// closes the body on every path, as req.Write does once it is sent: the
// proxy's buffered body goes back to its pool on Close, and otherwise a
// write that ended unsent left it to the garbage collector.
func (c *pipeCall) drop() {
	if c.req.Body != nil && c.dropped.CompareAndSwap(false, true) {
		c.req.Body.Close()
	}
}

// deliver sends r to the caller, unless it left; it reports whether it did.
func (c *pipeCall) deliver(r result) bool {
	if !c.state.CompareAndSwap(callWaiting, callAnswered) {
		return false
	}
	c.result <- r
	return true
}

// New returns a Pipeline to the store at up, dialling and handshaking as tr
// does; pipelined is called for each write sent behind another.
func New(tr *http.Transport, up *url.URL, pipelined func()) *Pipeline {
	host := up.Host
	if up.Port() == "" {
		if up.Scheme == "https" {
			host = net.JoinHostPort(up.Hostname(), "443")
		} else {
			host = net.JoinHostPort(up.Hostname(), "80")
		}
	}
	// Idle connections are closed well before the usual server idle
	// timeouts (60 s and up), so that a write rarely meets a server
	// closing one: the reader notices that only when it happens.
	pl := &Pipeline{idle: min(tr.IdleConnTimeout, 30*time.Second), pipelined: pipelined, conns: map[*pipeConn]struct{}{},
		onConn: map[Permit]*pipeCall{}, parked: map[Permit]*pipeCall{}, maxHeader: tr.MaxResponseHeaderBytes}
	if pl.maxHeader <= 0 {
		pl.maxHeader = 10 << 20 // net/http's default
	}
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

// roundTrip sends req under permit and returns the store's answer and when
// the store took req up. The answer's body must be read to its end or
// closed: the next answer on the connection comes after it. timeout bounds
// the write from when the store took it up to the end of its answer: then
// the connection is closed, and the writes behind req get an error (a
// BrokenError when the store cannot have taken them up).
//
// ctx ends when the loader leaves or its job is cancelled; loader, only
// when the loader leaves. When ctx ends before req is written, req is taken
// off its connection and never sent. Once written it cannot be recalled:
// the store may store it. Then a cancelled job's write still waits for the
// store's answer, which its loader gets; a loader that left abandons it,
// and its answer is read and dropped when it comes, the connection kept.
func (pl *Pipeline) RoundTrip(ctx, loader context.Context, req *http.Request, permit Permit, timeout time.Duration) (*http.Response, time.Time, error) {
	if err := ctx.Err(); err != nil {
		// Its caller has left already: the watches below run apart from
		// add, which could put it on a connection first.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, time.Time{}, err
	}
	c := &pipeCall{req: req, permit: permit, timeout: timeout, result: make(chan result, 1)}
	abandon := func(err error) {
		if c.state.CompareAndSwap(callWaiting, callAbandoned) {
			c.result <- result{err: err}
		}
	}
	stopCtx := context.AfterFunc(ctx, func() {
		if pl.withdraw(c) {
			c.drop()
			abandon(ctx.Err())
		}
	})
	stopLoader := context.AfterFunc(loader, func() { abandon(loader.Err()) })
	c.stop = func() bool {
		a, b := stopCtx(), stopLoader()
		return a && b
	}
	if err := pl.add(ctx, c); err != nil {
		c.stop()
		c.drop() // on no connection
		return nil, time.Time{}, err
	}
	r := <-c.result
	if r.err != nil {
		c.stop()
		if c.state.Load() == callAbandoned {
			if settled := pl.settle(c); settled != nil {
				return nil, time.Time{}, &LeftError{Err: r.err, Settled: settled}
			}
		}
		return nil, time.Time{}, r.err
	}
	return r.resp, c.start, nil
}

// LeftError is the error of a write whose caller left (the loader, or its
// job's cancel) after it was written: the store has it, and may still
// take it up. Settled is closed when that is over (its answer was read
// and dropped, or its connection closed, within its timeout), so that
// whoever counts the write as the store's (a job's cancel waits for
// them) counts it until then.
type LeftError struct {
	Err     error
	Settled <-chan struct{}
}

func (e *LeftError) Error() string { return e.Err.Error() }
func (e *LeftError) Unwrap() error { return e.Err }

// settle returns, for c whose caller left, a channel closed when c is
// over, or nil when it is over or was never written (nor will be: it is
// taken off its connection, which the loader's leaving may not have done
// yet, as the two watches run apart).
func (pl *Pipeline) settle(c *pipeCall) <-chan struct{} {
	if pl.withdraw(c) {
		c.drop()
		return nil
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if c.finished {
		return nil
	}
	c.settled = make(chan struct{})
	return c.settled
}

// add puts c on a connection: a staged write right behind its leader,
// any other on an idle connection or a new one.
func (pl *Pipeline) add(ctx context.Context, c *pipeCall) error {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return errPipeDown
	}
	if c.withdrawn {
		pl.mu.Unlock()
		return ctx.Err()
	}
	if l := c.permit.Leader(); l != nil {
		if lc := pl.onConn[l]; lc != nil {
			lc.pc.addLocked(c)
			pl.mu.Unlock()
			pl.pipelined()
			return nil
		}
		// The leader is not written yet: wait for it, or for the slot
		// (the leader was answered, or ended unsent: the limiter then
		// hands the follower the leader's slot, so the store never sees
		// more writes than the limit).
		c.added = make(chan struct{})
		pl.parked[l] = c
		pl.mu.Unlock()
		wait := time.NewTimer(c.timeout)
		var err error
		select {
		case <-c.added:
		case <-c.permit.Ready():
		case <-ctx.Done():
			err = ctx.Err()
		case <-wait.C:
			// Not sent, so not the store's delay: sent again.
			err = &BrokenError{errors.New("its leader was not written in time")}
		}
		wait.Stop()
		pl.mu.Lock()
		if pl.parked[l] != c {
			pl.mu.Unlock()
			pl.pipelined()
			return nil // added behind its leader
		}
		delete(pl.parked, l)
		if err == nil && pl.closed {
			err = errPipeDown
		}
		if err == nil && c.withdrawn {
			err = ctx.Err()
		}
		if err != nil {
			pl.mu.Unlock()
			return err
		}
	}
	if c.withdrawn {
		pl.mu.Unlock()
		return ctx.Err()
	}
	for pc := range pl.conns {
		if pc.err == nil && len(pc.calls) == 0 && !pc.draining && !pc.closing {
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
	head := &io.LimitedReader{R: nc, N: math.MaxInt64}
	pc := &pipeConn{
		pl: pl, nc: nc, head: head,
		br:   bufio.NewReader(head),
		bw:   bufio.NewWriterSize(nc, 64<<10),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		nc.Close()
		return errPipeDown
	}
	pl.conns[pc] = struct{}{}
	if c.withdrawn {
		pc.idleLocked()
	} else {
		pc.addLocked(c)
	}
	pl.mu.Unlock()
	go pc.writeLoop()
	go pc.readLoop()
	return nil
}

// addLocked queues c on pc, and its parked follower right behind it.
// Requires that pl.mu is held and pc is not broken.
func (pc *pipeConn) addLocked(c *pipeCall) {
	pl := pc.pl
	if pc.idle != nil {
		pc.idle.Stop()
	}
	c.pc = pc
	pc.calls = append(pc.calls, c)
	pc.unsent = append(pc.unsent, c)
	pl.onConn[c.permit] = c
	if len(pc.calls) == 1 {
		pl.startLocked(c)
	}
	select {
	case pc.kick <- struct{}{}:
	default:
	}
	if f := pl.parked[c.permit]; f != nil && len(pc.calls) == 1 && !f.withdrawn {
		delete(pl.parked, c.permit)
		pc.addLocked(f)
		close(f.added)
	}
}

// withdraw takes c off its connection if it is not written yet, so that it
// never is, and reports whether c was not written (nor will be).
func (pl *Pipeline) withdraw(c *pipeCall) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pc := c.pc
	if pc == nil {
		// Parked, or not yet on a connection: add sees this and sends
		// it nowhere.
		c.withdrawn = true
		return true
	}
	if pc.err != nil {
		return false // broken: it gets the connection's error
	}
	i := slices.Index(pc.unsent, c)
	if i < 0 {
		return false // written, at least in part
	}
	c.withdrawn = true
	pc.unsent = slices.Delete(pc.unsent, i, i+1)
	front := len(pc.calls) > 0 && pc.calls[0] == c
	pc.calls = slices.DeleteFunc(pc.calls, func(x *pipeCall) bool { return x == c })
	delete(pl.onConn, c.permit)
	pl.finishLocked(c)
	// A follower parked behind c stays parked: it goes on its own once
	// c's permit ends and hands it the slot.
	switch {
	case len(pc.calls) == 0:
		pc.idleLocked()
	case front:
		pl.startLocked(pc.calls[0]) // the store will take this one up next
	}
	return true
}

// idleLocked arms pc's idle timer when nothing is on it. Requires that
// pl.mu is held.
func (pc *pipeConn) idleLocked() {
	if len(pc.calls) > 0 || pc.err != nil || pc.draining {
		return
	}
	if pc.idle == nil {
		pc.idle = time.AfterFunc(pc.pl.idle, pc.closeIdle)
	} else {
		pc.idle.Reset(pc.pl.idle)
	}
}

// startLocked notes that the store takes c up now, and starts its
// deadline. Requires that pl.mu is held.
func (pl *Pipeline) startLocked(c *pipeCall) {
	c.start = time.Now()
	c.deadline = time.AfterFunc(c.timeout, func() { pl.expire(c) })
}

// finishLocked ends c's deadline: its answer was read to the end, or it
// failed. Requires that pl.mu is held.
func (pl *Pipeline) finishLocked(c *pipeCall) {
	if !c.finished {
		c.finished = true
		if c.settled != nil {
			close(c.settled)
		}
	}
	if c.deadline != nil {
		c.deadline.Stop()
	}
}

// expire closes c's connection at c's deadline, unless c is over: the
// store did not answer it in time.
func (pl *Pipeline) expire(c *pipeCall) {
	pl.mu.Lock()
	if c.finished || c.pc == nil {
		pl.mu.Unlock()
		return
	}
	pc := c.pc
	// With c answered and its body still being read, or an earlier body
	// being read, the store may have answered the writes behind c too
	// (they may be stored): they are not pipeBrokenErrors. Unless the
	// answer being read closes the connection: the store takes up nothing
	// behind it.
	unread := pc.draining || !slices.Contains(pc.calls, c)
	closing := pc.closing
	calls := pc.breakLocked(context.DeadlineExceeded)
	pl.mu.Unlock()
	if unread {
		pc.nc.Close()
		for _, b := range calls {
			var err error
			switch {
			case closing && b != c:
				err = &BrokenError{errPipeClosed}
			case !b.sent:
				b.drop()
				err = &BrokenError{context.DeadlineExceeded}
			case b == c:
				err = context.DeadlineExceeded
			default:
				err = errPipeUnread
			}
			b.deliver(result{err: err})
			b.stop()
		}
		return
	}
	pc.closeAndFail(calls, context.DeadlineExceeded, c)
}

// fail breaks pc for cause: the call at its front gets cause, the ones
// behind a BrokenError. Behind an answer that closes the connection, all
// get a BrokenError: the store took none of them up, however the
// connection then broke (a write into it, once the store is gone).
func (pc *pipeConn) fail(cause error) {
	pc.pl.mu.Lock()
	closing := pc.closing
	calls := pc.breakLocked(cause)
	pc.pl.mu.Unlock()
	var be *BrokenError
	if closing && !errors.As(cause, &be) {
		cause = &BrokenError{cause}
	}
	pc.closeAndFail(calls, cause, nil)
}

// breakLocked marks pc broken, unless it is already, and returns the calls
// it had not answered. Requires that pl.mu is held.
func (pc *pipeConn) breakLocked(cause error) []*pipeCall {
	pl := pc.pl
	if pc.err != nil {
		return nil
	}
	pc.err = cause
	calls := pc.calls
	pc.calls, pc.unsent = nil, nil
	for _, c := range calls {
		delete(pl.onConn, c.permit)
		pl.finishLocked(c)
	}
	delete(pl.conns, pc)
	close(pc.done)
	if pc.idle != nil {
		pc.idle.Stop()
	}
	return calls
}

// closeAndFail closes pc's connection and fails calls: culprit (or without
// one, the first) with cause, the others with a BrokenError. A call not
// yet written gets a BrokenError wherever it is: the store never saw it,
// even at the front (the writer was still on an earlier write).
func (pc *pipeConn) closeAndFail(calls []*pipeCall, cause error, culprit *pipeCall) {
	pc.nc.Close()
	for i, c := range calls {
		err := cause
		if !c.sent {
			c.drop()
		}
		if !c.sent || (c != culprit && (culprit != nil || i > 0)) {
			err = &BrokenError{cause}
		}
		c.deliver(result{err: err})
		c.stop()
	}
}

func (pc *pipeConn) writeLoop() {
	pl := pc.pl
	for {
		pl.mu.Lock()
		for len(pc.unsent) == 0 && pc.err == nil {
			pl.mu.Unlock()
			select {
			case <-pc.kick:
			case <-pc.done:
			}
			pl.mu.Lock()
		}
		if pc.err != nil {
			pl.mu.Unlock()
			return
		}
		c := pc.unsent[0]
		pc.unsent = pc.unsent[1:]
		c.sent = true
		pl.mu.Unlock()
		err := c.req.Write(pc.bw)
		if err == nil {
			err = pc.bw.Flush()
		}
		if err != nil {
			pc.fail(err)
			return
		}
	}
}

func (pc *pipeConn) readLoop() {
	pl := pc.pl
	for {
		// Wait for an answer, or notice that the server closed the
		// connection while it was idle.
		_, err := pc.br.Peek(1)
		pl.mu.Lock()
		var c *pipeCall
		switch {
		case pc.err != nil:
		case err == nil && (len(pc.calls) == 0 || !pc.calls[0].sent):
			// Nothing is written that the store could answer: taken for
			// the next write's, its answer would tell a loader the store
			// took a write it never saw.
			err = errPipeStranger
		case err == nil:
			c = pc.calls[0]
		}
		pl.mu.Unlock()
		if c == nil {
			if err != nil {
				pc.fail(err)
			}
			return
		}
		resp, err := readFinalResponse(pc.br, pc.head, pl.maxHeader, c.req)
		if err != nil {
			pc.fail(err)
			return
		}
		pl.mu.Lock()
		if pc.err != nil {
			pl.mu.Unlock()
			resp.Body.Close()
			return
		}
		pc.calls = pc.calls[1:]
		delete(pl.onConn, c.permit)
		pc.draining = resp.Body != http.NoBody
		if resp.Close {
			// Nothing behind c will be answered: no follower is added
			// behind those (they get a BrokenError below).
			pc.closing = true
			for _, b := range pc.calls {
				delete(pl.onConn, b.permit)
			}
		} else if len(pc.calls) > 0 {
			pl.startLocked(pc.calls[0]) // the store has moved on to it
		}
		// c's follower takes its slot, written behind it or not yet.
		c.permit.Pass()
		pl.mu.Unlock()

		done := make(chan error, 1)
		if resp.Body == http.NoBody {
			pl.mu.Lock()
			pl.finishLocked(c)
			pl.mu.Unlock()
			c.stop()
			done <- nil
		} else {
			resp.Body = &pipeBody{rc: resp.Body, done: done, finish: func() {
				pl.mu.Lock()
				pl.finishLocked(c)
				pl.mu.Unlock()
				c.stop()
			}}
		}
		if !c.deliver(result{resp: resp}) {
			// Abandoned: the answer is read and dropped here, within
			// its deadline.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err := <-done; err != nil {
			pc.fail(err)
			return
		}
		if resp.Close {
			// The writes behind c were not taken up.
			pc.fail(&BrokenError{errPipeClosed})
			return
		}
		pl.mu.Lock()
		pc.draining = false
		pc.idleLocked()
		pl.mu.Unlock()
	}
}

// readFinalResponse reads req's answer, past any 1xx interim ones, their
// heads and the final one's within max bytes read from the connection
// (head, under br), as net/http's transport bounds them: http.ReadResponse
// alone reads a head without end, and a store that sends one, or interim
// answers without end, would take sluice's memory.
func readFinalResponse(br *bufio.Reader, head *io.LimitedReader, max int64, req *http.Request) (*http.Response, error) {
	head.N = max
	defer func() { head.N = math.MaxInt64 }()
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			if head.N <= 0 {
				return nil, fmt.Errorf("sluice: the store's answer head is longer than %d bytes", max)
			}
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			resp.Body.Close()
			return nil, errors.New("sluice: the store switched protocols on a pipelined write")
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			continue
		}
		return resp, nil
	}
}

func (pc *pipeConn) closeIdle() {
	pl := pc.pl
	pl.mu.Lock()
	// The same test as idleLocked's: a timer that fired as the connection
	// was taken up again runs late, and must not cut an answer whose body
	// is still being read.
	if len(pc.calls) > 0 || pc.draining {
		pl.mu.Unlock()
		return
	}
	calls := pc.breakLocked(errPipeIdle)
	pl.mu.Unlock()
	pc.closeAndFail(calls, errPipeIdle, nil)
}

// close closes every connection: the calls still on them get errors.
func (pl *Pipeline) Close() {
	pl.mu.Lock()
	pl.closed = true
	conns := make([]*pipeConn, 0, len(pl.conns))
	for pc := range pl.conns {
		conns = append(conns, pc)
	}
	pl.mu.Unlock()
	for _, pc := range conns {
		pc.fail(errPipeDown)
	}
}

// pipeBody is an answer's body on a pipelined connection: the reader waits
// for its end before it reads the next answer.
type pipeBody struct {
	rc     io.ReadCloser
	done   chan error
	finish func()
	once   sync.Once
}

func (b *pipeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		if err == io.EOF {
			b.end(nil)
		} else {
			b.end(err)
		}
	}
	return n, err
}

// Close reads what is left of the body (net/http's client bodies do), so
// the connection stays usable; the write's deadline bounds that.
func (b *pipeBody) Close() error {
	err := b.rc.Close()
	b.end(err)
	return err
}

func (b *pipeBody) end(err error) {
	b.once.Do(func() {
		b.finish()
		b.done <- err
	})
}
