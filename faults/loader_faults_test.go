package faults

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// hostPort strips the scheme of a base URL.
func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// TestLoaderDisconnectsMidBody: loaders that send part of a body and go
// away. The store must never see a complete (or acknowledge a) write that
// the loader did not finish sending, sluice must release every buffered
// byte and slot, leak nothing, and keep serving.
func TestLoaderDisconnectsMidBody(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fds := countFDs(t)
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	sl := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(), "SLUICE_RETRY_BODY_MAX=1MiB", "SLUICE_BUFFER_BUDGET=4MiB")
	f := func(method string, declared, sent int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				id := fmt.Sprintf("cut-%s-%d-%d", method, declared, i)
				c, err := net.Dial("tcp", hostPort(sl.proxyURL))
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				fmt.Fprintf(c, "%s /put HTTP/1.1\r\nHost: store\r\nContent-Length: %d\r\n%s: %s\r\n\r\n", method, declared, HeaderRequestID, id)
				_, _ = c.Write(make([]byte, sent))
				// Let sluice start forwarding before leaving: read for a moment.
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
			})
		}
		wg.Wait()
		for i := range 20 {
			id := fmt.Sprintf("cut-%s-%d-%d", method, declared, i)
			if store.Complete(id) != 0 || store.Acked(id) != 0 {
				t.Errorf("%s: the store received a whole write the loader never finished", id)
			}
		}
	}
	f("PUT", 512<<10, 1000)   // buffered for retries (fits SLUICE_RETRY_BODY_MAX)
	f("PUT", 64<<20, 100<<10) // streamed (too large to buffer)
	f("POST", 4096, 1000)     // streamed (POST is not retried)

	l := newLoader(sl.proxyURL, "after", 10*time.Second)
	if o := l.write("PUT", "/put", "", []byte("ok")); !o.clean2xx() {
		t.Errorf("a normal write after the disconnects: %v", o)
	}
	l.close()
	if !eventually(5*time.Second, func() bool {
		st := status(t, sl.adminURL)
		return st.BufferBytes == 0 && st.Limiter.InFlight == 0
	}) {
		st := status(t, sl.adminURL)
		t.Errorf("after the disconnects: %d buffered bytes, %d in flight; want 0, 0", st.BufferBytes, st.Limiter.InFlight)
	}
	sl.stop()
	store.Close()
	if !eventually(5*time.Second, func() bool { return countFDs(t) <= fds }) {
		t.Errorf("file descriptors: %d before, %d after", fds, countFDs(t))
	}
}

// trickled is how a trickling connection ended: when the server closed it,
// and the first line of what it answered before that ("" for nothing).
type trickled struct {
	at     time.Time
	answer string
}

// trickle opens a connection to addr, sends head, then one byte of body
// every interval until stop is closed or the server closes the connection;
// it reports on closed when the server closed it, and what it answered.
func trickle(t *testing.T, addr, head string, interval time.Duration, stop <-chan struct{}) (closed <-chan trickled) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan trickled, 1)
	go func() {
		defer c.Close()
		if _, err := io.WriteString(c, head); err != nil {
			ch <- trickled{at: time.Now()}
			return
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		// A reader notices the server closing (EOF or an answer).
		var answer strings.Builder
		gone := make(chan struct{})
		go func() {
			_, _ = io.Copy(&answer, io.LimitReader(c, 4<<10))
			_, _ = io.Copy(io.Discard, c)
			close(gone)
		}()
		firstLine := func() string {
			line, _, _ := strings.Cut(answer.String(), "\r\n")
			return line
		}
		for {
			select {
			case <-stop:
				c.Close()
				<-gone
				return
			case <-gone:
				ch <- trickled{at: time.Now(), answer: firstLine()}
				return
			case <-tick.C:
				if _, err := c.Write([]byte("x")); err != nil {
					at := time.Now()
					c.Close()
					<-gone
					ch <- trickled{at: at, answer: firstLine()}
					return
				}
			}
		}
	}()
	return ch
}

