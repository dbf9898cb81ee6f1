//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// tap is a recording pass-through between sluice and the store: for every
// request it notes when it arrived and was answered, a hash of its body
// (so that retries of one write can be told apart from other writes), the
// status and the Retry-After. It changes nothing on the way.
type tap struct {
	target string
	client *http.Client
	srv    *http.Server
	url    string

	mu    sync.Mutex
	calls []tapCall
}

type tapCall struct {
	start, end time.Time
	body       uint64
	status     int
	retryAfter string
}

func startTap(t *testing.T, target string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{
		target: target,
		url:    "http://" + ln.Addr().String(),
		client: &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}},
	}
	tp.srv = &http.Server{Handler: tp, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tp.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.srv.Shutdown(ctx)
		<-done
		tp.client.CloseIdleConnections()
	})
	return tp
}

func (tp *tap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "tap: reading body: "+err.Error(), http.StatusBadGateway)
		return
	}
	h := fnv.New64a()
	h.Write(body)
	out, err := http.NewRequestWithContext(r.Context(), r.Method, tp.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := tp.client.Do(out)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	end := time.Now()
	tp.mu.Lock()
	tp.calls = append(tp.calls, tapCall{start: start, end: end, body: h.Sum64(), status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")})
	tp.mu.Unlock()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}

// retryAfterViolations returns, for every answer with status 429 and a
// Retry-After of ra, the next attempt of the same body if it started
// sooner than ra after that answer; and how many such 429s there were.
func (tp *tap) retryAfterViolations(ra time.Duration) (violations []string, throttled int) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	last := map[uint64]tapCall{}
	for _, c := range tp.calls { // in order of answer; a body's attempts never overlap
		if prev, ok := last[c.body]; ok && prev.status == http.StatusTooManyRequests {
			if gap := c.start.Sub(prev.end); gap < ra {
				violations = append(violations, gap.String())
			}
		}
		if c.status == http.StatusTooManyRequests && c.retryAfter != "" {
			throttled++
		}
		last[c.body] = c
	}
	return violations, throttled
}

func (tp *tap) statuses() map[int]int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	out := map[int]int{}
	for _, c := range tp.calls {
		out[c.status]++
	}
	return out
}

// quota is the gateway quota of TestNginxQuota: requests per second, the
// burst nginx lets through at once, and the Retry-After of its 429s.
const (
	quotaRate       = 40
	quotaBurst      = 10
	quotaRetryAfter = 2
)

// quotaLoad is 8 writers sending batches of 1000 samples, batches
// requests each.
func quotaLoad(url, job string, batches int) *Loader {
	return &Loader{
		URL: url + "/api/v1/import", Job: job,
		Writers: 8, Batches: batches, BatchSize: 1000,
		Start:      time.Now().Add(-2 * time.Hour).Truncate(time.Second),
		Client:     loaderClient(8),
		BackoffMin: 100 * time.Millisecond, BackoffMax: 5 * time.Second,
	}
}

