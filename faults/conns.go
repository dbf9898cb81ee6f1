package faults

import (
	"net"
	"sync"
)

// conns is the listening side of a store double: it serves each
// connection it accepts on a goroutine of its own, and Close ends them
// all, those a fault holds open included, so that a test's store never
// outlives it.
type conns struct {
	ln   net.Listener
	done chan struct{} // closed by Close

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// newConns returns conns for ln; start begins accepting. The two are
// apart so that a store can hold its conns before its first connection
// is served.
func newConns(ln net.Listener) *conns {
	return &conns{ln: ln, done: make(chan struct{}), open: make(map[net.Conn]struct{})}
}

// start accepts connections and runs serve for each, until Close.
func (s *conns) start(serve func(net.Conn)) { s.wg.Go(func() { s.accept(serve) }) }

// Addr is the address the store listens on.
func (s *conns) Addr() string { return s.ln.Addr().String() }

// Done is closed when Close begins, before it waits for the connections'
// goroutines: a handler that holds a request open until the test ends
// waits for it.
func (s *conns) Done() <-chan struct{} { return s.done }

// Close stops accepting, closes every connection and waits for their
// goroutines. Idempotent.
func (s *conns) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	_ = s.ln.Close()
	for c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *conns) accept(serve func(net.Conn)) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.open[c] = struct{}{}
		s.wg.Go(func() {
			serve(c)
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
			_ = c.Close()
		})
		s.mu.Unlock()
	}
}