// TestSlowlorisHeaders: connections that trickle their headers are closed
// by sluice's header timeout (10 s on the proxy, 5 s on the admin port)
// and meanwhile cost nobody else a thing.
func TestSlowlorisHeaders(t *testing.T) {
	t.Parallel()
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sl := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(), "SLUICE_INITIAL_CONCURRENCY=1", "SLUICE_MAX_CONCURRENCY=1")
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	var proxyClosed, adminClosed []<-chan trickled
	for range 20 {
		proxyClosed = append(proxyClosed, trickle(t, hostPort(sl.proxyURL), "PUT /put HTTP/1.1\r\nHost: s\r\nX-A: ", 300*time.Millisecond, stop))
		adminClosed = append(adminClosed, trickle(t, hostPort(sl.adminURL), "GET /metrics HTTP/1.1\r\nHost: s\r\nX-A: ", 300*time.Millisecond, stop))
	}
	l := newLoader(sl.proxyURL, "good", 5*time.Second)
	defer l.close()
	if o := l.write("PUT", "/put", "", []byte("ok")); !o.clean2xx() || o.duration > 2*time.Second {
		t.Errorf("a normal write beside 40 slowloris connections: %v", o)
	}
	check := func(name string, chans []<-chan trickled, limit time.Duration) {
		for i, ch := range chans {
			select {
			case end := <-ch:
				if d := end.at.Sub(start); d > limit {
					t.Errorf("%s connection %d closed after %v, want within %v", name, i, d.Round(time.Millisecond), limit)
				}
			case <-time.After(limit + 5*time.Second - time.Since(start)):
				t.Errorf("%s connection %d still open after %v of trickled headers", name, i, time.Since(start).Round(time.Second))
				return
			}
		}
	}
	check("admin", adminClosed, 5*time.Second+2*time.Second)
	check("proxy", proxyClosed, 10*time.Second+2*time.Second)
}

// TestSlowlorisBodies: loaders that send their headers at once and then
// trickle the body. They must not take the send slots from other loaders
// (a buffered body is read before a slot is needed), and sluice must close
// them within a bound rather than hold them for ever.
func TestSlowlorisBodies(t *testing.T) {
	t.Parallel()
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sl := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(),
		"SLUICE_INITIAL_CONCURRENCY=2", "SLUICE_MAX_CONCURRENCY=2",
		"SLUICE_UPSTREAM_TIMEOUT=2s", "SLUICE_QUEUE_TIMEOUT=2s")
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	var closed []<-chan trickled
	// Retryable (PUT, small: buffered) and streamed (POST) bodies.
	for _, m := range []string{"PUT", "PUT", "POST", "POST"} {
		closed = append(closed, trickle(t, hostPort(sl.proxyURL),
			m+" /put HTTP/1.1\r\nHost: s\r\nContent-Length: 100000\r\n\r\n", 200*time.Millisecond, stop))
	}
	// Let the slow requests reach sluice and take what they take.
	if !eventually(2*time.Second, func() bool {
		return storeRequests(store) >= 2 || status(t, sl.adminURL).Limiter.InFlight >= 2
	}) {
		t.Log("slow requests did not occupy the send slots (good)")
	}
	l := newLoader(sl.proxyURL, "good", 10*time.Second)
	defer l.close()
	if o := l.write("PUT", "/put", "", []byte("ok")); !o.clean2xx() || o.duration > time.Second {
		t.Errorf("a normal write beside loaders trickling their bodies: %v (in flight %d)", o, status(t, sl.adminURL).Limiter.InFlight)
	}
	const limit = 15 * time.Second
	for i, ch := range closed {
		select {
		case end := <-ch:
			t.Logf("trickling connection %d closed after %v, answered %q", i, end.at.Sub(start).Round(time.Millisecond), end.answer)
			// The store never got these bodies whole: whatever the
			// loader reads must not say it did (net/http's implicit
			// 200, when the handler wrote nothing, once did).
			if strings.HasPrefix(end.answer, "HTTP/1.1 2") {
				t.Errorf("trickling connection %d, whose body never arrived whole, was answered %q", i, end.answer)
			}
		case <-time.After(limit - time.Since(start)):
			t.Errorf("trickling connection %d (a body at 5 B/s) still open after %v: no body read timeout", i, time.Since(start).Round(time.Second))
		}
	}
}

