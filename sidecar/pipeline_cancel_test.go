package sidecar

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/rawstore"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// A job's cancel waits for the job's writes the store already has, so that
// none lands after its cancel and cleanup; a pipelined write in the store's
// socket cannot be recalled. Its loader leaving (a loader told 409 for
// its other writes exits) does not take it out of the store's socket: the
// store still takes it up once it answers the write ahead, so the cancel
// must still wait for it.
func TestCancelWaitsForAPipelinedWriteItsLoaderLeft(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var landed []string
	store := rawstore.New(t, func(c *rawstore.Conn, seq int, body string) {
		if body == "other-1" {
			c.AwaitNext(10 * time.Second)
			close(held)
			<-release
		}
		mu.Lock()
		landed = append(landed, body)
		mu.Unlock()
		c.Answer(http.StatusNoContent, body, false)
	})
	s := pipelinedServer(t, store.URL())
	h := s.ProxyHandler()
	if code := send(h, context.Background(), http.MethodPost, "/write", "warm", proxy.HeaderJob, "other").Code; code != http.StatusNoContent {
		t.Fatalf("first write: %d", code) // the limiter pipelines only after a first answer
	}
	var wg sync.WaitGroup
	wg.Go(func() { send(h, context.Background(), http.MethodPost, "/write", "other-1", proxy.HeaderJob, "other") })
	<-waitFor(func() bool { return s.lim.Snapshot().InFlight == 1 })
	ctx, leave := context.WithCancel(context.Background())
	left := make(chan struct{})
	wg.Go(func() {
		defer close(left)
		send(h, ctx, http.MethodPost, "/write", "j-1", proxy.HeaderJob, "j")
	})
	<-held // j-1 is in the store's socket behind other-1
	if _, err := s.jobs.Cancel("j", false, "test"); err != nil {
		t.Fatal(err)
	}
	leave()
	<-left
	v, _ := s.jobs.Get("j")
	mu.Lock()
	stored := slices.Contains(landed, "j-1")
	mu.Unlock()
	if !stored && v.InFlight == 0 {
		t.Errorf("job j in %s counts no write in flight while its write j-1 is still in the store's socket: its cancel and cleanup may run before j-1 lands", v.State)
	}
	<-waitFor(func() bool { v, _ := s.jobs.Get("j"); return v.State == state.Cancelled || v.InFlight > 0 })
	if v, _ := s.jobs.Get("j"); v.State == state.Cancelled {
		mu.Lock()
		if !slices.Contains(landed, "j-1") {
			t.Errorf("job j cancelled (cancel and cleanup done) while its write j-1 was still in the store's socket, to land after")
		}
		mu.Unlock()
	}
	close(release)
	wg.Wait()
	<-waitFor(func() bool { v, _ := s.jobs.Get("j"); return v.State == state.Cancelled })
}
