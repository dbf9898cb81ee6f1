package faults

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// outageLength is how long the store's address refuses connections in
// TestStoreOutage.
const outageLength = 2 * time.Second

// TestStoreOutage: the sluice binary in front of a store whose address
// refuses connections for 2 s, after which the store comes up there.
//   - With SLUICE_HOLD_MAX=10s, loaders that never retry get every write
//     acknowledged, none answered with an error, and each is stored once.
//   - Without it, a loader that sends a write again after sluice's
//     pushback (and its Retry-After) sees nothing but the pushback status:
//     never a 409, never a 502; and again each write is stored once.
//
// Either way the dead address gets at most one attempt per probe interval
// (250ms at the shortest), not one per write.
func TestStoreOutage(t *testing.T) {
	t.Run("held", func(t *testing.T) { runStoreOutage(t, true) })
	t.Run("not held", func(t *testing.T) { runStoreOutage(t, false) })
}

func runStoreOutage(t *testing.T, hold bool) {
	addr, err := ClosedPort()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"SLUICE_UPSTREAM_URL=http://" + addr, "SLUICE_UPSTREAM_TIMEOUT=2s", "SLUICE_QUEUE_TIMEOUT=1s"}
	if hold {
		env = append(env, "SLUICE_HOLD_MAX=10s")
	}
	p := startProc(t, env...)

	var store *Store
	storeUp := make(chan error, 1)
	start := time.Now()
	time.AfterFunc(outageLength, func() {
		var err error
		store, err = NewStoreAt(addr, Healthy)
		storeUp <- err
	})
	defer func() {
		if err := <-storeUp; err != nil {
			t.Fatalf("the store could not come up at %s: %v", addr, err)
		}
		store.Close()
	}()

	l := newLoader(p.proxy, "outage", 30*time.Second)
	defer l.close()
	const workers = 8
	var (
		mu   sync.Mutex
		outs = map[string][]outcome{} // every answer of each write, in order
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; time.Since(start) < outageLength+time.Second; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				for {
					o := l.writeID(id, http.MethodPut, "/put", "outage", []byte("row "+id))
					mu.Lock()
					outs[id] = append(outs[id], o)
					mu.Unlock()
					if hold || o.err != nil || o.status != http.StatusTooManyRequests {
						break
					}
					// A loader that honours sluice's pushback.
					secs, _ := strconv.Atoi(o.retryAfter)
					time.Sleep(time.Duration(max(secs, 1)) * time.Second)
				}
			}
		})
	}
	wg.Wait()
	if err := <-storeUp; err != nil {
		t.Fatalf("the store could not come up at %s: %v", addr, err)
	}
	storeUp <- nil // for the deferred Close

	var pushedBack, writes int
	for id, os := range outs {
		writes++
		for i, o := range os {
			last := i == len(os)-1
			switch {
			case o.clean2xx() && last:
			case !hold && !last && o.status == http.StatusTooManyRequests && o.code == "backpressure" && o.retryAfter != "":
				pushedBack++
			default:
				t.Errorf("%v (reason %q, Retry-After %q): want a 2xx%s", o, o.reason, o.retryAfter,
					map[bool]string{true: "", false: ", or sluice's 429 with a Retry-After before it"}[hold])
			}
		}
		if n := store.Acked(id); n != 1 {
			t.Errorf("write %s acknowledged by the store %d times, want once", id, n)
		}
	}
	metrics := metricsText(t, p.admin)
	refused := metricValue(metrics, "sluice_upstream_attempts_total", `kind="unreachable"`)
	t.Logf("%d writes, %d pushbacks; %v attempts found the store unreachable", writes, pushedBack, refused)
	if writes < workers {
		t.Fatalf("only %d writes were sent", writes)
	}
	if !hold && pushedBack == 0 {
		t.Error("no write was pushed back while the store was down")
	}
	// Two writes before the store was ever seen, then a probe per
	// interval; one more for a probe under way as the store came up.
	if limit := 3 + int(outageLength/(250*time.Millisecond)); refused == 0 || refused > float64(limit) {
		t.Errorf("%v attempts reached the refusing address in %v, want 1 to %d", refused, outageLength, limit)
	}
}
