package sidecar

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/logbuf"
	"github.com/sluice-dev/sluice/internal/pipenet"
	"github.com/sluice-dev/sluice/state"
)

// serveOnPipes runs s.Serve, as in production, on in-memory listeners
// (the proxy's and the admin port's) and returns them, with stop: the
// SIGTERM, which waits for Serve to return and returns its error.
func serveOnPipes(s *Server) (proxyLn, adminLn *pipenet.Listener, stop func() error) {
	proxyLn = newPipeListener()
	adminLn = pipenet.Listen(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, proxyLn, adminLn) }()
	return proxyLn, adminLn, func() error {
		cancel()
		return <-served
	}
}

// TestShutdownLetsACancelFinish: a job is cancelled, and its loader, told
// so by the 409 on its next write, exits; the pod then stops the sidecar
// while the cancel's call to the store is still under way. The shutdown
// lets it finish (and the cleanup after it) within SLUICE_SHUTDOWN_TIMEOUT:
// with the state in an emptyDir, or in memory, nothing would run it again
// after the pod is gone, and the store would keep the stuck job's task.
func TestShutdownLetsACancelFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		calls := make(chan string, 4)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			calls <- r.URL.Path
			if r.URL.Path == "/_tasks/load/_cancel" {
				<-release // the store takes its time to cancel the task
			}
		})
		cfg := testConfig(t, "SHUTDOWN_TIMEOUT=30s")
		records := &state.MemStore{}
		s, err := NewServer(cfg, Options{Logger: slog.New(slog.DiscardHandler), Store: records,
			Transport: memTransport{store}, ActionClient: &http.Client{Transport: memTransport{store}}})
		if err != nil {
			t.Fatal(err)
		}
		_, _, stop := serveOnPipes(s)
		synctest.Wait()

		body := `{"id":"load","cancel":{"url":"http://store/_tasks/${JOB}/_cancel"},"cleanup":{"url":"http://store/load/_delete"}}`
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", body); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs/load/cancel", ""); rec.Code != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
		}
		if got := <-calls; got != "/_tasks/load/_cancel" {
			t.Fatalf("store called at %s, want the cancel", got)
		}
		stopped := make(chan error, 1)
		go func() { stopped <- stop() }() // SIGTERM: the loader has exited
		time.Sleep(5 * time.Second)
		close(release)
		if err := <-stopped; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if got := len(calls); got != 1 || <-calls != "/load/_delete" {
			t.Errorf("after the cancel, %d more calls to the store; want the cleanup", got)
		}
		recs, err := records.Load()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.ID == "load" && r.State != state.Cancelled {
				t.Errorf("the job's record after the shutdown: %s, want cancelled (its cancel and cleanup done)", r.State)
			}
		}
	})
}

// TestShutdownGivesUpOnAHungStateStore: a shutdown waits for the job
// manager's round and its flush of job state while the state store
// answers, however slowly, but not for a state volume that has stopped
// answering: past flushWait it says that job state was not flushed, and
// lets sluice exit before the kubelet has to kill it.
func TestShutdownGivesUpOnAHungStateStore(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answerIn time.Duration // 0: never, until the test ends
		want     time.Duration
	}{
		{"slow", 3 * time.Second, 3 * time.Second},
		{"hung", 0, flushWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st, logs := &brokenStore{}, &logbuf.Buffer{}
				s, err := NewServer(testConfig(t), Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), Store: st})
				if err != nil {
					t.Fatal(err)
				}
				stop := s.StartLoops()
				answer := st.hang(t) // in the hung case, the test's end: the goroutines left behind end with it
				// The registration's write hangs, holding the store: the
				// job is kept in memory, its record written once the
				// store answers.
				if _, err := s.jobs.Register("load-1", state.Settings{}); !errors.Is(err, state.ErrStoreSlow) {
					t.Fatalf("register with the store hanging: %v, want ErrStoreSlow", err)
				}
				if tc.answerIn > 0 {
					time.AfterFunc(tc.answerIn, answer)
				}
				start := time.Now()
				stop()
				if took := time.Since(start); took != tc.want {
					t.Errorf("shutdown took %v, want %v", took, tc.want)
				}
				notFlushed := strings.Contains(logs.String(), "job state not flushed")
				if tc.answerIn > 0 {
					if notFlushed || !st.closed.Load() || storedIDs(t, st) != "load-1" {
						t.Errorf("store answering after %v: stored %q, store closed %v, logs %s; want load-1 stored and the flush to its end",
							tc.answerIn, storedIDs(t, st), st.closed.Load(), logs)
					}
				} else if !notFlushed {
					t.Errorf("shutdown gave up on the store without saying so: %s", logs)
				}
			})
		})
	}
}

