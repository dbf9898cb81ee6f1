package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// drainStore reads each write whole and takes it.
var drainStore = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
})

// realFront runs the sidecar with env in front of store, both on real
// loopback sockets (net/http's handling of the loader's connection is what
// these tests are about), and returns it and its proxy's address.
func realFront(t *testing.T, store http.Handler, env ...string) (*Server, string) {
	t.Helper()
	upstream := httptest.NewServer(store)
	t.Cleanup(upstream.Close)
	s, err := NewServer(testConfig(t, append([]string{"UPSTREAM_URL=" + upstream.URL}, env...)...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StartLoops())
	front := httptest.NewServer(s.ProxyHandler())
	t.Cleanup(front.Close)
	return s, strings.TrimPrefix(front.URL, "http://")
}

// stallLoader sends head and part of a body to the proxy at addr, then
// stalls; it returns the status line sluice answered with ("" if it closed
// the connection without one) and how long that took, at most limit.
func stallLoader(t *testing.T, addr, head string, part int, limit time.Duration) (string, time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, head+strings.Repeat("x", part)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(start.Add(limit))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err == nil {
		rest, _ := io.ReadAll(io.LimitReader(br, 2000))
		t.Logf("whole answer: %q", line+string(rest))
	}
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return "no answer (hang)", time.Since(start)
		}
		return "", time.Since(start)
	}
	return strings.TrimSpace(line), time.Since(start)
}

// A loader that stalls in the middle of a body too large to buffer: it is
// the loader's fault, as for a buffered body (408 request_body_timeout),
// and no congestion signal of the store's.
func TestStalledStreamedBodyIsTheLoaders(t *testing.T) {
	head := "PUT /write HTTP/1.1\r\nHost: s\r\nContent-Length: 100000\r\n\r\n"
	// 408 in every run seen; the attempt's own deadline (the same
	// 300 ms) may end it first on a loaded machine, which is a 4xx or 5xx
	// too: a few tries, each on a sidecar of its own, and one of them
	// must end in the 408. (A proxy that does not read the stall as the
	// loader's answers 499 client_closed_request every time, which a
	// check of "4xx or 5xx" alone let pass.)
	var lines []string
	for range 3 {
		s, addr := realFront(t, drainStore, "UPSTREAM_TIMEOUT=300ms", "RETRY_BODY_MAX=1KiB")
		line, took := stallLoader(t, addr, head, 10, 5*time.Second)
		t.Logf("answer %q after %v", line, took)
		// Never a 2xx: the store did not get the body whole.
		if !strings.HasPrefix(line, "HTTP/1.1 4") && !strings.HasPrefix(line, "HTTP/1.1 5") {
			t.Errorf("a loader that stalled mid-body, whose write the store never took whole, got %q", line)
		}
		lines = append(lines, line)
		if !strings.Contains(line, " 408 ") {
			continue
		}
		// The stall is the loader's: had the attempt been taken for the
		// store's timeout, every job's limits would be cut for it.
		if n := seriesValue(t, s, "sluice_upstream_attempts_total", "kind", "timeout"); n != 0 {
			t.Errorf("the loader's stalled body was counted as %v store timeouts, want 0", n)
		}
		return
	}
	t.Errorf("a loader that stalled mid-body got %q, want 408 request_body_timeout: the stall is the loader's", lines)
}

// With SigV4 (hashed payload), a streamed body of known length is read
// whole to hash it: that read must be bounded by SLUICE_UPSTREAM_TIMEOUT
// like any other read of a loader's body, or a stalled loader holds a send
// slot for as long as it keeps its connection.
func TestSigV4StalledStreamedBodyIsBounded(t *testing.T) {
	s, _ := sigv4Server(t, "RETRY_BODY_MAX=1KiB", "BUFFER_BUDGET=1MiB", "UPSTREAM_TIMEOUT=300ms")
	front := httptest.NewServer(s.ProxyHandler())
	defer front.Close()
	head := "PUT /idx/_doc/1 HTTP/1.1\r\nHost: s\r\nContent-Length: 100000\r\n\r\n"
	line, took := stallLoader(t, strings.TrimPrefix(front.URL, "http://"), head, 10, 5*time.Second)
	t.Logf("answer %q after %v; in flight %d", line, took, s.lim.Snapshot().InFlight)
	if !strings.Contains(line, " 408 ") {
		t.Errorf("a loader that stalled mid-body got %q, want 408 request_body_timeout", line)
	}
	if took > 3*time.Second {
		t.Errorf("a loader that stalled mid-body held its write (and a send slot: in flight %d) for %v: no body read timeout", s.lim.Snapshot().InFlight, took)
	}
}

