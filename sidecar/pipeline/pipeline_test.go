package pipeline

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/rawstore"
	"github.com/sluice-dev/sluice/limiter"
)

// permit shows a limiter permit to the pipeline, as the proxy does.
type permit struct{ *limiter.Permit }

func (p permit) Leader() Permit {
	if l := p.Permit.Leader(); l != nil {
		return permit{l}
	}
	return nil
}

// The slot passes to the write behind when the store's answer to the one
// ahead arrives, not when that answer has been copied to its loader: the
// store is on the follower from then on.
func TestPipelinePassesTheSlotWithTheAnswer(t *testing.T) {
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if seq == 0 {
			c.AwaitNext(10 * time.Second)
			c.Answer(http.StatusOK, body, false)
			return
		}
		c.Answer(http.StatusNoContent, body, false)
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
		resp, _, err := pl.RoundTrip(ctx, ctx, req("b"), permit{b}, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		bDone <- resp
	}()
	respA, _, err := pl.RoundTrip(ctx, ctx, req("a"), permit{a}, 10*time.Second)
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

// While a loader reads an answer's body slowly, its connection is not
// idle: a new write goes on another connection rather than behind an
// answer nobody can read yet.
func TestPipelineDrainingConnectionIsNotIdle(t *testing.T) {
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		c.Answer(http.StatusOK, body, false) // with a body
	})
	pl, lim, req := testPipeline(t, store, 2)
	ctx := context.Background()
	a, _ := lim.AcquirePipelined(ctx, 1)
	respA, _, err := pl.RoundTrip(ctx, ctx, req("a"), permit{a}, 10*time.Second)
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
		resp, _, err := pl.RoundTrip(ctx, ctx, req("b"), permit{b}, 10*time.Second)
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
	if conns, _, answered := store.Counts(); conns != 2 || len(answered) != 2 {
		t.Errorf("%d connections, answered %v; want 2 connections, both writes", conns, answered)
	}
	a.Done(limiter.Sample{Outcome: limiter.Success})
	b.Done(limiter.Sample{Outcome: limiter.Success})
}

// testPipeline is a pipeline to store on its own, with a limiter of slots
// concurrent writes and rate to spare, and how to make a write of a body.
func testPipeline(t *testing.T, store *rawstore.Store, slots int) (*Pipeline, *limiter.Controller, func(body string) *http.Request) {
	t.Helper()
	lim, err := limiter.New(limiter.Config{InitialRate: 100, MinRate: 1, MaxRate: 100, InitialConcurrency: slots, MaxConcurrency: slots, Burst: 10})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse(store.URL())
	tr := &http.Transport{DialContext: (&net.Dialer{}).DialContext, TLSHandshakeTimeout: time.Second, IdleConnTimeout: time.Minute}
	pl := New(tr, up, func() {})
	t.Cleanup(pl.Close)
	req := func(body string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, store.URL()+"/write", strings.NewReader(body))
		return r
	}
	return pl, lim, req
}

// pipedPipeline is a pipeline as testPipeline's, whose connections are
// in-memory pipes, so that a test runs it in a synctest bubble: each dial
// hands the test the store's end of a new one.
func pipedPipeline(t *testing.T, slots int) (*Pipeline, *limiter.Controller, <-chan net.Conn) {
	t.Helper()
	return pipedPipelineOver(t, slots, &http.Transport{IdleConnTimeout: time.Minute})
}

// pipedPipelineOver is pipedPipeline with tr's settings.
func pipedPipelineOver(t *testing.T, slots int, tr *http.Transport) (*Pipeline, *limiter.Controller, <-chan net.Conn) {
	t.Helper()
	lim, err := limiter.New(limiter.Config{InitialRate: 100, MinRate: 1, MaxRate: 100, InitialConcurrency: slots, MaxConcurrency: slots, Burst: 10})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://store.test")
	pl := New(tr, up, func() {})
	conns := make(chan net.Conn, 10)
	pl.dial = func(context.Context) (net.Conn, error) {
		c, s := net.Pipe()
		conns <- s
		return c, nil
	}
	t.Cleanup(pl.Close)
	return pl, lim, conns
}

// countedBody is a request body that counts its closes: a RoundTripper
// closes the body once on every path, sent or not.
type countedBody struct {
	io.Reader
	closes atomic.Int32
}

func (b *countedBody) Close() error { b.closes.Add(1); return nil }

// closeCounted is pipedRequest with a countedBody.
func closeCounted(body string) (*http.Request, *countedBody) {
	b := &countedBody{Reader: strings.NewReader(body)}
	r, _ := http.NewRequest(http.MethodPost, "http://store.test/write", b)
	r.ContentLength = int64(len(body))
	return r, b
}

