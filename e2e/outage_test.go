//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// storeOutage is how long VictoriaMetrics is down in TestStoreOutage.
const storeOutage = 30 * time.Second

// probeIntervalMin is the shortest interval between two probes of a store
// that refuses connections: sluice sends at most one write per interval
// while it is down, and the interval only grows from there.
const probeIntervalMin = 250 * time.Millisecond

// outageRun is one load through a VictoriaMetrics that is stopped for
// storeOutage in the middle of it.
type outageRun struct {
	res         Result
	check       Check
	down        time.Duration // from the port closing to the store healthy again
	unreachable float64       // sluice's attempts that found no store
	pushedBack  float64       // writes sluice pushed back because the store was unreachable
	expired     float64       // held writes whose hold ended first
	sluice409   float64
	rowsAtStop  float64
}

// runOutage runs a 1.6M-sample load through sluice (as sluiceForVictoria,
// with extra), 8 writers each sending a batch of 2000 samples every 100ms
// for 10s, and stops VictoriaMetrics with SIGTERM once a third of it is
// stored; after storeOutage it starts it again on the same port and data
// directory. The pace keeps the load going when the store stops, however
// fast the machine. The loader retries what it is refused, as a
// well-behaved client does, until every sample is acknowledged.
func runOutage(t *testing.T, job string, extra ...string) outageRun {
	t.Helper()
	vm := startVictoria(t)
	sl := startSluice(t, sluiceForVictoria(vm, extra...)...)
	l := bulkLoad(sl.proxyURL, job)
	l.Writers, l.Batches, l.BatchSize = 8, 100, 2000
	l.Interval = 100 * time.Millisecond
	l.Client = loaderClient(l.Writers)

	done := runLoadInBackground(l, 3*time.Minute)
	var r outageRun
	waitFor(t, sl.p, time.Minute, "a third of the samples inserted", func() error {
		if got := vm.imports(t).Rows; got < float64(l.Samples())/3 {
			return fmt.Errorf("%.0f of %d rows inserted", got, l.Samples())
		}
		return nil
	})
	r.rowsAtStop = vm.imports(t).Rows
	vm.stop(t)
	down := time.Now()
	select {
	case d := <-done:
		t.Fatalf("the load ended (%v, acked %d) before the store went down: the outage proves nothing", d.err, d.res.AckedSamples)
	default:
	}
	time.Sleep(time.Until(down.Add(storeOutage)))
	vm.start(t)
	r.down = time.Since(down)

	d := <-done
	if d.err != nil {
		t.Fatalf("loader: %v (acked %d of %d, answers %v, last error %q)", d.err, d.res.AckedSamples, l.Samples(), d.res.Status, d.res.LastError)
	}
	r.res = d.res
	r.check = vm.stored(t, l, r.res)
	m := sl.adminURL + "/metrics"
	r.unreachable = scrape(t, m, "sluice_upstream_attempts_total", `kind="unreachable"`)
	r.pushedBack = scrape(t, m, "sluice_proxy_backpressure_total", `reason="unreachable"`)
	r.expired = scrape(t, m, "sluice_proxy_backpressure_total", `reason="hold_expired"`)
	r.sluice409 = scrape(t, m, "sluice_proxy_requests_total", `code="409"`)
	t.Logf("%s: store down %v from %.0f of %d rows; loader: %d samples acked in %v, answers %v (with Retry-After %v); sluice: %.0f attempts found no store, %.0f writes pushed back as unreachable, %.0f holds expired, %.0f answered 409; %v",
		job, r.down.Round(100*time.Millisecond), r.rowsAtStop, l.Samples(), r.res.AckedSamples, r.res.Elapsed.Round(time.Millisecond),
		r.res.Status, r.res.WithRetryAfter, r.unreachable, r.pushedBack, r.expired, r.sluice409, r.check)
	if !r.check.Exact() {
		t.Errorf("%s: store holds %v, want every acknowledged sample exactly once", job, r.check)
	}
	if r.res.AckedSamples != l.Samples() {
		t.Errorf("%s: acked %d of %d samples", job, r.res.AckedSamples, l.Samples())
	}
	if r.res.Status[http.StatusConflict] > 0 || r.sluice409 > 0 {
		t.Errorf("%s: %d writes answered 409 (sluice counted %.0f): a store outage must never end a job", job, r.res.Status[http.StatusConflict], r.sluice409)
	}
	// However many writes wait, sluice sends at most one probe per
	// probeIntervalMin while nothing listens; the slack is the writes in
	// flight when the store went away (one per writer, and one pipelined
	// behind each) and the refusals of its shutdown.
	// None at all would mean the counter was not read (or sluice never
	// tried the dead port), and the bound says nothing.
	if limit := r.down.Seconds()/probeIntervalMin.Seconds() + float64(4*l.Writers); r.unreachable == 0 || r.unreachable > limit {
		t.Errorf("%s: %.0f attempts into a dead port in %v, want 1 to %.0f (one per %v, and the writes in flight)", job, r.unreachable, r.down.Round(100*time.Millisecond), limit, probeIntervalMin)
	}
	return r
}

