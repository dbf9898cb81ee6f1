// Package rawstore is a test double: an HTTP/1.1 store written by hand on a
// loopback socket, so that a test decides, request by request, when and how
// each is answered, and sees which requests arrived pipelined. It is for
// tests only.
package rawstore

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// Store is an HTTP/1.1 store written by hand, so that a test decides,
// request by request, when and how each is answered, and sees which
// requests arrived while the one ahead of them on their connection was not
// answered yet (pipelined). It reads a connection's requests one after the
// other, as every HTTP/1.1 server does.
type Store struct {
	t  *testing.T
	ln net.Listener
	// script decides what happens to request seq (0-based, over the whole
	// store) on connection conn (0-based): it may wait for the next request
	// to arrive, answer, or hang up.
	script func(c *Conn, seq int, body string)

	mu        sync.Mutex
	conns     int
	seq       int
	answered  []string // bodies answered 2xx, in order
	pipelined int      // requests that arrived while the one ahead was unanswered
	wg        sync.WaitGroup
}

// Conn is one connection to a Store, as its script sees it. NC is the socket,
// for a script that writes an answer of its own.
type Conn struct {
	s     *Store
	NC    net.Conn
	br    *bufio.Reader
	Index int // the connection's number, from 0, in the order they came
	// hungUp: the script closed the connection; what was read past the
	// current request is dropped with it.
	hungUp bool
}

// New starts a Store whose script decides what happens to each request;
// it stops when the test ends.
func New(t *testing.T, script func(c *Conn, seq int, body string)) *Store {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{t: t, ln: ln, script: script}
	s.wg.Go(s.accept)
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *Store) URL() string { return "http://" + s.ln.Addr().String() }

func (s *Store) accept() {
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
		c := &Conn{s: s, NC: nc, br: bufio.NewReader(nc), Index: s.conns}
		s.conns++
		s.mu.Unlock()
		s.wg.Go(c.serve)
	}
}

func (c *Conn) serve() {
	defer c.NC.Close()
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
func (c *Conn) AwaitNext(d time.Duration) bool {
	_ = c.NC.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.Peek(1)
	_ = c.NC.SetReadDeadline(time.Time{})
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
func (c *Conn) Answer(status int, body string, closing bool) {
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
	fmt.Fprintf(c.NC, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s\r\n%s", status, http.StatusText(status), len(payload), conn, payload)
	if closing {
		c.HangUp()
	}
}

func (c *Conn) HangUp() {
	c.NC.Close()
	c.hungUp = true
}

func (s *Store) Counts() (conns, pipelined int, answered []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, s.pipelined, slices.Clone(s.answered)
}
