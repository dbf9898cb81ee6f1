package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/internal/pipenet"
	"github.com/sluice-dev/sluice/state"
)

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
		addr := func(port int) net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port} }
		ctx, stop := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx, pipenet.Listen(addr(8080)), pipenet.Listen(addr(9090))) }()
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
		stop() // SIGTERM: the loader has exited
		time.Sleep(5 * time.Second)
		close(release)
		if err := <-served; err != nil {
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