// storeRequests returns how many requests the store has read.
func storeRequests(s *Store) int {
	n, _, _ := s.Counts()
	return n
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.left)
	for i := range p[:n] {
		p[i] = byte('a' + i%26)
	}
	r.left -= n
	return int(n), nil
}

// TestBodiesFarOverTheLimits: bodies of 256 MiB (64× the buffer budget),
// with and without a Content-Length, and headers over the 1 MiB limit.
// Big bodies stream through once, whole, with bounded memory: the buffer
// stays within its budget and the heap does not grow with the body.
// Oversized headers get 431.
func TestBodiesFarOverTheLimits(t *testing.T) {
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sl := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(), "SLUICE_RETRY_BODY_MAX=1MiB", "SLUICE_BUFFER_BUDGET=4MiB")
	const size = 256 << 20
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
	var peakBuffer int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				for _, l := range series(metricsTextQuiet(sl.adminURL)) {
					if strings.HasPrefix(l, "sluice_proxy_buffer_bytes ") {
						var v float64
						fmt.Sscan(strings.TrimPrefix(l, "sluice_proxy_buffer_bytes "), &v)
						peakBuffer = max(peakBuffer, int64(v))
					}
				}
			}
		}
	}()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableCompression: true}}
	for _, known := range []bool{true, false} {
		id := fmt.Sprintf("big-%v", known)
		req, _ := http.NewRequest("PUT", sl.proxyURL+"/put", &patternReader{left: size})
		if known {
			req.ContentLength = size
		} else {
			req.ContentLength = -1 // chunked
		}
		req.Header.Set(HeaderRequestID, id)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || store.Complete(id) != 1 || store.Acked(id) != 1 {
			t.Errorf("%s: status %d, store saw it whole %d times, acknowledged %d times; want 200, 1, 1",
				id, resp.StatusCode, store.Complete(id), store.Acked(id))
		}
	}
	close(done)
	<-sampled
	client.CloseIdleConnections()
	growth := int64(peak) - int64(base)
	t.Logf("2 × %d MiB streamed: heap in use grew by at most %.1f MiB, sluice buffered at most %d bytes",
		size>>20, float64(growth)/(1<<20), peakBuffer)
	if growth > 64<<20 {
		t.Errorf("heap grew by %.1f MiB while streaming %d MiB bodies: not bounded", float64(growth)/(1<<20), size>>20)
	}
	if peakBuffer > 4<<20 {
		t.Errorf("sluice buffered %d bytes, over its 4 MiB budget", peakBuffer)
	}

	// Headers over the proxy's 1 MiB limit.
	req, _ := http.NewRequest("PUT", sl.proxyURL+"/put", strings.NewReader("x"))
	req.Header.Set("X-Huge", strings.Repeat("h", 2<<20))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("2 MiB of headers: %d, want 431", resp.StatusCode)
	}
	client.CloseIdleConnections()
}

