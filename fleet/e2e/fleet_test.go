//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/internal/freeport"
	"github.com/sluice-dev/sluice/internal/logbuf"
	"github.com/sluice-dev/sluice/internal/redistest"
	"github.com/sluice-dev/sluice/internal/testbin"
	"github.com/sluice-dev/sluice/sidecar/admin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testbin.Cleanup()
		os.Exit(code)
	}))
}

// sluiceBinary is the sluice command built from this module, once.
func sluiceBinary(t *testing.T) string { return testbin.Sluice(t) }

// store is a write endpoint of a fixed capacity: a token bucket of
// capacity requests/s (burst: a tenth of a second), 429 with Retry-After
// above it, and 5ms of service time. It counts what it accepts per client
// (the loaders' X-Client header, which sluice forwards) per second.
type store struct {
	capacity float64
	start    time.Time

	mu        sync.Mutex
	tokens    float64
	last      time.Time
	accepted  map[string][]int // per client, per second since start
	throttled int
	total     int
}

func newStore(capacity float64) *store {
	now := time.Now()
	return &store{capacity: capacity, start: now, last: now, tokens: capacity / 10, accepted: map[string][]int{}}
}

func (s *store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	now := time.Now()
	s.tokens = min(s.capacity/10, s.tokens+now.Sub(s.last).Seconds()*s.capacity)
	s.last = now
	s.total++
	ok := s.tokens >= 1
	if ok {
		s.tokens--
		sec := int(now.Sub(s.start) / time.Second)
		c := r.Header.Get("X-Client")
		for len(s.accepted[c]) <= sec {
			s.accepted[c] = append(s.accepted[c], 0)
		}
		s.accepted[c][sec]++
	} else {
		s.throttled++
	}
	s.mu.Unlock()
	if !ok {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	time.Sleep(5 * time.Millisecond)
	w.WriteHeader(http.StatusOK)
}

// goodput returns each client's accepted requests/s over [from, to).
func (s *store) goodput(clients []string, from, to time.Duration) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]float64, len(clients))
	for i, c := range clients {
		n := 0
		for sec := int(from / time.Second); sec < int(to/time.Second); sec++ {
			if sec < len(s.accepted[c]) {
				n += s.accepted[c][sec]
			}
		}
		out[i] = float64(n) / (to - from).Seconds()
	}
	return out
}

// sidecar is one sluice process.
type sidecar struct {
	cmd      *exec.Cmd
	proxy    string
	admin    string
	logs     *logbuf.Buffer
	finished chan struct{}
}

func (s *sidecar) logText() string { return s.logs.String() }

func (s *sidecar) exited() bool {
	select {
	case <-s.finished:
		return true
	default:
		return false
	}
}

func startSidecar(t *testing.T, bin string, env ...string) *sidecar {
	t.Helper()
	ports := freeport.Get(t, 2)
	pp, ap := ports[0], ports[1]
	s := &sidecar{proxy: fmt.Sprintf("http://127.0.0.1:%d", pp), admin: fmt.Sprintf("http://127.0.0.1:%d", ap),
		logs: &logbuf.Buffer{}, finished: make(chan struct{})}
	s.cmd = exec.Command(bin, "run")
	s.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"SLUICE_LISTEN_ADDR=127.0.0.1:" + strconv.Itoa(pp),
		"SLUICE_ADMIN_ADDR=127.0.0.1:" + strconv.Itoa(ap),
		"SLUICE_LOG_LEVEL=info",
	}, env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.finished) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.finished:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.finished
		}
	})
	return s
}

func (s *sidecar) waitReady(t *testing.T) {
	t.Helper()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if s.exited() {
			t.Fatalf("sidecar %s exited before it was ready; logs:\n%s", s.admin, s.logText())
		}
		if resp, err := c.Get(s.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sidecar %s not ready; logs:\n%s", s.admin, s.logText())
}

func (s *sidecar) status(t *testing.T) admin.Status {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(s.admin + "/v1/status")
	if err != nil {
		t.Errorf("status of %s: %v; logs:\n%s", s.admin, err, tail(s.logText(), 30))
		return admin.Status{}
	}
	defer resp.Body.Close()
	var st admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		// Not sluice's status: whatever answers on this port is not the
		// sidecar the test started, and its logs say why.
		t.Errorf("status of %s: %d, %v; logs:\n%s", s.admin, resp.StatusCode, err, tail(s.logText(), 30))
	}
	return st
}

