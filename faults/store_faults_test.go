package faults

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sidecar/admin"
	"go.uber.org/goleak"
)

// Timings of the store-fault runs: short, so that a hang is over quickly,
// and every bound below follows from them.
const (
	faultTimeout      = 300 * time.Millisecond // SLUICE_UPSTREAM_TIMEOUT
	faultQueueTimeout = 500 * time.Millisecond // SLUICE_QUEUE_TIMEOUT
	faultRetryMax     = 2
	faultBackoffMax   = 50 * time.Millisecond
	faultMaxRA        = time.Second // SLUICE_MAX_RETRY_AFTER
)

// faultBound is the longest a loader request may take through sluice: the
// job's admission hold, then per attempt a queue wait and the attempt
// deadline, and between attempts a retry delay (a Retry-After at most
// SLUICE_MAX_RETRY_AFTER); plus a second of slack for a busy 2-core machine.
func faultBound() time.Duration {
	perAttempt := faultQueueTimeout + faultTimeout
	return faultQueueTimeout + (faultRetryMax+1)*perAttempt + faultRetryMax*max(faultBackoffMax, faultMaxRA) + time.Second
}

func faultEnv(upstream, profile string) []string {
	return []string{
		"SLUICE_UPSTREAM_URL=" + upstream,
		"SLUICE_PROFILE=" + profile,
		"SLUICE_UPSTREAM_TIMEOUT=" + faultTimeout.String(),
		"SLUICE_QUEUE_TIMEOUT=" + faultQueueTimeout.String(),
		"SLUICE_RETRY_MAX=2",
		"SLUICE_RETRY_BACKOFF_MIN=10ms",
		"SLUICE_RETRY_BACKOFF_MAX=" + faultBackoffMax.String(),
		"SLUICE_MAX_RETRY_AFTER=" + faultMaxRA.String(),
		"SLUICE_CONTROL_INTERVAL=100ms",
		"SLUICE_SHUTDOWN_TIMEOUT=2s",
	}
}

// storeFault is one row of TestStoreFaults.
type storeFault struct {
	name    string
	fault   Fault
	delay   time.Duration // Slow
	profile string
	method  string
	path    string
	// statuses the loader may get besides a clean 2xx of an acknowledged
	// write (each from sluice's own JSON errors or the store's answer).
	allowed []int
	// brokenOK: the store sent 2xx headers and then broke, so the loader
	// may see its response break too (never a clean 2xx with a cut body).
	brokenOK bool
	// wantBody is the body a clean 2xx must carry, byte for byte.
	wantBody string
	// react checks the limiter's reaction, from /v1/status before and
	// after and the /metrics exposition after.
	react func(t *testing.T, before, after admin.Status, metrics string)
	// warm: one write first, and "before" is read after it, so that the
	// limiter has seen the fault (a fresh limiter with no sample yet may
	// grow while writes queue, before the first attempt has failed).
	warm bool
}

const healthyBody = `{"ok":true,"padding":"0123456789abcdefghijklmnopqrstuvwxyz"}`