func metricsTextQuiet(adminURL string) string {
	resp, err := adminClient.Get(adminURL + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// raiseFDLimit lifts the soft limit on open files to the hard limit and
// returns it.
func raiseFDLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// TestThousandsOfIdleConnections: 1000 connections that never send a byte
// and 1000 kept alive after one write. sluice keeps answering promptly, and
// when the loaders close them every goroutine and descriptor goes.
func TestThousandsOfIdleConnections(t *testing.T) {
	const n = 1000
	if lim := raiseFDLimit(); lim < 6*n {
		t.Skipf("RLIMIT_NOFILE is %d; %d connections (both ends in this process) need %d", lim, 2*n, 6*n)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fds := countFDs(t)
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	sl := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(), "SLUICE_INITIAL_RATE=5000")
	g0 := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapInuse

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", hostPort(sl.proxyURL))
		if err != nil {
			t.Fatalf("dial after %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	for i := range n {
		c, err := net.Dial("tcp", hostPort(sl.proxyURL))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "PUT /put HTTP/1.1\r\nHost: s\r\nContent-Length: 2\r\n%s: idle-%d\r\n\r\nok", HeaderRequestID, i)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("write on connection %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("write on connection %d: %d", i, resp.StatusCode)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	perConn := float64(int64(ms.HeapInuse)-int64(heap0)) / (2 * n)
	goroutines := runtime.NumGoroutine() - g0
	t.Logf("%d idle connections: %d more goroutines (loader and store ends included), %.1f KiB of heap each", 2*n, goroutines, perConn/1024)

	l := newLoader(sl.proxyURL, "fresh", 5*time.Second)
	start := time.Now()
	for range 20 {
		if o := l.write("PUT", "/put", "", []byte("ok")); !o.clean2xx() {
			t.Errorf("a write beside %d idle connections: %v", 2*n, o)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("20 writes beside %d idle connections took %v", 2*n, d)
	}
	if code := getJSON(t, sl.adminURL+"/healthz", nil); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	l.close()
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	sl.stop()
	store.Close()
	if !eventually(10*time.Second, func() bool { return countFDs(t) <= fds }) {
		t.Errorf("file descriptors: %d before, %d after", fds, countFDs(t))
	}
}

var jobLabel = regexp.MustCompile(`[{,]job(?:_id)?="([^"]*)"`)

// jobSeries counts the /metrics series with a job label and the distinct
// jobs they name.
func jobSeries(exposition string) (n int, jobs map[string]bool) {
	jobs = map[string]bool{}
	for _, l := range series(exposition) {
		if m := jobLabel.FindStringSubmatch(l); m != nil {
			n++
			jobs[m[1]] = true
		}
	}
	return n, jobs
}

// TestJobFlood: a loader sends writes under thousands of distinct
// X-Sluice-Job values. SLUICE_MAX_JOBS holds (429 too_many_jobs past it, no
// write forwarded), and the number of per-job metric series stays bounded
// by it, also after the first wave of jobs has gone idle and a second wave
// comes and takes their places.
func TestJobFlood(t *testing.T) {
	t.Parallel()
	const maxJobs = 50
	store, err := NewStore(Healthy)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sl := startInproc(t, "SLUICE_UPSTREAM_URL="+store.URL(), fmt.Sprintf("SLUICE_MAX_JOBS=%d", maxJobs),
		"SLUICE_STALL_AFTER=3s", "SLUICE_INITIAL_RATE=2000")
	l := newLoader(sl.proxyURL, "flood", 10*time.Second)
	defer l.close()
	wave := func(name string, jobs int) {
		t.Helper()
		var mu sync.Mutex
		var ok, refused int
		var wg sync.WaitGroup
		for w := range 10 {
			wg.Go(func() {
				for i := w; i < jobs; i += 10 {
					o := l.write("PUT", "/put", fmt.Sprintf("%s-%d", name, i), []byte("x"))
					mu.Lock()
					switch {
					case o.clean2xx():
						ok++
					case o.status == 429 && o.code == "too_many_jobs":
						refused++
						if store.Complete(o.id) != 0 {
							t.Errorf("%v: refused but forwarded", o)
						}
					default:
						t.Errorf("%v: want 2xx or 429 too_many_jobs", o)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ok > maxJobs {
			t.Errorf("%s: %d jobs admitted, SLUICE_MAX_JOBS is %d", name, ok, maxJobs)
		}
		n, names := jobSeries(metricsText(t, sl.adminURL))
		t.Logf("%s: %d writes under distinct jobs: %d admitted, %d refused; /metrics has %d series naming %d jobs",
			name, jobs, ok, refused, n, len(names))
		if len(names) > maxJobs {
			t.Errorf("%s: /metrics names %d distinct jobs, SLUICE_MAX_JOBS is %d: series cardinality is not bounded by the job cap", name, len(names), maxJobs)
		}
	}
	wave("first", 1000)
	// Every first-wave job goes idle (3 s, longer than a wave takes): a
	// second wave is admitted in their places, the idle jobs forgotten.
	if !eventually(10*time.Second, func() bool { return status(t, sl.adminURL).Jobs["idle"] >= maxJobs }) {
		t.Fatalf("first-wave jobs did not go idle: %v", status(t, sl.adminURL).Jobs)
	}
	wave("second", 1000)
}