func pipedRequest(body string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "http://store.test/write", strings.NewReader(body))
	return r
}

// stuckWriter puts a write on a new connection of pl's, which the store
// answers after reading one byte of it: sluice's writer is then still on
// it, while its connection has nothing unanswered, and takes the next
// write, which is not written. It returns the store's end.
func stuckWriter(t *testing.T, pl *Pipeline, lim *limiter.Controller, conns <-chan net.Conn) net.Conn {
	t.Helper()
	ctx := context.Background()
	a, _ := lim.AcquirePipelined(ctx, 1)
	type answer struct {
		resp *http.Response
		err  error
	}
	aDone := make(chan answer, 1)
	go func() {
		resp, _, err := pl.RoundTrip(ctx, ctx, pipedRequest("a"), permit{a}, time.Minute)
		aDone <- answer{resp, err}
	}()
	sc := <-conns
	if _, err := io.ReadFull(sc, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	go io.WriteString(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	r := <-aDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	io.Copy(io.Discard, r.resp.Body)
	r.resp.Body.Close()
	a.Done(limiter.Sample{Outcome: limiter.Success})
	synctest.Wait()
	return sc
}

// An answer that comes before a write was written is no answer to it: a
// store that sends bytes then is answering nothing of sluice's. Taken for
// the write's, it would tell its loader the store took a write it never
// saw; and were the write withdrawn while that answer is read, the answer
// would be matched to the write behind it, or to none.
func TestPipelineAnswerBeforeTheWriteAnswersNothing(t *testing.T) {
	t.Run("told", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pl, lim, conns := pipedPipeline(t, 1)
			sc := stuckWriter(t, pl, lim, conns)
			ctx := context.Background()
			b, _ := lim.AcquirePipelined(ctx, 1)
			var (
				resp *http.Response
				err  error
			)
			done := make(chan struct{})
			go func() {
				resp, _, err = pl.RoundTrip(ctx, ctx, pipedRequest("b"), permit{b}, time.Minute)
				close(done)
			}()
			synctest.Wait() // b is on the connection, not written
			go io.WriteString(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			<-done
			if err == nil {
				resp.Body.Close()
				t.Errorf("b, never written, was answered %d", resp.StatusCode)
			}
			b.Done(limiter.Sample{Outcome: limiter.Neutral})
			sc.Close()
		})
	})
	t.Run("withdrawn", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pl, lim, conns := pipedPipeline(t, 1)
			sc := stuckWriter(t, pl, lim, conns)
			ctx, cancel := context.WithCancel(context.Background())
			b, _ := lim.AcquirePipelined(ctx, 1)
			var err error
			done := make(chan struct{})
			req, body := closeCounted("b")
			go func() {
				_, _, err = pl.RoundTrip(ctx, ctx, req, permit{b}, time.Minute)
				close(done)
			}()
			synctest.Wait()
			io.WriteString(sc, "HTTP/1.1 200 OK\r\n")
			synctest.Wait() // its reader is in the middle of that answer
			cancel()
			<-done
			var left *LeftError
			if err == nil || errors.As(err, &left) {
				// A LeftError would have its job wait for a write the
				// store never got.
				t.Errorf("b, never written: %v, want an error that is no LeftError", err)
			}
			if n := body.closes.Load(); n != 1 {
				t.Errorf("b's body closed %d times, want once", n)
			}
			b.Done(limiter.Sample{Outcome: limiter.Neutral})
			io.WriteString(sc, "Content-Length: 0\r\n\r\n")
			synctest.Wait()
			sc.Close()
		})
	})
}

// A write that was never written when its connection broke cannot have
// been taken up, even at the front of its connection (its writer was still
// on an earlier write): it gets a BrokenError, to be sent again, not the
// connection's error, which would count as the store's failure (or, at its
// deadline, as a timeout of a write that may have landed).
func TestPipelineUnwrittenWriteIsBroken(t *testing.T) {
	for _, tc := range []struct {
		name string
		brk  func(sc net.Conn)
	}{
		{"hang-up", func(sc net.Conn) { sc.Close() }},
		{"deadline", func(net.Conn) { time.Sleep(2 * time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pl, lim, conns := pipedPipeline(t, 1)
				sc := stuckWriter(t, pl, lim, conns)
				ctx := context.Background()
				b, _ := lim.AcquirePipelined(ctx, 1)
				var err error
				done := make(chan struct{})
				req, body := closeCounted("b")
				go func() {
					_, _, err = pl.RoundTrip(ctx, ctx, req, permit{b}, time.Second)
					close(done)
				}()
				synctest.Wait() // b is at the front of the connection, not written
				tc.brk(sc)
				<-done
				var broken *BrokenError
				if !errors.As(err, &broken) {
					t.Errorf("b, never written: %v, want a BrokenError", err)
				}
				if n := body.closes.Load(); n != 1 {
					t.Errorf("b's body closed %d times, want once", n)
				}
				b.Done(limiter.Sample{Outcome: limiter.Neutral})
				sc.Close()
			})
		})
	}
}