// outcomes counts what the loaders saw.
type outcomes struct {
	mu      sync.Mutex
	acked   int
	retried int            // 429s from sluice or the store, sent again after Retry-After
	failed  map[string]int // any other answer, by status or error
}

func (o *outcomes) fail(why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed[why]++
}

// load runs writers greedy writers through sidecar s until ctx ends. Each
// write is sent until acknowledged, honouring a 429's Retry-After (at most
// 1s), as sluice asks of a loader; anything else is a failed write.
func load(ctx context.Context, wg *sync.WaitGroup, client *http.Client, s *sidecar, id string, writers int, o *outcomes) {
	body := bytes.Repeat([]byte("x"), 200)
	for w := range writers {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, "PUT", fmt.Sprintf("%s/bucket/%s-%d-%d", s.proxy, id, w, n), bytes.NewReader(body))
					req.Header.Set("X-Client", id)
					resp, err := client.Do(req)
					if err != nil {
						if ctx.Err() == nil {
							o.fail("transport: " + err.Error())
						}
						break
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						o.mu.Lock()
						o.acked++
						o.mu.Unlock()
						break
					}
					if resp.StatusCode != http.StatusTooManyRequests {
						o.fail(resp.Status)
						break
					}
					o.mu.Lock()
					o.retried++
					o.mu.Unlock()
					wait := time.Second
					if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra >= 0 {
						wait = min(wait, time.Duration(ra)*time.Second)
					}
					select {
					case <-time.After(wait):
					case <-ctx.Done():
					}
				}
			}
		})
	}
}

// spread returns the goodputs' mean and their largest relative distance
// from it.
func spread(xs []float64) (mean, worst float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		worst = max(worst, math.Abs(x-mean)/mean)
	}
	return mean, worst
}

