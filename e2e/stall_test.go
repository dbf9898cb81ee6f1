//go:build e2e

package e2e

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// cleanupTemplate is the cleanup action a user configures for
// VictoriaMetrics: delete every series of the job. It is written as a user
// would type it, braces and quotes unescaped; sluice replaces ${JOB} with
// the job id query-escaped.
const cleanupTemplate = `/api/v1/admin/tsdb/delete_series?match[]={job="${JOB}"}`

// TestCleanupURLTemplate shows that the cleanup URL survives sluice's
// expansion: the store receives the selector {job="<id>"} for any valid
// job id, and an id can neither end the quoted label value nor add a
// parameter. It needs no server.
func TestCleanupURLTemplate(t *testing.T) {
	f := func(id string) {
		t.Helper()
		if !state.ValidJobID(id) {
			t.Fatalf("%q is not a valid job id", id)
		}
		spec := state.ActionSpec{Kind: state.KindHTTP, URL: "http://127.0.0.1:8428" + cleanupTemplate}
		raw, err := spec.ExpandURL(id)
		if err != nil {
			t.Fatalf("ExpandURL(%q): %v", id, err)
		}
		req, err := http.NewRequest(http.MethodPost, raw, nil)
		if err != nil {
			t.Fatalf("NewRequest(%q): %v", raw, err)
		}
		// What a Go server (VictoriaMetrics is one) parses from the request
		// line sluice sends.
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil {
			t.Fatalf("ParseQuery(%q): %v", req.URL.RawQuery, err)
		}
		if got, want := q["match[]"], []string{`{job="` + id + `"}`}; len(q) != 1 || len(got) != 1 || got[0] != want[0] {
			t.Errorf("job %q: the store receives %v, want match[]=%v", id, q, want)
		}
	}
	f("e2e-doomed")
	f("load.2026-11-24:part_3")
	f("a")
}

// TestStalledJobIsCleanedUp, on a real store: a bulk load stuck under
// throttling for good is what auto-cancel is for. A job whose writes start being refused for good (nginx in front
// of VictoriaMetrics switches to 429 for everything) stalls, and sluice
// cancels it and deletes its series through VictoriaMetrics'
// /api/v1/admin/tsdb/delete_series; another job's series stay intact.
func TestStalledJobIsCleanedUp(t *testing.T) {
	requireTestbed(t, true, false)
	vm := startVictoria(t)
	gw := startNginx(t, nginxConf{Upstream: vm.url[len("http://"):], RetryAfter: 2})
	sl := startSluice(t,
		"SLUICE_UPSTREAM_URL="+gw.url,
		"SLUICE_PROFILE=victoriametrics",
		"SLUICE_RETRY_POST=true",
		"SLUICE_STALL_AFTER=5s",
		"SLUICE_CANCEL_GRACE=2s",
		// The cleanup goes to VictoriaMetrics itself, not through the
		// gateway that now refuses everything.
		"SLUICE_CLEANUP_URL="+vm.url+cleanupTemplate,
		"SLUICE_CLEANUP_METHOD=POST",
		"SLUICE_ACTION_TIMEOUT=10s",
		"SLUICE_ACTION_RETRIES=3",
	)
	load := func(job string, start time.Time) *Loader {
		return &Loader{
			URL: sl.proxyURL + "/api/v1/import", Job: job,
			Writers: 4, Batches: 5, BatchSize: 1000, Start: start,
			Client:     loaderClient(4),
			BackoffMin: 100 * time.Millisecond, BackoffMax: 2 * time.Second,
		}
	}
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)

	// The job that finishes: written, then declared complete.
	keep := load("e2e-keep", start)
	keepRes := runLoader(t, keep, time.Minute)
	sl.complete(t, keep.Job)
	if c := vm.stored(t, keep, keepRes); !c.Exact() {
		t.Fatalf("job %s before the outage: store holds %v", keep.Job, c)
	}

	// The doomed job writes its first part while the store accepts it.
	doomed := load("e2e-doomed", start)
	doomedRes := runLoader(t, doomed, time.Minute)
	if c := vm.stored(t, doomed, doomedRes); !c.Exact() {
		t.Fatalf("job %s before the outage: store holds %v", doomed.Job, c)
	}
	if v := sl.job(t, doomed.Job); v.State != "running" && v.State != "throttled" {
		t.Fatalf("job %s is %s before the outage, want running", doomed.Job, v.State)
	}

	// From now on every write is refused.
	gw.rejectAll(t)
	outage := time.Now()
	rest := load(doomed.Job, start.Add(time.Minute))
	restRes := runLoader(t, rest, 2*time.Minute)
	v := sl.waitJob(t, doomed.Job, time.Minute, "cancelled", "failed")
	took := time.Since(outage)

	var transitions []string
	for _, h := range v.History {
		transitions = append(transitions, h.From+"→"+h.To+" ("+h.Reason+")")
	}
	t.Logf("job %s: %s %v after the outage began; transitions %v; actions %+v", doomed.Job, v.State, took.Round(100*time.Millisecond), transitions, v.Attempts)
	t.Logf("the loader's writes after the outage: acked %d, dropped %d; answers %v", restRes.AckedSamples, restRes.DroppedSamples, restRes.Status)
	if v.State != "cancelled" {
		t.Fatalf("job %s ended %s (%s), want cancelled with its cleanup done", doomed.Job, v.State, v.Reason)
	}
	if !stateVisited(v, "stalled") {
		t.Errorf("job %s never went through stalled: %v", doomed.Job, transitions)
	}
	cleaned := false
	for _, a := range v.Attempts {
		if a.Action == "cleanup" && a.Result == "ok" && a.Status == http.StatusNoContent {
			cleaned = true
		}
	}
	if !cleaned {
		t.Errorf("job %s: no cleanup attempt answered 204 by VictoriaMetrics: %+v", doomed.Job, v.Attempts)
	}
	if restRes.AckedSamples != 0 {
		t.Errorf("%d samples acknowledged while nginx refused everything", restRes.AckedSamples)
	}
	for code, n := range restRes.Status {
		if code >= 400 && code < 500 && code != http.StatusTooManyRequests && code != http.StatusConflict {
			t.Errorf("the loader got %d answers %d: throttling must reach it as 429, and a cancelled job as 409", n, code)
		}
	}

	// The store holds nothing of the doomed job, and all of the other.
	vm.flush(t)
	if s := vm.export(t, doomed.Job, start); s.Samples() != 0 {
		t.Errorf("after cleanup the store still holds %d samples in %d series of job %s", s.Samples(), len(s.Series), doomed.Job)
	}
	if c := vm.stored(t, keep, keepRes); !c.Exact() {
		t.Errorf("job %s after the other's cleanup: store holds %v, want it intact", keep.Job, c)
	}
	t.Logf("RESULT cleanup job=%s state=%s seconds_after_outage=%.1f series_left=0 other_job_intact=%v",
		doomed.Job, v.State, took.Seconds(), !t.Failed())
}

func stateVisited(v jobView, state string) bool {
	for _, h := range v.History {
		if h.To == state {
			return true
		}
	}
	return false
}