// TestStoreOutage: VictoriaMetrics is stopped for storeOutage in the middle
// of a load through sluice, and started again on the same port and data.
//
// With SLUICE_HOLD_MAX=60s, longer than the outage, sluice holds the
// writes through it: the loader sees only 2xx and every sample is stored
// exactly once. Without it (and with SLUICE_QUEUE_TIMEOUT=10s, shorter
// than the outage), the loader gets sluice's pushback (429 with a
// Retry-After), never a 409 or a 502, and retries on its own; what it was
// told was stored is stored exactly once. Either way sluice sends at most
// one probe per 250ms into the dead port, not the loader's retries.
//
// The two runs are independent (each its own store and sluice) and spend
// most of their time waiting for the outage to end, so they run side by
// side.
func TestStoreOutage(t *testing.T) {
	requireTestbed(t, false, false)
	var hold, pushback outageRun
	t.Run("group", func(t *testing.T) {
		t.Run("hold", func(t *testing.T) {
			t.Parallel()
			hold = runOutage(t, "e2e-outage-hold", "SLUICE_HOLD_MAX=60s")
			for code, n := range hold.res.Status {
				if code < 200 || code > 299 {
					t.Errorf("with hold the loader got %d answers %d (all: %v): a write held through the outage must be acknowledged", n, code, hold.res.Status)
				}
			}
			if hold.expired > 0 {
				t.Errorf("with hold %.0f holds expired in an outage shorter than SLUICE_HOLD_MAX", hold.expired)
			}
		})
		t.Run("pushback", func(t *testing.T) {
			t.Parallel()
			// A write waits for a probe at most SLUICE_QUEUE_TIMEOUT per
			// attempt: at the default 30s most writes would wait the whole
			// outage out in the queue, and the pushback would hardly show.
			pushback = runOutage(t, "e2e-outage-pushback", "SLUICE_QUEUE_TIMEOUT=10s")
			s := pushback.res
			for code, n := range s.Status {
				if code != http.StatusTooManyRequests && (code < 200 || code > 299) {
					t.Errorf("without hold the loader got %d answers %d (all: %v): want only sluice's pushback, 429", n, code, s.Status)
				}
			}
			if s.Status[http.StatusTooManyRequests] == 0 || pushback.pushedBack == 0 {
				t.Errorf("without hold the loader got no pushback through the outage (answers %v, sluice pushed back %.0f)", s.Status, pushback.pushedBack)
			}
			if got, want := s.WithRetryAfter[http.StatusTooManyRequests], s.Status[http.StatusTooManyRequests]; got != want {
				t.Errorf("without hold %d of %d pushbacks carried a Retry-After, want all", got, want)
			}
		})
	})
	if t.Failed() {
		return
	}
	t.Logf("RESULT store_outage down_s=%.1f hold: acked=%d stored=%d non2xx=%d unreachable_attempts=%.0f; pushback: acked=%d stored=%d answers_429=%d with_retry_after=%d answers_409=%d unreachable_attempts=%.0f pushed_back=%.0f",
		hold.down.Seconds(), hold.check.Acked, hold.check.Stored, hold.res.Attempts-count2xx(hold.res), hold.unreachable,
		pushback.check.Acked, pushback.check.Stored, pushback.res.Status[http.StatusTooManyRequests], pushback.res.WithRetryAfter[http.StatusTooManyRequests],
		pushback.res.Status[http.StatusConflict], pushback.unreachable, pushback.pushedBack)
}

// count2xx is how many of a loader's answers were 2xx.
func count2xx(r Result) int64 {
	var n int64
	for code, c := range r.Status {
		if code >= 200 && code < 300 {
			n += c
		}
	}
	return n
}
