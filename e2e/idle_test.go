//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// quietFor is how long the loader feeding vmagent stops in
// TestDefaultJobGoesIdle: longer than SLUICE_STALL_AFTER and
// SLUICE_CANCEL_GRACE together (5s each there), so that a quiet stream
// taken for a stall would have been cancelled by the time it resumes.
const quietFor = 15 * time.Second

// TestDefaultJobGoesIdle: vmagent remote-writes through sluice without
// X-Sluice-Job, so every write is sluice's default job, a stream. The
// loader feeding vmagent goes quiet for quietFor, then resumes. The
// default job goes idle, not stalled, is never cancelled, and runs again
// on the next write: vmagent never gets a 409 (a cancelled job's answer,
// on which vmagent drops the block), drops nothing, and every sample of
// both parts is stored exactly once.
func TestDefaultJobGoesIdle(t *testing.T) {
	requireTestbed(t, false, true)
	vm := startVictoria(t)
	sl := startSluice(t, sluiceForVictoria(vm, "SLUICE_STALL_AFTER=5s", "SLUICE_CANCEL_GRACE=5s")...)
	a := startVMAgent(t, sl.proxyURL+"/api/v1/write", "")
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)

	var pushed int64
	// feed pushes 400k samples into vmagent as series of job label, and
	// waits until the store has inserted every sample pushed so far.
	feed := func(label string) (*Loader, Result) {
		t.Helper()
		l := bulkLoad(a.url, label)
		l.Writers, l.Batches, l.Start = 4, 10, start
		res := runLoader(t, l, time.Minute)
		if res.AckedSamples != l.Samples() {
			t.Fatalf("vmagent accepted %d of %d samples: %v", res.AckedSamples, l.Samples(), res.Status)
		}
		pushed += l.Samples()
		waitFor(t, a.p, time.Minute, "vmagent delivering every sample", func() error {
			if got := scrape(t, vm.url+"/metrics", "vm_rows_inserted_total", `type="promremotewrite"`); got < float64(pushed) {
				return fmt.Errorf("store inserted %.0f of %d samples", got, pushed)
			}
			return nil
		})
		return l, res
	}

	before, beforeRes := feed("e2e-default-before")
	quiet := time.Now()
	if v := sl.job(t, "default"); !isActive(v.State) {
		t.Fatalf("default job is %s after its first writes, want running", v.State)
	}
	idle := sl.waitJob(t, "default", quietFor, "idle", "stalled", "cancelling", "cancelled")
	idleAfter := time.Since(quiet)
	if idle.State != "idle" {
		t.Fatalf("default job went %s (%s) %v after its loader went quiet, want idle", idle.State, idle.Reason, idleAfter.Round(100*time.Millisecond))
	}
	time.Sleep(time.Until(quiet.Add(quietFor)))
	if v := sl.job(t, "default"); v.State != "idle" {
		t.Errorf("default job is %s (%s) after %v of quiet, want still idle", v.State, v.Reason, quietFor)
	}

	after, afterRes := feed("e2e-default-after")
	v := sl.job(t, "default")

	var transitions []string
	for _, h := range v.History {
		transitions = append(transitions, h.From+"→"+h.To+" ("+h.Reason+")")
	}
	vmagent409 := scrape(t, a.url+"/metrics", "vmagent_remotewrite_requests_total", `status_code="409"`)
	vmagent2xx := scrape(t, a.url+"/metrics", "vmagent_remotewrite_requests_total", `status_code="2XX"`)
	vmagentAll := scrape(t, a.url+"/metrics", "vmagent_remotewrite_requests_total")
	dropped := scrape(t, a.url+"/metrics", "vmagent_remotewrite_packets_dropped_total")
	sluice409 := scrape(t, sl.adminURL+"/metrics", "sluice_proxy_requests_total", `code="409"`)
	c1, c2 := vm.stored(t, before, beforeRes), vm.stored(t, after, afterRes)
	t.Logf("default job: idle %v after its loader went quiet; %s after the quiet of %v; transitions %v", idleAfter.Round(100*time.Millisecond), v.State, quietFor, transitions)
	t.Logf("vmagent: %.0f remote writes, %.0f answered 2xx, %.0f answered 409, %.0f blocks dropped; sluice answered %.0f writes 409; before the quiet %v; after it %v",
		vmagentAll, vmagent2xx, vmagent409, dropped, sluice409, c1, c2)
	t.Logf("RESULT default_job_idle quiet_s=%.0f idle_after_s=%.1f states=%s acked=%d stored=%d vmagent_409=%.0f sluice_409=%.0f dropped=%.0f",
		quietFor.Seconds(), idleAfter.Seconds(), stateTrail(v), c1.Acked+c2.Acked, c1.Stored+c2.Stored, vmagent409, sluice409, dropped)

	if !c1.Exact() || !c2.Exact() {
		t.Errorf("store holds %v of the samples before the quiet and %v of those after, want every sample exactly once", c1, c2)
	}
	if vmagent409 > 0 || sluice409 > 0 || vmagent2xx != vmagentAll || dropped > 0 {
		t.Errorf("vmagent got %.0f of %.0f writes answered 2xx, %.0f answered 409 (sluice counted %.0f), dropped %.0f blocks: a quiet stream must never be refused",
			vmagent2xx, vmagentAll, vmagent409, sluice409, dropped)
	}
	if !isActive(v.State) {
		t.Errorf("default job is %s (%s) after its loader resumed, want running", v.State, v.Reason)
	}
	resumed := false
	for _, h := range v.History {
		switch {
		case h.From == "idle" && isActive(h.To):
			resumed = true
		case h.To == "stalled" || h.To == "cancelling" || h.To == "cancelled":
			t.Errorf("default job went %s→%s (%s): a quiet loader is idle, not stalled", h.From, h.To, h.Reason)
		}
	}
	if !resumed {
		t.Errorf("default job never went from idle back to running: %v", transitions)
	}
}

// stateTrail is the states a job went through, in order: running→idle→running.
func stateTrail(v jobView) string {
	var trail []string
	for i, h := range v.History {
		if i == 0 {
			trail = append(trail, h.From)
		}
		trail = append(trail, h.To)
	}
	return strings.Join(trail, "→")
}