// storedIDs lists, comma-separated, the jobs recorded in st.
func storedIDs(t *testing.T, st state.Store) string {
	t.Helper()
	recs, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return strings.Join(ids, ",")
}

// TestServeStopsWithinShutdownBound: whatever hangs when the pod stops
// sluice (a write the store never answers, a cancel whose call to the
// store never returns, a state volume that stopped answering, an admin
// client that holds its connection mid-request), Serve returns within
// ShutdownBound, the bound every shipped pod's grace period is checked
// against: the kubelet never has to kill sluice before it has said what it
// gave up on. The loader's write, cut off by the drain, is not answered as
// taken.
func TestServeStopsWithinShutdownBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		t.Cleanup(func() { close(gate) }) // the store answers at the test's end, so its goroutines end with it
		calls := make(chan string, 8)
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls <- r.URL.Path
			<-gate
		})
		// A drain short enough that the stalled admin request below is
		// still being read (the admin server's ReadTimeout is 30 s) when
		// the admin port closes; a token, since pipes are no loopback.
		const token = "0123456789abcdef0123456789abcdef"
		cfg := testConfig(t, "SHUTDOWN_TIMEOUT=5s", "UPSTREAM_TIMEOUT=10m", "ACTION_TIMEOUT=10m", "ADMIN_TOKEN="+token)
		st, logs := &brokenStore{}, &logbuf.Buffer{}
		s, err := NewServer(cfg, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), Store: st,
			Transport: memTransport{store}, ActionClient: &http.Client{Transport: memTransport{store}}})
		if err != nil {
			t.Fatal(err)
		}
		proxyLn, adminLn, stop := serveOnPipes(s)
		synctest.Wait()

		// A job whose cancel hangs in the store.
		body := `{"id":"load","cancel":{"url":"http://store/_tasks/${JOB}/_cancel"}}`
		auth := []string{"Authorization", "Bearer " + token}
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", body, auth...); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs/load/cancel", "", auth...); rec.Code != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
		}
		if got := <-calls; got != "/_tasks/load/_cancel" {
			t.Fatalf("store called at %s, want the cancel", got)
		}
		// Another loader's write that the store never answers.
		loader := &http.Client{Transport: &http.Transport{DialContext: proxyLn.Dial}}
		answered := make(chan string, 1)
		go func() {
			resp, err := loader.Post("http://sluice/idx/_doc", "application/json", strings.NewReader(`{"a":1}`))
			if err != nil {
				answered <- err.Error()
				return
			}
			defer resp.Body.Close()
			answered <- resp.Status
		}()
		if got := <-calls; got != "/idx/_doc" {
			t.Fatalf("store called at %s, want the write", got)
		}
		// An admin client stalled in the middle of its request's body.
		conn, err := adminLn.Dial(context.Background(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			_, _ = io.WriteString(conn, "POST /v1/jobs HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer "+token+"\r\nContent-Length: 100\r\n\r\n{")
		}()
		synctest.Wait()
		// The state volume stops answering, with a registration's record
		// still to write.
		st.hang(t)
		if _, err := s.jobs.Register("load-2", state.Settings{}); !errors.Is(err, state.ErrStoreSlow) {
			t.Fatalf("register with the store hanging: %v, want ErrStoreSlow", err)
		}

		start := time.Now()
		if err := stop(); err != nil { // SIGTERM
			t.Errorf("Serve: %v", err)
		}
		switch took, bound := time.Since(start), ShutdownBound(cfg); {
		case took > bound:
			t.Errorf("shutdown took %v, past ShutdownBound %v", took, bound)
		case took < bound:
			t.Errorf("shutdown took %v: it did not wait out the drain (%v), the flush (%v) and the admin client (%v), so the test did not meet each hang",
				took, cfg.ShutdownTimeout, flushWait, adminCloseWait)
		}
		if got := <-answered; strings.HasPrefix(got, "2") {
			t.Errorf("the write the store never answered: %q, want it not answered as taken", got)
		}
		for _, want := range []string{"drain timed out", "cancels or cleanups still under way were stopped", "job state not flushed"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("the shutdown's logs do not say %q: %s", want, logs)
			}
		}
		// The admin connection, closed mid-request, lingers in net/http
		// for half a second (closeWriteAndWait) before it ends; the
		// bubble's time must pass for it while this goroutine lives, or
		// the bubble ends with it asleep.
		time.Sleep(time.Second)
	})
}
