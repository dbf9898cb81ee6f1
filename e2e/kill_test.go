//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestSIGKILLMidLoad: sluice is killed with SIGKILL
// twice in the middle of a load to a throttling VictoriaMetrics and
// started again on the same ports and state directory. The loader retries
// what failed (connection refused or reset) and the load ends with every
// sample stored exactly once; the job survives both restarts without being
// cancelled.
//
// A write that VictoriaMetrics stored but whose answer died with sluice is
// sent again by the loader: the store runs with -dedup.minScrapeInterval=1ms,
// which makes an import idempotent per series and timestamp, and the number
// of such repeats is measured from the store's own row counter.
func TestSIGKILLMidLoad(t *testing.T) {
	requireTestbed(t, false, false)
	vm := startVictoria(t, append([]string{"-dedup.minScrapeInterval=1ms"}, throttlingVictoria...)...)
	sl := startSluice(t, sluiceForVictoria(vm)...)
	l := bulkLoad(sl.proxyURL, "e2e-sigkill")
	l.Batches = 30 // 4.8M samples

	done := runLoadInBackground(l, 3*time.Minute)
	total := float64(l.Samples())
	var kills []string
	for _, share := range []float64{1.0 / 3, 2.0 / 3} {
		waitFor(t, sl.p, 2*time.Minute, fmt.Sprintf("%.0f%% of the samples inserted", 100*share), func() error {
			if got := vm.imports(t).Rows; got < share*total {
				return fmt.Errorf("%.0f of %.0f rows inserted", got, total)
			}
			return nil
		})
		at := vm.imports(t).Rows
		before := sl.job(t, l.Job)
		sl.killAndRestart(t)
		after := sl.job(t, l.Job)
		kills = append(kills, fmt.Sprintf("at %.0f rows: %s → %s", at, before.State, after.State))
		if after.State != before.State && !(isActive(before.State) && isActive(after.State)) {
			t.Errorf("kill at %.0f rows: job %s was %s, after the restart %s", at, l.Job, before.State, after.State)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("loader: %v (acked %d of %d, answers %v, last error %q)", r.err, r.res.AckedSamples, l.Samples(), r.res.Status, r.res.LastError)
	}
	check := vm.stored(t, l, r.res)
	rows := vm.imports(t).Rows
	s := vm.export(t, l.Job, l.Start)
	v := sl.job(t, l.Job)
	t.Logf("sigkill: kills %v; loader: %d samples acked in %v, answers %v (0 = connection refused or reset); store: %d stored, %d distinct, %.0f rows inserted (%.0f resent after a kill and deduplicated); job %s; %v",
		kills, r.res.AckedSamples, r.res.Elapsed.Round(time.Millisecond), r.res.Status, s.Samples(), s.Distinct(), rows, rows-float64(r.res.AckedSamples), v.State, check)
	t.Logf("RESULT sigkill kills=%d acked=%d stored=%d distinct=%d rows_inserted=%.0f transport_errors=%d",
		len(kills), r.res.AckedSamples, s.Samples(), s.Distinct(), rows, r.res.Status[0])
	if !check.Exact() {
		t.Errorf("after two SIGKILLs: store holds %v, want every acknowledged sample exactly once", check)
	}
	if r.res.AckedSamples != l.Samples() {
		t.Errorf("acked %d of %d samples", r.res.AckedSamples, l.Samples())
	}
	if n := r.res.Unexpected4xx(); n > 0 {
		t.Errorf("the loader got %d answers with a 4xx other than 429: %v", n, r.res.Status)
	}
	if !isActive(v.State) {
		t.Errorf("job %s is %s after the load, want still running (a restart must never cancel it)", l.Job, v.State)
	}
	for _, h := range v.History {
		if h.To == "cancelling" || h.To == "stalled" {
			t.Errorf("job %s went %s→%s (%s) across the restarts", l.Job, h.From, h.To, h.Reason)
		}
	}
	sl.complete(t, l.Job)
}

// isActive reports whether a job state admits writes.
func isActive(state string) bool {
	switch state {
	case "running", "throttled", "backoff":
		return true
	}
	return false
}
