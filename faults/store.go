// Package faults is sluice's hardening suite: fault-injecting test doubles
// and the tests that drive sluice through them, using only sluice's public
// API (sidecar.LoadConfig, sidecar.NewServer, (*Server).Serve and friends)
// and the built binary as a subprocess.
//
// Store is a store double that misbehaves on purpose at the TCP level:
// refused, reset, cut short, slow, hung, flapping, lying about
// Content-Length, answering garbage. Every test states what must hold (the
// loader's request ends within its bound with a truthful status, the limiter
// reacts, nothing leaks) and docs/reliability.md lists the results.
//
// The soak test (10 minutes) runs only with -soak or SLUICE_SOAK=1:
//
//	go test ./faults -run TestSoak -soak -timeout 20m -v
package faults

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// HeaderRequestID is the header a loader in these tests puts on every write
// so that the Store can say which writes it acknowledged. sluice forwards it
// like any header that is not X-Sluice-*.
const HeaderRequestID = "X-Fault-Request-Id"

// Fault is how a Store misbehaves. The zero value is Healthy.
type Fault int32

const (
	// Healthy reads the whole request and answers 200 {"ok":true}.
	Healthy Fault = iota
	// ResetMidRequest reads the headers and at most 16 bytes of the body,
	// then resets the connection (RST): nothing is acknowledged.
	ResetMidRequest
	// ResetMidResponse reads the request, sends 200 headers with a
	// Content-Length and half the body, then resets the connection. The
	// status line went out, so the write counts as acknowledged.
	ResetMidResponse
	// StopMidResponse is ResetMidResponse without the reset: the rest of
	// the body never comes and the connection stays open until the peer
	// closes it. Acknowledged.
	StopMidResponse
	// Slow answers 200 after Delay. Acknowledged when the answer is sent.
	Slow
	// Hang reads the request and never answers; the connection stays open
	// until the peer closes it. Nothing is acknowledged.
	Hang
	// Flapping alternates between Healthy and Throttle every FlapEvery.
	Flapping
	// Throttle reads the request and answers 429 with Retry-After: 1.
	Throttle
	// ShortContentLength sends 200 headers declaring a Content-Length
	// larger than the body it sends, then closes. Acknowledged.
	ShortContentLength
	// LongContentLength sends 200 headers declaring a Content-Length
	// smaller than the bytes that follow, and keeps the connection open:
	// the surplus is garbage where the next response should start.
	// Acknowledged.
	LongContentLength
	// GarbageBody answers 200 with a body that is not JSON (a bulk profile
	// must count no items from it). Acknowledged.
	GarbageBody

	numFaults
)

var faultNames = [numFaults]string{
	"healthy", "reset_mid_request", "reset_mid_response", "stop_mid_response", "slow", "hang",
	"flapping", "throttle", "short_content_length", "long_content_length", "garbage_body",
}