// TestFleetEndToEnd: eight sidecars share a store of unknown capacity
// (800 requests/s, 429 with Retry-After above it) through a real Redis.
// Their shares are within 10% of the fair one once the fleet has learned
// the capacity; Redis is stopped for 20s (within 25% meanwhile), then
// killed and restarted with its state lost; no write fails for it, and
// the shares are within 10% again after it.
func TestFleetEndToEnd(t *testing.T) {
	const (
		n        = 8
		capacity = 800.0
		writers  = 16
	)
	// Phases, from the start of the load.
	const (
		fairFrom  = 8 * time.Second  // the fleet has learned the capacity
		stopAt    = 20 * time.Second // Redis stopped (SIGSTOP)…
		restartAt = 40 * time.Second // …then killed and restarted empty
		againFrom = 48 * time.Second // fair again
		end       = 60 * time.Second
	)
	bin := sluiceBinary(t)
	redis := redistest.Start(t)
	st := newStore(capacity)
	// httptest's Close waits for every connection to end, including the
	// 500 ms net/http lingers in after a closing reply, which goleak
	// would otherwise find (http.Server.Close does not wait for it).
	srv := httptest.NewUnstartedServer(st)
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Start()
	defer srv.Close()

	var sidecars []*sidecar
	var ids []string
	for i := range n {
		sidecars = append(sidecars, startSidecar(t, bin,
			"SLUICE_UPSTREAM_URL="+srv.URL,
			"SLUICE_FLEET_REDIS_URL="+redis.URL(),
			"SLUICE_FLEET_RESOURCE=e2e:store",
			"SLUICE_JOB=load-"+strconv.Itoa(i),
		))
		ids = append(ids, "c"+strconv.Itoa(i))
	}
	for _, s := range sidecars {
		s.waitReady(t)
	}
	// A sidecar that could not bind its ports exits at once; by now every
	// one that is running has been for a while.
	for _, s := range sidecars {
		if s.exited() {
			t.Fatalf("sidecar %s exited; logs:\n%s", s.admin, s.logText())
		}
	}

	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: writers * 2}}
	defer client.CloseIdleConnections()
	o := &outcomes{failed: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st.mu.Lock()
	st.start = time.Now()
	st.mu.Unlock()
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range sidecars {
		load(ctx, &wg, client, s, ids[i], writers, o)
	}
	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	var trace []string
	var traceMu sync.Mutex
	wg.Go(func() {
		c := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
		for ctx.Err() == nil {
			line := fmt.Sprintf("%4.1fs", time.Since(start).Seconds())
			if resp, err := c.Get(sidecars[0].admin + "/v1/status"); err == nil {
				var s admin.Status
				_ = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if s.Fleet != nil {
					line += fmt.Sprintf(" budget %.0f lease %.0f mode %s local %.0f", s.Fleet.Budget, s.Fleet.Lease, s.Fleet.Mode, s.Limiter.RateLimit)
				}
			}
			st.mu.Lock()
			line += fmt.Sprintf(" store total %d throttled %d", st.total, st.throttled)
			st.mu.Unlock()
			traceMu.Lock()
			trace = append(trace, line)
			traceMu.Unlock()
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	})

	check := func(phase string, from, to time.Duration, tolerance float64) {
		t.Helper()
		g := st.goodput(ids, from, to)
		mean, worst := spread(g)
		total := mean * n
		t.Logf("RESULT %s [%v, %v): fleet goodput %.0f/s of %.0f (%.1f%%), per sidecar %v, worst %.1f%% from fair",
			phase, from, to, total, capacity, 100*total/capacity, roundAll(g), 100*worst)
		if worst > tolerance {
			t.Errorf("%s: a sidecar's share is %.1f%% from the fair one, want within %.0f%%: %v", phase, 100*worst, 100*tolerance, roundAll(g))
			for i, s := range sidecars {
				st := s.status(t)
				t.Logf("sidecar %d: rate limit %.0f concurrency %d queued %d, fleet %+v", i, st.Limiter.RateLimit, st.Limiter.Concurrency, st.Limiter.Queued, st.Fleet)
			}
		}
		if total < 0.85*capacity {
			t.Errorf("%s: the fleet took %.0f/s of %.0f", phase, total, capacity)
		}
	}

	sleepUntil(stopAt)
	check("before", fairFrom, stopAt, 0.10)
	if s := sidecars[0].status(t); s.Fleet == nil || s.Fleet.Mode != "leased" || s.Fleet.MemberCount != n {
		t.Errorf("status before the stop: %+v", s.Fleet)
	}
	redis.Pause()
	t.Logf("redis stopped at %v", time.Since(start).Round(time.Millisecond))
	sleepUntil(stopAt + 10*time.Second)
	if s := sidecars[0].status(t); s.Fleet == nil || s.Fleet.Mode != "safe_share" || !s.Fleet.Degraded {
		t.Errorf("status 10s into the stop: %+v", s.Fleet)
	}
	sleepUntil(restartAt)
	// While Redis is away the sidecars hold their leases, then safe
	// shares, each adapting alone within them: fair, but less tightly.
	check("redis stopped", stopAt, restartAt, 0.25)
	redis.Restart()
	t.Logf("redis restarted empty at %v", time.Since(start).Round(time.Millisecond))
	sleepUntil(end)
	check("after", againFrom, end, 0.10)
	if s := sidecars[0].status(t); s.Fleet == nil || s.Fleet.Mode != "leased" || s.Fleet.MemberCount != n || s.Fleet.Degraded {
		t.Errorf("status at the end: %+v", s.Fleet)
	}
	cancel()
	wg.Wait()

	o.mu.Lock()
	defer o.mu.Unlock()
	st.mu.Lock()
	t.Logf("RESULT writes acknowledged %d, sent again after a 429 %d, failed %v; the store throttled %d of %d attempts (%.2f%%)",
		o.acked, o.retried, o.failed, st.throttled, st.total, 100*float64(st.throttled)/float64(max(1, st.total)))
	st.mu.Unlock()
	if len(o.failed) > 0 {
		t.Errorf("writes failed: %v", o.failed)
	}
	if t.Failed() || testing.Verbose() {
		traceMu.Lock()
		t.Logf("sidecar 0 and the store, every second:\n%s", strings.Join(trace, "\n"))
		traceMu.Unlock()
	}
	if t.Failed() {
		for i, s := range sidecars {
			t.Logf("sidecar %d logs:\n%s", i, tail(s.logText(), 40))
		}
	}
}

func roundAll(xs []float64) []float64 {
	out := slices.Clone(xs)
	for i := range out {
		out[i] = math.Round(out[i])
	}
	return out
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