// frontAndStaged sends write a through pl and reads it at the store's end
// of the connection (sc, read through br), then stages write b (its body
// bBody) behind it, running b's round trip until bDone, its error in
// *bErr. aDone gets a's answer.
func frontAndStaged(t *testing.T, pl *Pipeline, lim *limiter.Controller, conns <-chan net.Conn, bBody string, timeout time.Duration) (a, b *limiter.Permit, aDone <-chan *http.Response, sc net.Conn, br *bufio.Reader, bDone <-chan struct{}, bErr *error) {
	t.Helper()
	ctx := context.Background()
	a, _ = lim.AcquirePipelined(ctx, 1)
	aCh := make(chan *http.Response, 1)
	go func() {
		resp, _, err := pl.RoundTrip(ctx, ctx, pipedRequest("a"), permit{a}, timeout)
		if err != nil {
			t.Error(err)
		}
		aCh <- resp
	}()
	sc = <-conns
	br = bufio.NewReader(sc)
	if _, err := http.ReadRequest(br); err != nil {
		t.Fatal(err)
	}
	b, _ = lim.AcquirePipelined(ctx, 1) // no slot: staged behind a
	if b.Leader() != a {
		t.Fatal("b not staged behind a")
	}
	var err error
	done := make(chan struct{})
	go func() {
		_, _, err = pl.RoundTrip(ctx, ctx, pipedRequest(bBody), permit{b}, timeout)
		close(done)
	}()
	return a, b, aCh, sc, br, done, &err
}

// An answer that closes its connection tells that the writes behind it
// were not taken up, even when its body is still being read at its
// deadline: they are sent again as BrokenErrors, not failed as writes the
// store may have answered.
func TestPipelineClosingAnswerUnreadAtItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pl, lim, conns := pipedPipeline(t, 1)
		a, b, aDone, sc, br, bDone, bErrp := frontAndStaged(t, pl, lim, conns, "b", time.Second)
		if _, err := http.ReadRequest(br); err != nil { // b, in the store's socket
			t.Fatal(err)
		}
		go io.WriteString(sc, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10000\r\n\r\nok")
		respA := <-aDone // its body is not read: the store sends no more of it
		<-bDone
		var broken *BrokenError
		if bErr := *bErrp; !errors.As(bErr, &broken) {
			t.Errorf("b, behind an answer that closes the connection: %v, want a BrokenError", bErr)
		}
		respA.Body.Close()
		a.Done(limiter.Sample{Outcome: limiter.Neutral})
		b.Done(limiter.Sample{Outcome: limiter.Neutral})
		sc.Close()
	})
}

// An answer that closes its connection tells that the store takes up
// nothing behind it: a write behind it that breaks the connection as it
// is written (the store is gone) is sent again, not counted as the store's
// failure, and the answer ahead is still read whole.
func TestPipelineWriteBehindAClosingAnswerBreaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pl, lim, conns := pipedPipeline(t, 1)
		a, b, aDone, sc, _, bDone, bErrp := frontAndStaged(t, pl, lim, conns, strings.Repeat("b", 100<<10), time.Minute)
		if _, err := io.ReadFull(sc, make([]byte, 1)); err != nil { // b is being written
			t.Fatal(err)
		}
		go io.WriteString(sc, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
		respA := <-aDone
		synctest.Wait()
		sc.Close() // as the store said, with b's body unread
		<-bDone
		var broken *BrokenError
		if bErr := *bErrp; !errors.As(bErr, &broken) {
			t.Errorf("b, behind an answer that closes the connection: %v, want a BrokenError", bErr)
		}
		if body, err := io.ReadAll(respA.Body); err != nil || string(body) != "ok" {
			t.Errorf("a's body: %q, %v; want all of it", body, err)
		}
		respA.Body.Close()
		a.Done(limiter.Sample{Outcome: limiter.Success})
		b.Done(limiter.Sample{Outcome: limiter.Neutral})
	})
}

