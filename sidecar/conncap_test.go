package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dev/sluice/state"
)

// TestIdleCapOrder: past the cap the connection idle longest is closed; a
// connection busy again leaves the idle set and rejoins it at the back.
func TestIdleCapOrder(t *testing.T) {
	closed := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	c := newIdleCap(2, closed)
	conns := make([]net.Conn, 4)
	for i := range conns {
		var peer net.Conn
		conns[i], peer = net.Pipe()
		defer peer.Close()
		defer conns[i].Close()
		c.connState(conns[i], http.StateNew)
		c.connState(conns[i], http.StateActive)
	}
	isClosed := func(conn net.Conn) bool {
		conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		_, err := conn.Read(make([]byte, 1))
		return err == io.ErrClosedPipe
	}
	c.connState(conns[0], http.StateIdle)
	c.connState(conns[1], http.StateIdle)
	c.connState(conns[0], http.StateActive) // busy again: no longer idle
	c.connState(conns[0], http.StateIdle)   // idle again, now the newest
	c.connState(conns[2], http.StateIdle)   // three idle: conns[1] goes
	if !isClosed(conns[1]) || isClosed(conns[0]) || isClosed(conns[2]) {
		t.Fatalf("closed: %v %v %v, want only the one idle longest (1)", isClosed(conns[0]), isClosed(conns[1]), isClosed(conns[2]))
	}
	c.connState(conns[1], http.StateClosed)
	c.connState(conns[2], http.StateClosed) // closed by the loader
	c.connState(conns[3], http.StateIdle)
	if n := c.idleCount(); n != 2 || isClosed(conns[3]) || isClosed(conns[0]) {
		t.Errorf("%d idle, conns[0] closed %v, conns[3] closed %v: want 2 idle, neither closed", n, isClosed(conns[0]), isClosed(conns[3]))
	}
	if got := testutil.ToFloat64(closed); got != 1 {
		t.Errorf("closed counter %v, want 1", got)
	}
}

// TestIdleConnectionsCapped: loaders that keep 12 connections alive through
// a proxy capped at 5 idle ones find the 7 oldest closed by sluice, and the
// 5 newest still serve writes.
func TestIdleConnectionsCapped(t *testing.T) {
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer store.Close()
	cfg := testConfig(t, "UPSTREAM_URL="+store.URL, "MAX_IDLE_CONNS=5", "INITIAL_RATE=5000")
	s, err := NewServer(cfg, Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, proxyLn, adminLn) }()
	defer func() { cancel(); <-done }()

	write := func(c net.Conn, r *bufio.Reader, i int) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "PUT /k/%d HTTP/1.1\r\nHost: s\r\nContent-Length: 2\r\n\r\nok", i); err != nil {
			return err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	const n, limit = 12, 5
	conns, readers := make([]net.Conn, n), make([]*bufio.Reader, n)
	for i := range n {
		c, err := net.Dial("tcp", proxyLn.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		if err := write(c, readers[i], i); err != nil {
			t.Fatalf("write on connection %d: %v", i, err)
		}
		// The server marks a connection idle just after its answer: wait
		// for it, so that the connections go idle in the order opened.
		deadline := time.Now().Add(5 * time.Second)
		for s.idle.idleCount() != min(i+1, limit) || testutil.ToFloat64(s.proxy.m.idleClosed) != float64(max(0, i+1-limit)) {
			if time.Now().After(deadline) {
				t.Fatalf("after %d connections: %d idle, %v closed", i+1, s.idle.idleCount(), testutil.ToFloat64(s.proxy.m.idleClosed))
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range n - limit {
		conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readers[i].ReadByte(); err != io.EOF {
			t.Errorf("connection %d (among the oldest): read %v, want EOF", i, err)
		}
	}
	for i := n - limit; i < n; i++ {
		if err := write(conns[i], readers[i], n+i); err != nil {
			t.Errorf("connection %d (among the newest): %v", i, err)
		}
	}
}
