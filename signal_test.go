package main

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/freeport"
)

// TestMain lets a test run this test binary as `sluice run`: with
// SLUICE_TEST_AS_SLUICE set it is sluice, nothing else.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_TEST_AS_SLUICE") != "" {
		os.Exit(run([]string{"run"}, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestSecondSignalStopsAtOnce: the first SIGTERM starts the drain, which
// may take SLUICE_SHUTDOWN_TIMEOUT (here five minutes) while a write is in
// flight; a second SIGTERM (or the second Ctrl-C of an operator who will
// not wait) must end the process then, not be swallowed.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-release // the write is in flight until the test ends
	}))
	defer store.Close()
	defer close(release)
	addrs, err := freeport.Addrs(2)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{"SLUICE_TEST_AS_SLUICE=1", "PATH=" + os.Getenv("PATH"),
		"SLUICE_UPSTREAM_URL=" + store.URL, "SLUICE_LISTEN_ADDR=" + addrs[0], "SLUICE_ADMIN_ADDR=" + addrs[1],
		"SLUICE_SHUTDOWN_TIMEOUT=5m", "SLUICE_UPSTREAM_TIMEOUT=10m"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, logs, done := make(chan error, 1), make(chan string), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case logs <- sc.Text():
			case <-done: // the test has ended: drain the rest unread
			}
		}
		exited <- cmd.Wait()
	}()
	defer close(done)
	defer func() { _ = cmd.Process.Kill() }()
	waitLog := func(what string) {
		t.Helper()
		for {
			select {
			case l := <-logs:
				if strings.Contains(l, what) {
					return
				}
			case err := <-exited:
				t.Fatalf("sluice exited (%v) before logging %q", err, what)
			}
		}
	}
	waitLog("sluice started")

	go func() {
		resp, err := http.Post("http://"+addrs[0]+"/idx/_doc", "application/json", strings.NewReader(`{"a":1}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-arrived
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog("shutdown requested") // draining, the write still in flight
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A bound, not a wait for timing: the drain would take five minutes.
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("sluice exited 0 after its drain was cut short by a second signal")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sluice still draining 30s after a second SIGTERM: the signal was ignored")
	}
}
