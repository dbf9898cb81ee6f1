package sidecar

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/pipenet"
)

// dial connects a loader to ln, failing the test if it cannot.
func dial(t *testing.T, ln *pipenet.Listener) net.Conn {
	t.Helper()
	c, err := ln.Dial(context.Background(), "tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newPipeListener is a listener for the proxy's server whose connections
// are in-memory, so that a test of how net/http treats a loader's
// connection runs under testing/synctest.
func newPipeListener() *pipenet.Listener {
	return pipenet.Listen(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080})
}

// serveProxy serves s's proxy, as net/http serves loaders' connections,
// on in-memory ones until the test ends.
func serveProxy(t *testing.T, s *Server) *pipenet.Listener {
	ln := newPipeListener()
	srv := &http.Server{Handler: s.proxy.Handler(), ConnState: s.proxy.ConnState}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ln.Close()
		_ = srv.Close()
		<-served
	})
	return ln
}

// A loader that reads the head of its answer and then stops reading (stuck
// in its own pipeline, or a client that never drains bodies) while its
// connection stays open: the answer's copy to it blocks once its socket is
// full. The attempt is bounded by SLUICE_UPSTREAM_TIMEOUT, its answer's
// copy included, so its send slot comes back within it; otherwise four such
// loaders hold every slot of the initial concurrency limit for good, and
// every other job's writes queue until they are pushed back.
func TestLoaderThatStopsReadingFreesItsSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := strings.Repeat("x", 1<<20)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, big)
		})
		s := newTestServer(t, store, "UPSTREAM_TIMEOUT=2s")
		ln := serveProxy(t, s)

		c := dial(t, ln)
		if _, err := io.WriteString(c, "PUT /doc/1 HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want the store's 200", resp.StatusCode)
		}
		// The loader reads no more of it, and keeps its connection.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := s.lim.Snapshot().InFlight; n != 0 {
			t.Errorf("in flight %d, 10s after the answer began to a loader that stopped reading it (SLUICE_UPSTREAM_TIMEOUT=2s), want 0", n)
		}

		c.Close()

		// The deadline of an answer is its own: a loader's next write on
		// the same connection, answered past it, gets its answer.
		c = dial(t, ln)
		defer c.Close()
		br := bufio.NewReader(c)
		for i := range 2 {
			if _, err := io.WriteString(c, "PUT /doc/1 HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\n\r\nx"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("write %d on a kept-alive connection: %v", i+1, err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatalf("write %d on a kept-alive connection: reading its answer: %v", i+1, err)
			}
			resp.Body.Close()
			time.Sleep(5 * time.Second)
		}
	})
}

// The store takes a write and answers it late in the attempt, and sluice
// has the whole answer at once (the test's transport hands it over in
// memory, as net/http's does an answer its buffers hold); the loader reads
// it a little behind (1 KiB every 20 ms over an unbuffered connection),
// past the attempt's deadline. The loader's write deadline, reset as each
// part is taken, does not cut what sluice has read and counted: the loader
// would send again a write the store took. (The attempt's deadline still
// ends the reading of an answer the store is still sending.)
func TestWriteDeadlineKeepsAnAnswerRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer := strings.Repeat("y", 30<<10)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			time.Sleep(1900 * time.Millisecond)
			_, _ = io.WriteString(w, answer)
		})
		s := newTestServer(t, store, "UPSTREAM_TIMEOUT=2s")
		ln := serveProxy(t, s)

		c := dial(t, ln)
		defer c.Close()
		if _, err := io.WriteString(c, "PUT /doc/1 HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, buf := 0, make([]byte, 1024)
		for {
			n, err := resp.Body.Read(buf)
			got += n
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("status %d: the loader read %d of the %d bytes of an answer the store gave whole, then %v", resp.StatusCode, got, len(answer), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp.StatusCode != http.StatusOK || got != len(answer) {
			t.Errorf("status %d, %d bytes; want the store's 200 and its %d bytes", resp.StatusCode, got, len(answer))
		}
	})
}
