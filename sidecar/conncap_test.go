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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// startCapped runs sluice in front of a store that counts writes, with at
// most max idle loader connections, on loopback.
func startCapped(t *testing.T, max int) (s *Server, addr string, stored *atomic.Int64) {
	t.Helper()
	stored = new(atomic.Int64)
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		stored.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(store.Close)
	cfg := testConfig(t, "UPSTREAM_URL="+store.URL, fmt.Sprintf("MAX_IDLE_CONNS=%d", max), "INITIAL_RATE=50000", "RETRY_POST=true")
	s, err := NewServer(cfg, Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, proxyLn, adminLn) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, proxyLn.Addr().String(), stored
}

// TestIdleConnectionsCapped: 12 connections kept alive one after the other
// through a proxy capped at 5 idle ones: the first 5 stay open and still
// serve writes, the other 7 are answered with Connection: close and end.
func TestIdleConnectionsCapped(t *testing.T) {
	s, addr, _ := startCapped(t, 5)
	write := func(c net.Conn, r *bufio.Reader, i int) (*http.Response, error) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "PUT /k/%d HTTP/1.1\r\nHost: s\r\nContent-Length: 2\r\n\r\nok", i); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return nil, fmt.Errorf("status %d", resp.StatusCode)
		}
		return resp, nil
	}
	const n, limit = 12, 5
	conns, readers := make([]net.Conn, n), make([]*bufio.Reader, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		resp, err := write(c, readers[i], i)
		if err != nil {
			t.Fatalf("write on connection %d: %v", i, err)
		}
		if wantClose := i >= limit; resp.Close != wantClose {
			t.Errorf("connection %d: answer closes it %v, want %v", i, resp.Close, wantClose)
		}
		// The server marks a connection idle just after its answer: wait
		// for it before the next one.
		deadline := time.Now().Add(5 * time.Second)
		for s.proxy.IdleConns() != min(i+1, limit) {
			if time.Now().After(deadline) {
				t.Fatalf("after %d connections: %d idle, want %d", i+1, s.proxy.IdleConns(), min(i+1, limit))
			}
			time.Sleep(time.Millisecond)
		}
	}
	if got := metricValue(t, s, "sluice_proxy_connections_not_kept_alive_total"); got != n-limit {
		t.Errorf("counter %v, want %d", got, n-limit)
	}
	for i := limit; i < n; i++ {
		conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readers[i].ReadByte(); err != io.EOF {
			t.Errorf("connection %d (answered with close): read %v, want EOF", i, err)
		}
	}
	for i := range limit {
		if _, err := write(conns[i], readers[i], n+i); err != nil {
			t.Errorf("connection %d (kept alive): %v", i, err)
		}
	}
}

// TestIdleCapLosesNoWrite: 16 writers POSTing through a client pool of 64
// connections against a cap of 8: every write is answered, and the store
// got exactly the writes the loaders were told succeeded. (Closing idle
// connections past the cap instead failed 1 to 5 writes in every run: a
// connection is idle until a whole request header has been read from it.)
func TestIdleCapLosesNoWrite(t *testing.T) {
	s, addr, stored := startCapped(t, 8)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 100 {
				resp, err := client.Post(fmt.Sprintf("http://%s/w/%d/%d", addr, w, i), "text/plain", strings.NewReader("ok"))
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || ok.Load() != 1600 || stored.Load() != ok.Load() {
		t.Errorf("%d ok, %d failed, %d stored: want 1600, 0, 1600", ok.Load(), failed.Load(), stored.Load())
	}
	if metricValue(t, s, "sluice_proxy_connections_not_kept_alive_total") == 0 {
		t.Errorf("no answer closed its connection: the cap was never reached, the test shows nothing")
	}
}