// TestNginxQuota: nginx in front of VictoriaMetrics
// allows quotaRate requests per second and answers the rest 429 with
// Retry-After: 2. Through sluice every acknowledged sample is stored
// exactly once, a write answered 429 is never sent again before its
// Retry-After has passed, and the goodput stays within 10% of the quota
// while every writer has batches to send (Result.AllBusy). Over the whole
// run it need not: sluice probes past the quota every few Retry-Afters,
// and each write a probe's 429 holds for 2 s leaves its writer behind the
// others, to send its last batches after they are done (a run of 12 s
// whose probe drew a 429 at 10.9 s took 13.5 s: 89% of the quota from
// end to end).
func TestNginxQuota(t *testing.T) {
	requireTestbed(t, true, false)
	conf := nginxConf{Quota: true, Rate: quotaRate, Burst: quotaBurst, RetryAfter: quotaRetryAfter}

	t.Run("direct", func(t *testing.T) {
		// For comparison only: the same loader against the quota alone,
		// honouring every Retry-After itself; 80 requests.
		vm := startVictoria(t)
		conf := conf
		conf.Upstream = vm.url[len("http://"):]
		gw := startNginx(t, conf)
		l := quotaLoad(gw.url, "e2e-quota-direct", 10)
		res := runLoader(t, l, 2*time.Minute)
		check := vm.stored(t, l, res)
		reqs := float64(res.AckedSamples/int64(l.BatchSize)) / res.Elapsed.Seconds()
		busy := res.BusyGoodput() / float64(l.BatchSize)
		t.Logf("quota direct: %d samples in %v: %.1f requests/s accepted against a quota of %d/s (%.0f%%), %.1f/s (%.0f%%) in the %v all writers were busy; loader saw %v (429 share %.3f); %v",
			res.AckedSamples, res.Elapsed.Round(time.Millisecond), reqs, quotaRate, 100*reqs/quotaRate,
			busy, 100*busy/quotaRate, res.AllBusy.Round(time.Millisecond), res.Status, res.Share(429), check)
		if !check.Exact() {
			t.Errorf("direct: store holds %v", check)
		}
	})

	t.Run("sluice", func(t *testing.T) {
		vm := startVictoria(t)
		conf := conf
		conf.Upstream = vm.url[len("http://"):]
		gw := startNginx(t, conf)
		tp := startTap(t, gw.url)
		sl := startSluice(t,
			"SLUICE_UPSTREAM_URL="+tp.url,
			"SLUICE_PROFILE=victoriametrics",
			"SLUICE_RETRY_POST=true",
		)
		l := quotaLoad(sl.proxyURL, "e2e-quota-sluice", 60) // 480 requests, 12 s at the quota
		res := runLoader(t, l, 2*time.Minute)
		check := vm.stored(t, l, res)
		reqs := float64(res.AckedSamples/int64(l.BatchSize)) / res.Elapsed.Seconds()
		busy := res.BusyGoodput() / float64(l.BatchSize)
		violations, throttled := tp.retryAfterViolations(quotaRetryAfter * time.Second)
		t.Logf("quota through sluice: %d samples in %v: %.1f requests/s accepted against a quota of %d/s (%.0f%%), %.1f/s (%.0f%%) in the %v all writers were busy; nginx answered %v; loader saw %v; %v",
			res.AckedSamples, res.Elapsed.Round(time.Millisecond), reqs, quotaRate, 100*reqs/quotaRate,
			busy, 100*busy/quotaRate, res.AllBusy.Round(time.Millisecond), tp.statuses(), res.Status, check)
		t.Logf("RESULT nginx_quota quota=%d goodput_rps=%.1f share_of_quota=%.3f busy_goodput_rps=%.1f busy_share_of_quota=%.3f throttled=%d",
			quotaRate, reqs, reqs/quotaRate, busy, busy/quotaRate, throttled)
		if !check.Exact() {
			t.Errorf("through sluice: store holds %v, want every acknowledged sample exactly once", check)
		}
		if n := res.Unexpected4xx(); n > 0 {
			t.Errorf("through sluice the loader got %d answers with a 4xx other than 429: %v", n, res.Status)
		}
		// No 429 with a Retry-After at all would leave nothing for the
		// check below to look at (sluice starts at 50 writes/s, above the
		// quota, and probes past it after).
		if throttled == 0 {
			t.Errorf("nginx answered sluice no 429 with a Retry-After (%v): the Retry-After was never put to the test", tp.statuses())
		}
		if len(violations) > 0 {
			t.Errorf("%d of %d writes answered 429 + Retry-After: %d were sent again sooner (after %v)", len(violations), throttled, quotaRetryAfter, violations)
		}
		if busy < 0.9*quotaRate || busy > 1.1*quotaRate {
			t.Errorf("goodput %.1f requests/s while all writers were busy, want within 10%% of the quota of %d/s", busy, quotaRate)
		}
	})
}