// TestStoreFaults drives writes through sluice to a store that misbehaves
// and checks, for each fault, what must hold:
//   - every loader request ends within faultBound with a truthful status:
//     a clean 2xx only for a write the store acknowledged, carrying the
//     store's body byte for byte; otherwise one of the listed statuses or,
//     only where the store itself broke a 2xx response, a broken response;
//   - the limiter reacts (cuts on congestion, does not grow on errors);
//   - no goroutine and no file descriptor is left behind.
func TestStoreFaults(t *testing.T) {
	// cutOn: the limiter cut on congestion named reason; lower: and it
	// ends lower than it began (not so when healthy spells let it regrow).
	cutOn := func(reason string, lower bool) func(*testing.T, admin.Status, admin.Status, string) {
		return func(t *testing.T, before, after admin.Status, _ string) {
			t.Helper()
			if after.Limiter.Decreases <= before.Limiter.Decreases {
				t.Errorf("limiter did not cut: decreases %d → %d", before.Limiter.Decreases, after.Limiter.Decreases)
			}
			if !strings.Contains(after.Limiter.LastReason, reason) {
				t.Errorf("last throttle reason %q, want it to name %q", after.Limiter.LastReason, reason)
			}
			if lower && after.Limiter.RateLimit >= before.Limiter.RateLimit {
				t.Errorf("rate limit %.1f → %.1f, want lower", before.Limiter.RateLimit, after.Limiter.RateLimit)
			}
		}
	}
	noGrowth := func(kind string) func(*testing.T, admin.Status, admin.Status, string) {
		return func(t *testing.T, before, after admin.Status, metrics string) {
			t.Helper()
			if after.Limiter.Increases != before.Limiter.Increases || after.Limiter.RateLimit > before.Limiter.RateLimit {
				t.Errorf("limiter grew on errors: increases %d → %d, rate %.1f → %.1f",
					before.Limiter.Increases, after.Limiter.Increases, before.Limiter.RateLimit, after.Limiter.RateLimit)
			}
			if n := metricValue(metrics, "sluice_upstream_attempts_total", `kind="`+kind+`"`); n == 0 {
				t.Errorf("no attempt counted as %s", kind)
			}
		}
	}
	counted := func(kind string) func(*testing.T, admin.Status, admin.Status, string) {
		return func(t *testing.T, _, _ admin.Status, metrics string) {
			t.Helper()
			if n := metricValue(metrics, "sluice_upstream_attempts_total", `kind="`+kind+`"`); n == 0 {
				t.Errorf("no attempt counted as %s", kind)
			}
		}
	}
	for _, tc := range []storeFault{
		{name: "healthy", fault: Healthy, wantBody: healthyBody, react: counted("ok")},
		{name: "refused", allowed: []int{429}, react: noGrowth("unreachable"), warm: true},
		{name: "reset mid-request", fault: ResetMidRequest, allowed: []int{429}, react: noGrowth("unreachable"), warm: true},
		{name: "reset mid-response", fault: ResetMidResponse, allowed: []int{429}, brokenOK: true, react: counted("ok")},
		{name: "response stops half way", fault: StopMidResponse, allowed: []int{429}, brokenOK: true, react: counted("ok")},
		{name: "slow within the deadline", fault: Slow, delay: faultTimeout / 2, allowed: []int{429}, wantBody: healthyBody, react: counted("ok")},
		{name: "slow past the deadline", fault: Slow, delay: 3 * faultTimeout, allowed: []int{504, 429}, react: cutOn("timeout", true)},
		{name: "hang", fault: Hang, allowed: []int{504, 429}, react: cutOn("timeout", true)},
		{name: "throttling", fault: Throttle, allowed: []int{429}, react: cutOn("429", true)},
		{name: "flapping healthy and throttling", fault: Flapping, allowed: []int{429}, wantBody: healthyBody, react: cutOn("429", false)},
		{name: "Content-Length longer than the body", fault: ShortContentLength, allowed: []int{429}, brokenOK: true, react: counted("ok")},
		{name: "Content-Length shorter than the body", fault: LongContentLength, allowed: []int{502, 429}, wantBody: healthyBody[:len(healthyBody)/2], react: counted("ok")},
		{name: "elasticsearch 200 with a garbage body", fault: GarbageBody, profile: "elasticsearch", method: "POST", path: "/_bulk",
			wantBody: "\x00\xff<html>{\"items\":[{\"index\":{\"status\":201 not json at all]]]\n",
			react: func(t *testing.T, _, _ admin.Status, metrics string) {
				if n := metricValue(metrics, "sluice_upstream_acknowledged_items_total"); n != 0 {
					t.Errorf("%v bulk items counted as acknowledged from a garbage body", n)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) { runStoreFault(t, tc) })
	}
}

func runStoreFault(t *testing.T, tc storeFault) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fds := countFDs(t)

	var upstream string
	var store *Store
	if tc.name == "refused" {
		addr, err := ClosedPort()
		if err != nil {
			t.Fatal(err)
		}
		upstream = "http://" + addr
	} else {
		var err error
		if store, err = NewStore(tc.fault); err != nil {
			t.Fatal(err)
		}
		store.SetDelay(tc.delay)
		store.SetFlapEvery(150 * time.Millisecond)
		upstream = store.URL()
	}
	if tc.profile == "" {
		tc.profile = "generic"
	}
	if tc.method == "" {
		tc.method, tc.path = "PUT", "/put"
	}
	sl := startInproc(t, faultEnv(upstream, tc.profile)...)
	bound := faultBound()
	l := newLoader(sl.proxyURL, "w", bound+5*time.Second)
	var outs []outcome
	if tc.warm {
		outs = append(outs, l.write(tc.method, tc.path, "faulty", []byte("warm")))
	}
	before := status(t, sl.adminURL)
	outs = append(outs, l.run(6, 4, tc.method, tc.path, "faulty", bytes.Repeat([]byte("x"), 100))...)
	l.close()

	after := status(t, sl.adminURL)
	metrics := metricsText(t, sl.adminURL)
	allowed := map[int]bool{}
	for _, s := range tc.allowed {
		allowed[s] = true
	}
	var clean, broken, refused int
	for _, o := range outs {
		switch {
		case o.duration > bound:
			t.Errorf("%v: longer than the bound %v", o, bound)
		case o.clean2xx():
			clean++
			if store == nil || store.Acked(o.id) == 0 {
				t.Errorf("%v: a 2xx for a write the store never acknowledged", o)
			}
			if tc.wantBody != "" && string(o.body) != tc.wantBody {
				t.Errorf("%v: body %q, want the store's %q", o, o.body, tc.wantBody)
			}
			if tc.wantBody == "" {
				t.Errorf("%v: a clean 2xx where none is possible (body %q)", o, o.body)
			}
		case o.err != nil:
			broken++
			if !tc.brokenOK {
				t.Errorf("%v: broken response, though the store never sent a 2xx that broke", o)
			}
		case allowed[o.status]:
			refused++
			if o.status >= 500 && o.code == "" {
				t.Errorf("%v: a 5xx without sluice's JSON error body: %q", o, o.body)
			}
		default:
			t.Errorf("%v: status not allowed for this fault (allowed: 2xx of an acknowledged write, %v); body %q", o, tc.allowed, o.body)
		}
	}
	t.Logf("%d writes: %d clean 2xx, %d broken, %d refused (%v); limiter rate %.1f → %.1f, concurrency %d → %d, decreases %d → %d",
		len(outs), clean, broken, refused, tc.allowed, before.Limiter.RateLimit, after.Limiter.RateLimit,
		before.Limiter.Concurrency, after.Limiter.Concurrency, before.Limiter.Decreases, after.Limiter.Decreases)
	if tc.react != nil {
		tc.react(t, before, after, metrics)
		if t.Failed() {
			for _, l := range strings.Split(sl.logs.String(), "\n") {
				if strings.Contains(l, `"limiter"`) {
					t.Log(l)
				}
			}
		}
	}
	if strings.Contains(sl.logs.String(), `"level":"ERROR"`) && tc.fault == Healthy {
		t.Errorf("errors logged against a healthy store:\n%s", sl.logs.String())
	}

	sl.stop()
	if store != nil {
		store.Close()
	}
	if !eventually(5*time.Second, func() bool { return countFDs(t) <= fds }) {
		t.Errorf("file descriptors: %d before, %d after", fds, countFDs(t))
	}
}
