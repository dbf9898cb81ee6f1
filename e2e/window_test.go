//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// quotaWindow is how long the gateway refuses every write in
// TestQuotaWindow.
const quotaWindow = 20 * time.Second

// windowRun is one stream through sluice and nginx during which nginx
// refuses every write with 429 for quotaWindow.
type windowRun struct {
	res       Result
	samples   int64 // written
	check     Check
	throttled float64 // sluice's attempts that nginx answered 429
	expired   float64 // held writes whose hold ended first
}

func (r windowRun) String() string {
	return fmt.Sprintf("acked=%d dropped=%d stored=%d", r.res.AckedSamples, r.res.DroppedSamples, r.check.Stored)
}

// runWindow streams 600k samples through sluice (with extra) and nginx to
// VictoriaMetrics: 4 writers, each sending a batch of 1000 samples every
// 100ms for 15s, with a client that drops a batch answered 429. Once a
// fifth of it is stored, nginx is reloaded to answer every write 429 (with
// a Retry-After of retryAfter seconds, none if 0) for quotaWindow, then to
// pass writes on again.
func runWindow(t *testing.T, job string, retryAfter int, extra ...string) windowRun {
	t.Helper()
	vm := startVictoria(t)
	gw := startNginx(t, nginxConf{Upstream: vm.url[len("http://"):], RetryAfter: retryAfter})
	sl := startSluice(t, append([]string{
		"SLUICE_UPSTREAM_URL=" + gw.url,
		"SLUICE_PROFILE=victoriametrics",
		"SLUICE_RETRY_POST=true",
	}, extra...)...)
	l := quotaLoad(sl.proxyURL, job, 150)
	l.Writers, l.Interval, l.FinalOn429 = 4, 100*time.Millisecond, true
	l.Client = loaderClient(l.Writers)

	done := runLoadInBackground(l, 2*time.Minute)
	waitFor(t, sl.p, time.Minute, "a fifth of the samples inserted", func() error {
		if got := vm.imports(t).Rows; got < float64(l.Samples())/5 {
			return fmt.Errorf("%.0f of %d rows inserted", got, l.Samples())
		}
		return nil
	})
	gw.reconfigure(t, func(c *nginxConf) { c.RejectAll = true })
	from := time.Now()
	select {
	case d := <-done:
		t.Fatalf("the load ended (%v, acked %d) before the window: it proves nothing", d.err, d.res.AckedSamples)
	default:
	}
	time.Sleep(time.Until(from.Add(quotaWindow)))
	gw.reconfigure(t, func(c *nginxConf) { c.RejectAll = false })

	d := <-done
	if d.err != nil {
		t.Fatalf("loader: %v (acked %d of %d, answers %v, last error %q)", d.err, d.res.AckedSamples, l.Samples(), d.res.Status, d.res.LastError)
	}
	r := windowRun{res: d.res, samples: l.Samples(), check: vm.stored(t, l, d.res)}
	m := sl.adminURL + "/metrics"
	r.throttled = scrape(t, m, "sluice_upstream_attempts_total", `kind="throttled"`)
	r.expired = scrape(t, m, "sluice_proxy_backpressure_total", `reason="hold_expired"`)
	t.Logf("%s: window of %v with Retry-After %d: loader acked %d and dropped %d of %d samples in %v, answers %v (with Retry-After %v); nginx refused %.0f of sluice's attempts; %.0f holds expired; %v",
		job, quotaWindow, retryAfter, r.res.AckedSamples, r.res.DroppedSamples, l.Samples(), r.res.Elapsed.Round(time.Millisecond),
		r.res.Status, r.res.WithRetryAfter, r.throttled, r.expired, r.check)
	if !r.check.Exact() {
		t.Errorf("%s: store holds %v, want every acknowledged sample exactly once", job, r.check)
	}
	if r.throttled == 0 {
		t.Errorf("%s: nginx refused none of sluice's attempts: the window missed the load", job)
	}
	if n := r.res.Unexpected4xx(); n > 0 {
		t.Errorf("%s: the loader got %d answers with a 4xx other than 429: %v", job, n, r.res.Status)
	}
	return r
}

// TestQuotaWindow: the gateway in front of VictoriaMetrics refuses every
// write with 429 for quotaWindow in the middle of a stream, once with a
// Retry-After and once without, and the client treats a 429 as final (it
// drops the batch, as Prometheus' remote write does without
// retry_on_http_429). With SLUICE_HOLD_MAX=60s, longer than the window,
// sluice holds the writes through it: every write is acknowledged, none is
// dropped, and every sample is stored exactly once. Without hold the same
// stream loses what sluice's retries could not carry over the window: that
// loss is what hold mode is for.
//
// The four runs are independent (each its own store, gateway and sluice)
// and spend most of their time in the window, so they run side by side.
func TestQuotaWindow(t *testing.T) {
	requireTestbed(t, true, false)
	runs := map[string]*windowRun{}
	t.Run("group", func(t *testing.T) {
		f := func(name string, retryAfter int, hold bool) {
			r := &windowRun{}
			runs[name] = r
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var extra []string
				if hold {
					extra = append(extra, "SLUICE_HOLD_MAX=60s")
				}
				*r = runWindow(t, "e2e-window-"+name, retryAfter, extra...)
				if !hold {
					return
				}
				if r.res.DroppedSamples > 0 || r.res.Status[http.StatusTooManyRequests] > 0 || r.expired > 0 {
					t.Errorf("with hold the loader got %d answers 429 and dropped %d samples (%.0f holds expired): a window shorter than SLUICE_HOLD_MAX must cost nothing",
						r.res.Status[http.StatusTooManyRequests], r.res.DroppedSamples, r.expired)
				}
				if r.res.AckedSamples != r.samples || count2xx(r.res) != r.res.Attempts {
					t.Errorf("with hold the loader got %v in %d attempts for %d of %d samples, want every write acknowledged", r.res.Status, r.res.Attempts, r.res.AckedSamples, r.samples)
				}
			})
		}
		f("hold-retry-after", 2, true)
		f("hold-no-retry-after", 0, true)
		f("no-hold-retry-after", 2, false)
		f("no-hold-no-retry-after", 0, false)
	})
	if t.Failed() {
		return
	}
	// Without hold, what a window costs depends on how it falls: sluice's
	// queue (SLUICE_QUEUE_TIMEOUT, 30s) outlasts a 20s window, so most
	// writes wait it out there and only those whose retries ran out first
	// are lost; with a Retry-After of 2s that may be a single write. So the
	// loss is required of the two runs together.
	if a, b := runs["no-hold-retry-after"].res.DroppedSamples, runs["no-hold-no-retry-after"].res.DroppedSamples; a+b == 0 {
		t.Errorf("the windows lost nothing without hold: the comparison with hold shows nothing")
	}
	t.Logf("RESULT quota_window window_s=%.0f hold_retry_after: %v; hold_no_retry_after: %v; no_hold_retry_after: %v; no_hold_no_retry_after: %v",
		quotaWindow.Seconds(), runs["hold-retry-after"], runs["hold-no-retry-after"], runs["no-hold-retry-after"], runs["no-hold-no-retry-after"])
}