// An answer's head, with the interim (1xx) answers before it, is read
// within the transport's MaxResponseHeaderBytes, as net/http reads them: a
// store that sends a head without end, or interim answers without end,
// would otherwise take sluice's memory or its reader until the write's
// deadline. Within the bound an answer is read as before.
func TestPipelineBoundsTheAnswerHead(t *testing.T) {
	padded := func(n int) string {
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
		for b.Len() < n {
			b.WriteString("X-Padding: " + strings.Repeat("p", 1000) + "\r\n")
		}
		return b.String() + "\r\nok"
	}
	hints := func(n int) string {
		return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", n) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	}
	for _, tc := range []struct {
		name   string
		answer string
		ok     bool
	}{
		{"head within", padded(48 << 10), true},
		{"head over", padded(80 << 10), false},
		{"interim answers within", hints(100), true}, // 4 KiB
		{"interim answers over", hints(2000), false}, // 80 KiB
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pl, lim, conns := pipedPipelineOver(t, 1, &http.Transport{IdleConnTimeout: time.Minute, MaxResponseHeaderBytes: 64 << 10})
				ctx := context.Background()
				a, _ := lim.AcquirePipelined(ctx, 1)
				defer a.Done(limiter.Sample{Outcome: limiter.Neutral})
				type answer struct {
					resp *http.Response
					err  error
				}
				done := make(chan answer, 1)
				go func() {
					resp, _, err := pl.RoundTrip(ctx, ctx, pipedRequest("a"), permit{a}, time.Minute)
					done <- answer{resp, err}
				}()
				sc := <-conns
				defer sc.Close()
				go func() {
					// The answer comes once the write is read: bytes before
					// it answer nothing.
					req, err := http.ReadRequest(bufio.NewReader(sc))
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					go io.Copy(io.Discard, sc)
					io.WriteString(sc, tc.answer)
				}()
				r := <-done
				if r.err == nil {
					body, _ := io.ReadAll(r.resp.Body)
					r.resp.Body.Close()
					if !tc.ok {
						t.Fatalf("read whole (status %d, %q) past its bound", r.resp.StatusCode, body)
					}
					if string(body) != "ok" {
						t.Errorf("body %q, want ok", body)
					}
					return
				}
				if tc.ok {
					t.Fatalf("within the bounds: %v", r.err)
				}
			})
		})
	}
}

// A write whose loader leaves once it is in the store's socket cannot be
// recalled: the store still takes it up. Its caller is told so, with a
// channel closed once the store is done with it (its answer read and
// dropped), so that its job counts it until then; a write that was
// never written is not the store's, and is told nothing of the kind.
func TestPipelineLeftWriteSettles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pl, lim, conns := pipedPipeline(t, 1)
		ctx := context.Background()
		a, _ := lim.AcquirePipelined(ctx, 1)
		aDone := make(chan *http.Response, 1)
		go func() {
			resp, _, err := pl.RoundTrip(ctx, ctx, pipedRequest("a"), permit{a}, time.Minute)
			if err != nil {
				t.Error(err)
			}
			aDone <- resp
		}()
		sc := <-conns
		br := bufio.NewReader(sc)
		if _, err := http.ReadRequest(br); err != nil {
			t.Fatal(err)
		}
		b, _ := lim.AcquirePipelined(ctx, 1) // staged behind a
		bctx, leave := context.WithCancel(ctx)
		var err error
		done := make(chan struct{})
		go func() {
			_, _, err = pl.RoundTrip(bctx, bctx, pipedRequest("b"), permit{b}, time.Minute)
			close(done)
		}()
		if _, err := http.ReadRequest(br); err != nil { // b is the store's
			t.Fatal(err)
		}
		synctest.Wait()
		leave()
		<-done
		var left *LeftError
		if !errors.As(err, &left) || !errors.Is(err, context.Canceled) {
			t.Fatalf("b left in the store's socket: %v, want a LeftError of context.Canceled", err)
		}
		answer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		io.WriteString(sc, answer) // a's
		resp := <-aDone
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		synctest.Wait()
		select {
		case <-left.Settled:
			t.Fatal("b settled before the store answered it")
		default:
		}
		io.WriteString(sc, answer) // b's, read and dropped
		synctest.Wait()
		select {
		case <-left.Settled:
		default:
			t.Error("b not settled once its answer was read")
		}
		a.Done(limiter.Sample{Outcome: limiter.Neutral})
		b.Done(limiter.Sample{Outcome: limiter.Neutral})

		c, _ := lim.AcquirePipelined(ctx, 1)
		cctx, leaveC := context.WithCancel(ctx)
		leaveC()
		if _, _, err = pl.RoundTrip(cctx, cctx, pipedRequest("c"), permit{c}, time.Minute); err == nil || errors.As(err, &left) {
			t.Errorf("c, its loader gone before it came: %v, want an error that is no LeftError", err)
		}
		c.Done(limiter.Sample{Outcome: limiter.Neutral})
		sc.Close()
	})
}
