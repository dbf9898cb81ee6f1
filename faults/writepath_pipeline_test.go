package faults

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// jobState reads a job's state from sluice's admin API without a
// *testing.T, for the store's goroutines; "" if it cannot.
func jobState(adminURL, job string) string {
	resp, err := adminClient.Get(adminURL + "/v1/jobs/" + job)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var v jobView
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return ""
	}
	return v.State
}

// TestWritePathPipelinedWriteOfCancelledJob: with SLUICE_PIPELINE=true and
// one send slot, job j's write is pipelined behind a write of another job
// that the store holds, so j's write waits in the store's socket. Job j is
// cancelled through the admin API while it does; then the store moves on
// and reads what is in its socket. What must hold:
//   - no write of job j is stored once j has reached cancelled (the store
//     asks sluice for j's state just before it stores a write of j);
//   - each loader's answer is truthful: if the store stored j's write, its
//     loader was not told it was refused; if its loader got 409, the store
//     never stored it;
//   - j reaches cancelled, the other job's write is stored whole once, and
//     nothing leaks.
func TestWritePathPipelinedWriteOfCancelledJob(t *testing.T) {
	t.Parallel()
	var (
		admin atomic.Pointer[string]
		mu    sync.Mutex
		late  []string // j's writes stored after j reached cancelled
	)
	store := newH1Store(t, h1Options{beforeTake: func(id string) {
		if !strings.HasPrefix(id, "pipe-j-") {
			return
		}
		st := jobState(*admin.Load(), "j")
		if st == "cancelled" {
			mu.Lock()
			late = append(late, id)
			mu.Unlock()
		}
	}})
	sl := startWritePath(t, store.URL(), "SLUICE_PIPELINE=true", "SLUICE_INITIAL_CONCURRENCY=1", "SLUICE_MAX_CONCURRENCY=1")
	admin.Store(&sl.admin)
	c := newWritePathClient()
	defer c.CloseIdleConnections()
	write := func(id, job, mode string) (upload, outcome) {
		u := upload{id: id, body: payload(id, 1000), header: map[string]string{"X-Sluice-Job": job}}
		if mode != "" {
			u.header[HeaderFaultMode] = mode
		}
		return u, sendUpload(c, sl.proxy, u)
	}
	if _, o := write("pipe-warm", "other", ""); !o.clean2xx() {
		t.Fatalf("warm-up write: %v", o)
	}

	var (
		uA, uB upload
		oA, oB outcome
		wg     sync.WaitGroup
	)
	wg.Go(func() { uA, oA = write("pipe-other-1", "other", "hold-for-next") })
	if !eventually(5*time.Second, func() bool { return status(t, sl.admin).Limiter.InFlight == 1 }) {
		t.Fatal("the held write never took the send slot")
	}
	wg.Go(func() { uB, oB = write("pipe-j-1", "j", "") })
	select {
	case <-store.held: // j's write is in the store's socket, behind the held one
	case <-time.After(5 * time.Second):
		t.Fatalf("job j's write was not pipelined behind the held write within 5 s (pipelined %d)", status(t, sl.admin).Limiter.Pipelined)
	}
	if code, body := call(t, http.MethodPost, sl.admin+"/v1/jobs/j/cancel", `{"reason":"fault test"}`); code != http.StatusAccepted {
		t.Fatalf("cancel j: %d %s", code, body)
	}
	// sluice may finish the cancel now, or wait for the write it already
	// sent; either way the store moves on after at most 2 s.
	cancelledFirst := eventually(2*time.Second, func() bool { return jobState(sl.admin, "j") == "cancelled" })
	store.release <- struct{}{}
	wg.Wait()
	store.settle()
	if !eventually(5*time.Second, func() bool { return jobState(sl.admin, "j") == "cancelled" }) {
		t.Errorf("job j is %q 5 s after the store moved on, want cancelled", jobState(sl.admin, "j"))
	}
	gotB := store.got.of(uB.id)
	t.Logf("j cancelled before the store moved on: %v; loader of j's write got %d %q; the store received %v", cancelledFirst, oB.status, oB.code, gotB)

	checkWrite(t, uA, oA, store.got.of(uA.id), writeRule{retryable: true})
	checkWrite(t, uB, oB, gotB, writeRule{retryable: true, also: []int{409}})
	mu.Lock()
	if len(late) > 0 {
		t.Errorf("the store stored %v of job j after j had reached cancelled (loader got %v)", late, oB)
	}
	mu.Unlock()

	sl.checkReleased(t, 1, normalWriter(c, sl.proxy, "pipe"))
	c.CloseIdleConnections()
	store.Close()
	sl.checkNoLeak(t)
}