// String returns the fault's snake_case name.
func (f Fault) String() string {
	if f >= 0 && f < numFaults {
		return faultNames[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Store is a store double on a loopback TCP listener that speaks just
// enough HTTP/1.1 by hand to misbehave in ways net/http would not allow.
// Its fault can be changed at any time; every method is safe for concurrent
// use. Close stops it and waits for all its goroutines.
type Store struct {
	conns *conns

	fault     atomic.Int32
	delay     atomic.Int64 // Slow: nanoseconds
	flapEvery atomic.Int64 // Flapping: nanoseconds
	started   time.Time

	mu       sync.Mutex
	acked    map[string]int // request id → times acknowledged (a 2xx status line sent)
	complete map[string]int // request id → times its whole body arrived
	partial  int            // requests whose body ended early
	requests int
}

// NewStore starts a Store on 127.0.0.1 with fault f.
func NewStore(f Fault) (*Store, error) { return NewStoreAt("127.0.0.1:0", f) }

// NewStoreAt starts a Store listening on addr with fault f: a store that
// comes up at an address (from ClosedPort) where connections were refused.
func NewStoreAt(addr string, f Fault) (*Store, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faults: listen: %w", err)
	}
	s := &Store{
		started:  time.Now(),
		acked:    make(map[string]int),
		complete: make(map[string]int),
	}
	s.fault.Store(int32(f))
	s.delay.Store(int64(time.Second))
	s.flapEvery.Store(int64(200 * time.Millisecond))
	s.conns = newConns(ln)
	s.conns.start(s.serve)
	return s, nil
}

// URL is the store's base URL.
func (s *Store) URL() string { return "http://" + s.conns.Addr() }

// Close stops accepting, closes every connection and waits for the
// store's goroutines. Idempotent.
func (s *Store) Close() { s.conns.Close() }

// SetFault changes the fault for requests read from now on.
func (s *Store) SetFault(f Fault) { s.fault.Store(int32(f)) }

// SetDelay sets how long Slow waits before answering.
func (s *Store) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// SetFlapEvery sets the length of each healthy or throttling spell of Flapping.
func (s *Store) SetFlapEvery(d time.Duration) { s.flapEvery.Store(int64(d)) }

// Acked reports how many times the request with id was acknowledged.
func (s *Store) Acked(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[id]
}

// Complete reports how many times the whole body of request id arrived.
func (s *Store) Complete(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.complete[id]
}

// Counts returns the requests read (headers complete), the acknowledged
// ones, and those whose body ended early.
func (s *Store) Counts() (requests, acked, partial int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.acked {
		acked += n
	}
	return s.requests, acked, s.partial
}

// current resolves Flapping to Healthy or Throttle by the time.
func (s *Store) current() Fault {
	f := Fault(s.fault.Load())
	if f != Flapping {
		return f
	}
	every := time.Duration(s.flapEvery.Load())
	if (time.Since(s.started)/every)%2 == 0 {
		return Healthy
	}
	return Throttle
}

// serve handles one connection's requests until it breaks or a fault ends it.
func (s *Store) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		f := s.current()
		id := req.Header.Get(HeaderRequestID)
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		if f == ResetMidRequest {
			_, _ = io.CopyN(io.Discard, req.Body, 16)
			reset(c)
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			s.mu.Lock()
			s.partial++
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		s.complete[id]++
		s.mu.Unlock()
		if !s.respond(c, br, f, id) {
			return
		}
	}
}

// respond writes the answer of fault f and reports whether the connection
// may carry another request.
func (s *Store) respond(c net.Conn, br *bufio.Reader, f Fault, id string) bool {
	const body = `{"ok":true,"padding":"0123456789abcdefghijklmnopqrstuvwxyz"}`
	ack := func() {
		s.mu.Lock()
		s.acked[id]++
		s.mu.Unlock()
	}
	head := func(status int, length int, extra string) string {
		return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n",
			status, http.StatusText(status), length, extra)
	}
	switch f {
	case Healthy:
		ack()
		_, err := io.WriteString(c, head(200, len(body), "")+body)
		return err == nil
	case Slow:
		if !s.wait(c, br, time.Duration(s.delay.Load())) {
			return false
		}
		ack()
		_, err := io.WriteString(c, head(200, len(body), "")+body)
		return err == nil
	case Throttle:
		msg := `{"error":"rate limit exceeded"}`
		_, err := io.WriteString(c, head(429, len(msg), "Retry-After: 1\r\n")+msg)
		return err == nil
	case ResetMidResponse:
		ack()
		_, _ = io.WriteString(c, head(200, len(body), "")+body[:len(body)/2])
		reset(c)
		return false
	case StopMidResponse:
		ack()
		_, _ = io.WriteString(c, head(200, len(body), "")+body[:len(body)/2])
		_ = s.wait(c, br, -1)
		return false
	case Hang:
		_ = s.wait(c, br, -1)
		return false
	case ShortContentLength:
		ack()
		_, _ = io.WriteString(c, head(200, 2*len(body), "")+body)
		return false
	case LongContentLength:
		ack()
		_, _ = io.WriteString(c, head(200, len(body)/2, "")+body+"\r\nHTTP/1.1 200 OK garbage\r\n\r\n")
		return true
	case GarbageBody:
		ack()
		garbage := "\x00\xff<html>{\"items\":[{\"index\":{\"status\":201 not json at all]]]\n"
		_, err := io.WriteString(c, head(200, len(garbage), "")+garbage)
		return err == nil
	}
	panic("BUG: faults: unknown fault " + f.String())
}

// wait blocks for d (forever when d < 0) or until the peer closes the
// connection or the store closes; it reports whether d passed.
func (s *Store) wait(c net.Conn, br *bufio.Reader, d time.Duration) bool {
	if d >= 0 {
		_ = c.SetReadDeadline(time.Now().Add(d))
		defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	}
	// A request pipelined behind this one would be read here and lost;
	// sluice never pipelines.
	_, err := br.ReadByte()
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// ClosedPort returns a loopback address nothing listens on: connecting to it
// is refused.
func ClosedPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("faults: listen: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("faults: close: %w", err)
	}
	return addr, nil
}
