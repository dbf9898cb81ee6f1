package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the sluice binary: the crash tests
// start it as a subprocess with SLUICE_TEST_MAIN=1 and kill it with SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// sluiceProc is sluice running as a subprocess of the test.
type sluiceProc struct {
	cmd    *exec.Cmd
	admin  string
	proxy  string
	stderr *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startSluice(t *testing.T, env ...string) *sluiceProc {
	t.Helper()
	p := &sluiceProc{admin: freeAddr(t), proxy: freeAddr(t), stderr: &bytes.Buffer{}}
	p.cmd = exec.Command(os.Args[0], "run")
	p.cmd.Env = append(os.Environ(), "SLUICE_TEST_MAIN=1",
		"SLUICE_ADMIN_ADDR="+p.admin, "SLUICE_LISTEN_ADDR="+p.proxy, "SLUICE_LOG_LEVEL=debug")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	p.waitReady(t)
	return p
}

func (p *sluiceProc) waitReady(t *testing.T) {
	t.Helper()
	for range 200 {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("sluice did not become ready; stderr:\n%s", p.stderr)
}

func (p *sluiceProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

func (p *sluiceProc) call(t *testing.T, method, path, body string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.admin+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return v
}

func (p *sluiceProc) write(t *testing.T, job string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.proxy+"/put", strings.NewReader("row"))
	req.Header.Set("X-Sluice-Job", job)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// crashStore accepts writes and counts the cancel and cleanup calls; the
// first cleanup call hangs until released, like a slow clear_bulk_load.
type crashStore struct {
	mu            sync.Mutex
	cancels       int
	cleanups      int
	cleanupCalled chan struct{}
	release       chan struct{}
}

func (s *crashStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/cancel/"):
		s.mu.Lock()
		s.cancels++
		s.mu.Unlock()
	case strings.HasPrefix(r.URL.Path, "/cleanup/"):
		s.mu.Lock()
		s.cleanups++
		n := s.cleanups
		s.mu.Unlock()
		if n == 1 {
			close(s.cleanupCalled)
			select {
			case <-s.release:
			case <-r.Context().Done():
			}
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *crashStore) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancels, s.cleanups
}

// TestCrashDuringCleanup: sluice is killed with SIGKILL while a slow cleanup
// action is under way and restarted on the same state dir. The job still
// ends cancelled, the cleanup is called again (actions are idempotent), the
// cancel is not repeated, and another job is left as it was: a restart alone
// cancels nothing.
func TestCrashDuringCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sluice as a subprocess")
	}
	store := &crashStore{cleanupCalled: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(store)
	defer srv.Close()
	defer close(store.release)
	dir := t.TempDir()
	env := []string{
		"SLUICE_UPSTREAM_URL=" + srv.URL,
		"SLUICE_STATE_DIR=" + dir,
		"SLUICE_CANCEL_URL=" + srv.URL + "/cancel/${JOB}",
		"SLUICE_CLEANUP_URL=" + srv.URL + "/cleanup/${JOB}",
		"SLUICE_ACTION_TIMEOUT=30s",
		"SLUICE_STALL_AFTER=1m",
		"SLUICE_CANCEL_GRACE=1m",
	}
	p := startSluice(t, env...)
	for _, job := range []string{"doomed", "other"} {
		if code := p.write(t, job); code != http.StatusOK {
			t.Fatalf("write for %s: %d", job, code)
		}
	}
	p.call(t, "POST", "/v1/jobs/doomed/cancel", `{}`)
	select {
	case <-store.cleanupCalled:
	case <-time.After(10 * time.Second):
		t.Fatalf("cleanup never called; stderr:\n%s", p.stderr)
	}
	// Progress counters are committed by the one-second flush, not per
	// write (by design: a crash loses at most a second of counts, never a
	// transition); let one flush pass so the totals are durable.
	time.Sleep(1100 * time.Millisecond)
	before := p.call(t, "GET", "/v1/jobs/other", "")
	if s := p.call(t, "GET", "/v1/jobs/doomed", "")["state"]; s != "cleaning" {
		t.Fatalf("doomed is %v while its cleanup runs, want cleaning", s)
	}
	p.kill(t)

	p = startSluice(t, env...)
	var doomed map[string]any
	for range 200 {
		doomed = p.call(t, "GET", "/v1/jobs/doomed", "")
		if doomed["state"] == "cancelled" {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if doomed["state"] != "cancelled" {
		t.Fatalf("after the restart doomed is %v, want cancelled", doomed["state"])
	}
	cancels, cleanups := store.counts()
	if cancels != 1 || cleanups != 2 {
		t.Errorf("store saw %d cancels and %d cleanups, want 1 and 2 (cleanup resumed, cancel not repeated)", cancels, cleanups)
	}
	after := p.call(t, "GET", "/v1/jobs/other", "")
	for _, k := range []string{"state", "totals", "created", "history"} {
		if before[k] == nil {
			t.Fatalf("job view has no %q: %v", k, before)
		}
		if fmt.Sprint(before[k]) != fmt.Sprint(after[k]) {
			t.Errorf("other job's %s changed across the crash: %v -> %v", k, before[k], after[k])
		}
	}
	p.kill(t)
}

// TestSIGTERMDrains: on SIGTERM sluice turns NotReady, stops accepting, lets
// the write in flight finish and exits 0.
func TestSIGTERMDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sluice as a subprocess")
	}
	arrived, finish := make(chan struct{}), make(chan struct{})
	var once sync.Once
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-finish
		w.WriteHeader(http.StatusCreated)
	}))
	defer store.Close()
	p := startSluice(t, "SLUICE_UPSTREAM_URL="+store.URL, "SLUICE_SHUTDOWN_TIMEOUT=10s")
	code := make(chan int, 1)
	go func() { code <- p.write(t, "drain") }()
	<-arrived
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness drops while the write is still in flight.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("readiness did not drop after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(finish)
	if c := <-code; c != http.StatusCreated {
		t.Errorf("the write in flight got %d, want the store's 201", c)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("sluice exited with %v, want 0; stderr:\n%s", err, p.stderr)
	}
}