// The same for a body small enough to buffer.
func TestStalledBufferedBodyGets408(t *testing.T) {
	_, addr := realFront(t, drainStore, "UPSTREAM_TIMEOUT=300ms", "RETRY_BODY_MAX=1KiB")
	head := "PUT /write HTTP/1.1\r\nHost: s\r\nContent-Length: 500\r\n\r\n"
	line, took := stallLoader(t, addr, head, 10, 5*time.Second)
	t.Logf("answer %q after %v", line, took)
	if !strings.Contains(line, " 408 ") {
		t.Errorf("a loader that stalled mid-body got %q, want 408 request_body_timeout", line)
	}
}

// A loader that half-closes its connection after sending a whole request
// (shutdown(SHUT_WR), as some HTTP/1.0-style clients and tools do) is
// still there to read the answer. net/http's background read sees EOF
// and cancels the request's context; the store never answers the write
// (it was cancelled under it), so the loader must not get a 2xx.
func TestHalfCloseIsNotSuccess(t *testing.T) {
	stored := make(chan struct{}, 10)
	_, addr := realFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done(): // cancelled: nothing stored
			return
		case <-time.After(200 * time.Millisecond):
		}
		stored <- struct{}{}
		w.WriteHeader(http.StatusNoContent)
	}), "UPSTREAM_TIMEOUT=2s")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT /write HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\n\r\nhello")
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		// The loader is still reading: it must be told something (a
		// 499), not left to its own timeout.
		t.Fatalf("a loader that half-closed got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	t.Logf("loader got %d %q; store stored %d", resp.StatusCode, body, len(stored))
	if resp.StatusCode/100 == 2 && len(stored) == 0 {
		t.Errorf("the loader got %d for a write the store never took", resp.StatusCode)
	}
}

// hangingStore takes writes and never answers them.
type hangingStore struct{ writes atomic.Int64 }

func (s *hangingStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.writes.Add(1)
	<-r.Context().Done()
}

// TestImpatientLoaderStallsItsJob: in front of a store that answers
// nothing, a loader whose client gives up after 5s (sluice's
// SLUICE_UPSTREAM_TIMEOUT is 30s) and sends the write again never sees one
// of sluice's timeouts: every attempt ends with the loader leaving. Its job
// must stall all the same (upstream_timeouts, an alert), not go between
// running and idle for ever.
func TestImpatientLoaderStallsItsJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &hangingStore{}
		s := newTestServer(t, store, "STALL_AFTER=1m", "AUTO_CANCEL=false")
		h := s.ProxyHandler()
		states := map[string]bool{}
		for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); {
			// The loader closes its connection: net/http cancels the
			// request's context (context.Canceled, not a deadline).
			ctx, cancel := context.WithCancel(t.Context())
			timer := time.AfterFunc(5*time.Second, cancel)
			send(h, ctx, "PUT", "/idx/doc", `{"a":1}`, "X-Sluice-Job", "impatient")
			timer.Stop()
			cancel()
			time.Sleep(time.Second)
			var v struct{ State string }
			_ = json.Unmarshal(adminCall(s.AdminHandler(), "GET", "/v1/jobs/impatient", "").Body.Bytes(), &v)
			states[v.State] = true
		}
		var v struct {
			State      string
			StallCause string `json:"stall_cause"`
		}
		rec := adminCall(s.AdminHandler(), "GET", "/v1/jobs/impatient", "")
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.State != "stalled" || v.StallCause != "upstream_timeouts" {
			t.Errorf("job after 2m of writes the store never answered: %s (states seen %v); want stalled, upstream_timeouts", rec.Body, states)
		}
		if store.writes.Load() == 0 {
			t.Error("no write reached the store")
		}
	})
}

// A loader whose connection breaks mid-body left: it is counted as 499,
// as sluice_proxy_requests_total's help and the README say, not as a 400
// (a malformed request), for a buffered body and a streamed one alike.
func TestLoaderCutMidBodyIs499(t *testing.T) {
	s, addr := realFront(t, drainStore)
	for _, size := range []int{4096, 64 << 20} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "PUT /put HTTP/1.1\r\nHost: s\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("x", 1000))
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Read(make([]byte, 1)) // let sluice start on the write
		c.Close()
	}
	// Real sockets: the answers are counted once net/http sees the cut.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if seriesValue(t, s, "sluice_proxy_requests_total", "code", "499")+seriesValue(t, s, "sluice_proxy_requests_total", "code", "400") == 2 {
			break
		}
	}
	if n4, n99 := seriesValue(t, s, "sluice_proxy_requests_total", "code", "400"), seriesValue(t, s, "sluice_proxy_requests_total", "code", "499"); n99 != 2 || n4 != 0 {
		t.Errorf("two loaders cut mid-body: %v counted 499, %v counted 400; want 2, 0", n99, n4)
	}
}
