package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/sidecar/proxy"

	"github.com/sluice-dev/sluice/state"
)

// adminCall sends one admin API request from addr (loopback if empty) and
// returns the answer.
func adminCall(h http.Handler, method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "RemoteAddr" {
			req.RemoteAddr = header[i+1]
			continue
		}
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// pegasusStore throttles every write under /a/ once throttleA is set, for
// ever (a bulk load stuck under throttling), accepts writes under /b/, and records the cancel and
// cleanup calls.
type pegasusStore struct {
	throttleA atomic.Bool
	mu        sync.Mutex
	calls     []string
}

func (s *pegasusStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	switch {
	case strings.HasPrefix(r.URL.Path, "/admin/"):
		s.mu.Lock()
		s.calls = append(s.calls, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(r.URL.Path, "/a/") && s.throttleA.Load():
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	default:
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	}
}

func (s *pegasusStore) adminCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// TestThrottledForever runs a bulk load stuck under throttling through
// the whole sidecar: a store that starts throttling every write of one job forever.
// The job goes running → throttled → backoff → stalled → cancelling →
// cleaning → cancelled by itself; the store receives the cancel and the
// cleanup calls; later writes for the job get 409; another job on the same
// sidecar keeps working throughout.
func TestThrottledForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &pegasusStore{}
		s := newTestServer(t, store,
			"STALL_AFTER=2m", "CANCEL_GRACE=1m", "MAX_RETRY_AFTER=5s", "RETRY_MAX=1",
			"CANCEL_URL=http://store.test/admin/cancel/${JOB}", "CANCEL_METHOD=POST",
			"CLEANUP_URL=http://store.test/admin/clear/${JOB}", "CLEANUP_METHOD=DELETE")
		h := s.ProxyHandler()
		ctx, stop := context.WithCancel(context.Background())
		var bOK, bBad atomic.Int64
		var loaders sync.WaitGroup
		writer := func(job, path string, ok, bad *atomic.Int64) {
			for ctx.Err() == nil {
				rec := send(h, context.Background(), http.MethodPut, path, "row", proxy.HeaderJob, job)
				switch {
				case rec.Code == http.StatusOK:
					if ok != nil {
						ok.Add(1)
					}
				case rec.Code == http.StatusConflict && job == "bulk-a":
					return // cancelled: the loader gives up
				default:
					if bad != nil {
						bad.Add(1)
					}
					time.Sleep(time.Second)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		for range 4 {
			loaders.Go(func() { writer("bulk-a", "/a/put", nil, nil) })
			loaders.Go(func() { writer("bulk-b", "/b/put", &bOK, &bBad) })
		}
		time.Sleep(30 * time.Second)
		store.throttleA.Store(true)

		deadline := time.Now().Add(30 * time.Minute)
		for time.Now().Before(deadline) {
			if j, err := s.jobs.Get("bulk-a"); err == nil && j.State.Terminal() {
				break
			}
			time.Sleep(time.Second)
		}
		j, err := s.jobs.Get("bulk-a")
		if err != nil {
			t.Fatal(err)
		}
		if j.State != state.Cancelled {
			t.Fatalf("bulk-a ended %s (%s), want cancelled; history %+v", j.State, j.Reason, j.History)
		}
		var path []string
		for _, tr := range j.History {
			if len(path) == 0 || path[len(path)-1] != tr.To.String() {
				path = append(path, tr.To.String())
			}
		}
		want := []string{"running", "throttled", "backoff", "stalled", "cancelling", "cleaning", "cancelled"}
		if !isSubsequence(want, path) {
			t.Errorf("bulk-a went %v, want %v in that order", path, want)
		}
		calls := store.adminCalls()
		if len(calls) != 2 || calls[0] != "POST /admin/cancel/bulk-a" || calls[1] != "DELETE /admin/clear/bulk-a" {
			t.Errorf("store admin calls = %v, want the cancel then the cleanup", calls)
		}
		rec := send(h, context.Background(), http.MethodPut, "/a/put", "row", proxy.HeaderJob, "bulk-a")
		var e apierror.Body
		if rec.Code != http.StatusConflict || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Details["job"] != "bulk-a" || e.Details["state"] != "cancelled" {
			t.Errorf("a later write for bulk-a got %d %s, want 409 naming the job and its state", rec.Code, rec.Body)
		}
		okBefore := bOK.Load()
		time.Sleep(10 * time.Second)
		stop()
		loaders.Wait()
		if bOK.Load() <= okBefore || bBad.Load() != 0 {
			t.Errorf("bulk-b: %d ok (%d in the last 10s), %d failed; want it unaffected", bOK.Load(), bOK.Load()-okBefore, bBad.Load())
		}
		if jb, _ := s.jobs.Get("bulk-b"); jb.State.Terminal() || jb.State == state.Stalled {
			t.Errorf("bulk-b is %s, want it still running", jb.State)
		}
	})
}

func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestSlowStoreNeverStalls: a store that takes a few writes per second, over
// many stall windows, never stalls the job.
func TestSlowStoreNeverStalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(400 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		})
		s := newTestServer(t, slow, "STALL_AFTER=10s", "CANCEL_GRACE=5s", "MAX_CONCURRENCY=1", "INITIAL_CONCURRENCY=1")
		end := time.Now().Add(10 * time.Minute)
		for time.Now().Before(end) {
			if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", "x", proxy.HeaderJob, "slow"); rec.Code != http.StatusOK {
				t.Fatalf("write got %d", rec.Code)
			}
		}
		j, _ := s.jobs.Get("slow")
		for _, tr := range j.History {
			if tr.To == state.Stalled || tr.To.Terminal() {
				t.Fatalf("a slow but progressing job went %s: %+v", tr.To, j.History)
			}
		}
	})
}

// TestJobsAPI walks the admin API: register, progress with checkpoints,
// get, list, cancel, complete, and every error as JSON with its 4xx.
func TestJobsAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &pegasusStore{}
		s := newTestServer(t, store)
		h := s.AdminHandler()
		f := func(method, path, body string, want int, header ...string) map[string]any {
			t.Helper()
			rec := adminCall(h, method, path, body, header...)
			if rec.Code != want {
				t.Fatalf("%s %s: %d %s, want %d", method, path, rec.Code, rec.Body, want)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s %s: Content-Type %q, want JSON", method, path, ct)
			}
			var v map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatalf("%s %s: body is not JSON: %s", method, path, rec.Body)
			}
			return v
		}
		f("POST", "/v1/jobs", `{"id":"load-1","stall_after":"10m","labels":{"table":"t1"},
			"cancel":{"url":"http://store.test/admin/cancel/${JOB}"},"cleanup":{"command":["true","${JOB}"]}}`, http.StatusCreated)
		v := f("GET", "/v1/jobs/load-1", "", http.StatusOK)
		if v["state"] != "pending" {
			t.Errorf("registered job state %v, want pending", v["state"])
		}
		for i := 1; i <= 7; i++ {
			f("POST", "/v1/jobs/load-1/progress", `{"records":100,"bytes":4096,"checkpoint":{"offset":`+strconv.Itoa(i)+`}}`, http.StatusOK)
		}
		v = f("GET", "/v1/jobs/load-1", "", http.StatusOK)
		if cp, _ := json.Marshal(v["checkpoint"]); !strings.Contains(string(cp), `"offset":7`) {
			t.Errorf("latest checkpoint = %s, want offset 7", cp)
		}
		if cps, _ := v["checkpoints"].([]any); len(cps) != 5 {
			t.Errorf("%d checkpoints retained, want SLUICE_CHECKPOINTS_RETAINED=5", len(cps))
		}
		list := f("GET", "/v1/jobs", "", http.StatusOK)
		if jobs, _ := list["jobs"].([]any); len(jobs) != 1 {
			t.Errorf("list = %v", list)
		}
		f("POST", "/v1/jobs/load-1/complete", "", http.StatusOK)
		f("POST", "/v1/jobs/load-1/cancel", `{}`, http.StatusConflict) // completed jobs cannot be cancelled

		// Errors.
		f("GET", "/v1/jobs/nope", "", http.StatusNotFound)
		f("POST", "/v1/jobs/nope/cancel", "", http.StatusNotFound)
		f("POST", "/v1/jobs", `{"id":`, http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"x","surprise":1}`, http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"x"} {"id":"y"}`, http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"bad id"}`, http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"x","stall_after":"soon"}`, http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"x","cancel":{"url":"ftp://x"}}`, http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"x","cancel":{"url":"http://x/${JOB}","command":["rm"]}}`, http.StatusBadRequest)
		f("POST", "/v1/jobs", "", http.StatusBadRequest)
		f("POST", "/v1/jobs", `{"id":"x","labels":{"a":"`+strings.Repeat("b", 2<<20)+`"}}`, http.StatusRequestEntityTooLarge)
		// A small object followed by more than the limit is too large
		// too, not malformed: the loader's tool should send less, not fix
		// its JSON.
		f("POST", "/v1/jobs", `{"id":"x"} `+strings.Repeat(" ", 2<<20)+`{}`, http.StatusRequestEntityTooLarge)
		f("POST", "/v1/jobs/load-2/progress", `{"records":-1}`, http.StatusBadRequest)
		f("GET", "/v1/nothing", "", http.StatusNotFound)
		f("DELETE", "/v1/jobs", "", http.StatusMethodNotAllowed)
		f("GET", "/v1/jobs/load-1/cancel", "", http.StatusMethodNotAllowed)
		f("POST", "/v1/jobs", `{"id":"x"}`, http.StatusForbidden, "RemoteAddr", "10.0.0.8:5000")
		f("POST", "/quitquitquit", "", http.StatusForbidden, "RemoteAddr", "10.0.0.8:5000")
	})
}

// TestAdminToken: with SLUICE_ADMIN_TOKEN set, mutating endpoints need the
// bearer token from any address; reads stay open.
func TestAdminToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, &pegasusStore{}, "ADMIN_TOKEN=tok-123-4f9c2e7a1b8d")
		h := s.AdminHandler()
		for _, tc := range []struct {
			header []string
			want   int
		}{
			{nil, http.StatusUnauthorized},
			{[]string{"Authorization", "Bearer wrong"}, http.StatusUnauthorized},
			{[]string{"Authorization", "tok-123-4f9c2e7a1b8d"}, http.StatusUnauthorized},
			{[]string{"Authorization", "Bearer tok-123-4f9c2e7a1b8d"}, http.StatusCreated},
			{[]string{"Authorization", "bearer tok-123-4f9c2e7a1b8d"}, http.StatusCreated}, // the scheme is case-insensitive
			{[]string{"Authorization", "Basic tok-123-4f9c2e7a1b8d"}, http.StatusUnauthorized},
			{[]string{"Authorization", "Bearer tok-123-4f9c2e7a1b8d", "RemoteAddr", "10.0.0.8:5000"}, http.StatusCreated},
		} {
			rec := adminCall(h, "POST", "/v1/jobs", `{"id":"j`+strconv.Itoa(tc.want)+strconv.Itoa(len(tc.header))+`"}`, tc.header...)
			if rec.Code != tc.want {
				t.Errorf("header %v: %d %s, want %d", tc.header, rec.Code, rec.Body, tc.want)
			}
		}
		if rec := adminCall(h, "GET", "/v1/jobs", ""); rec.Code != http.StatusOK {
			t.Errorf("GET /v1/jobs without token: %d", rec.Code)
		}
	})
}

// TestAdminBadRequestChangesNothing: a request the jobs API refuses with
// a 400 has no effect: a registration whose total is unusable registers
// nothing, and a cancel whose ?force is not a boolean cancels nothing (a
// ?force=1 read as false would skip the cleanup the operator asked for).
func TestAdminBadRequestChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, &pegasusStore{})
		h := s.AdminHandler()
		rec := adminCall(h, "POST", "/v1/jobs", `{"id":"bad-total","total":{"records":-5}}`)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("registration with total -5: %d %s, want 400", rec.Code, rec.Body)
		}
		if rec := adminCall(h, "GET", "/v1/jobs/bad-total", ""); rec.Code != http.StatusNotFound {
			t.Errorf("the refused registration left a job: %d %s", rec.Code, rec.Body)
		}
		if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"load-1"}`); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		for _, q := range []string{"1x", "yes", ""} {
			rec := adminCall(h, "POST", "/v1/jobs/load-1/cancel?force="+q, "")
			if rec.Code != http.StatusBadRequest {
				t.Errorf("cancel ?force=%s: %d %s, want 400", q, rec.Code, rec.Body)
			}
		}
		var v struct{ State string }
		if rec := adminCall(h, "GET", "/v1/jobs/load-1", ""); json.Unmarshal(rec.Body.Bytes(), &v) != nil || v.State != "pending" {
			t.Errorf("after refused cancels: %s, want the job untouched (pending)", rec.Body)
		}
		rec = adminCall(h, "POST", "/v1/jobs/load-1/cancel?force=1", "")
		var c struct{ Force bool }
		if rec.Code != http.StatusAccepted || json.Unmarshal(rec.Body.Bytes(), &c) != nil || !c.Force {
			t.Errorf("cancel ?force=1: %d %s, want 202, forced", rec.Code, rec.Body)
		}
	})
}

// TestAdminRefusesCrossSite: without a token a loopback caller may change
// things, and a browser on the operator's machine is one; a request another
// site's page makes it send (a form posted to 127.0.0.1:9090) is refused,
// while the status page's own same-origin requests and plain clients pass.
func TestAdminRefusesCrossSite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, &pegasusStore{})
		h := s.AdminHandler()
		f := func(name, path string, want int, header ...string) {
			t.Helper()
			rec := adminCall(h, "POST", path, `{"id":"`+name+`"}`, header...)
			if rec.Code != want {
				t.Errorf("%s: %d %s, want %d", name, rec.Code, rec.Body, want)
			}
			if want == http.StatusForbidden && !strings.Contains(rec.Body.String(), `"cross_origin"`) {
				t.Errorf("%s: body %s, want code cross_origin", name, rec.Body)
			}
		}
		// httptest's requests are for Host example.com.
		f("evil-origin", "/v1/jobs", http.StatusForbidden, "Origin", "http://evil.example")
		f("evil-port", "/v1/jobs", http.StatusForbidden, "Origin", "http://example.com:8081")
		f("fetch-cross", "/v1/jobs", http.StatusForbidden, "Sec-Fetch-Site", "cross-site")
		f("fetch-same-site", "/v1/jobs", http.StatusForbidden, "Sec-Fetch-Site", "same-site", "Origin", "http://example.com")
		f("null-origin", "/v1/jobs", http.StatusForbidden, "Origin", "null")
		f("page", "/v1/jobs", http.StatusCreated, "Host", "127.0.0.1:9090", "Origin", "http://127.0.0.1:9090", "Sec-Fetch-Site", "same-origin")
		f("page-localhost", "/v1/jobs", http.StatusCreated, "Host", "localhost:9090", "Origin", "http://localhost:9090", "Sec-Fetch-Site", "same-origin")
		f("curl", "/v1/jobs", http.StatusCreated)
		f("quit", "/quitquitquit", http.StatusForbidden, "Origin", "http://evil.example")
		if s.life.Get() == admin.Stopping {
			t.Error("a cross-site /quitquitquit stopped the sidecar")
		}
		if rec := adminCall(h, "GET", "/v1/jobs/evil-origin", ""); rec.Code != http.StatusNotFound {
			t.Errorf("refused registration exists: %d %s", rec.Code, rec.Body)
		}
	})
}

// TestAdminRefusesRebinding: a page from a name the attacker's DNS points
// at 127.0.0.1 (DNS rebinding) is same-origin with itself, so neither
// Origin nor Sec-Fetch-Site tells it from the status page; its requests
// come from loopback all the same. Without a token, what a browser sends
// to loopback is trusted only for a name that cannot be rebound: an IP
// address or localhost.
func TestAdminRefusesRebinding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, &pegasusStore{})
		h := s.AdminHandler()
		rebound := []string{"Host", "evil.example:9090", "Origin", "http://evil.example:9090", "Sec-Fetch-Site", "same-origin"}
		if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"rebound"}`, rebound...); rec.Code != http.StatusForbidden {
			t.Errorf("register from a rebound name: %d %s, want 403", rec.Code, rec.Body)
		}
		if rec := adminCall(h, "GET", "/v1/jobs/rebound", ""); rec.Code != http.StatusNotFound {
			t.Errorf("the refused registration exists: %d %s", rec.Code, rec.Body)
		}
		if rec := adminCall(h, "POST", "/quitquitquit", "", rebound...); rec.Code != http.StatusForbidden {
			t.Errorf("quitquitquit from a rebound name: %d %s, want 403", rec.Code, rec.Body)
		}
		if s.life.Get() == admin.Stopping {
			t.Error("a rebound page's /quitquitquit stopped the sidecar")
		}
		var info admin.PageInfo
		if rec := adminCall(h, "GET", "/ui/page.json", "", rebound...); json.Unmarshal(rec.Body.Bytes(), &info) != nil || info.Loopback {
			t.Errorf("page.json for a rebound name: %s, want loopback false (its actions are refused)", rec.Body)
		}
		for _, host := range []string{"127.0.0.1:9090", "[::1]:9090", "localhost:9090"} {
			rec := adminCall(h, "POST", "/v1/jobs", `{"id":"page"}`, "Host", host, "Origin", "http://"+host, "Sec-Fetch-Site", "same-origin")
			if rec.Code != http.StatusCreated && rec.Code != http.StatusOK {
				t.Errorf("the page at %s: %d %s, want it accepted", host, rec.Code, rec.Body)
			}
		}
	})
}

// TestStatusAndHealth: /v1/status reports the limiter and the signals;
// /healthz follows the control loop's heartbeat, never the store.
func TestStatusAndHealth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hung := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		s := newTestServer(t, hung, "UPSTREAM_TIMEOUT=1s", "RETRY_MAX=0")
		send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", "x")
		h := s.AdminHandler()
		if rec := adminCall(h, "GET", "/healthz", ""); rec.Code != http.StatusOK {
			t.Errorf("healthz with a hung store = %d, want 200 (liveness never depends on the store)", rec.Code)
		}
		rec := adminCall(h, "GET", "/v1/status", "")
		var st admin.Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
		if st.Profile != "generic" || st.Limiter.RateLimit <= 0 || st.Limiter.Concurrency < 1 || st.Limiter.LastReason != "timeout" {
			t.Errorf("status = %+v", st)
		}
		if kinds, _ := st.Signals["attempts_by_kind"].(map[string]any); kinds["timeout"] != 1.0 {
			t.Errorf("signals = %v, want one timeout", st.Signals)
		}
		if st.Jobs["running"]+st.Jobs["throttled"]+st.Jobs["backoff"] != 1 {
			t.Errorf("jobs = %v", st.Jobs)
		}
		if age := time.Since(st.JobsHeartbeat); st.JobsHeartbeat.IsZero() || age > time.Second {
			t.Errorf("jobs_heartbeat %v (%v old), want the job loop's last round", st.JobsHeartbeat, age)
		}
	})
}

// TestReadiness: NotReady → Ready → Stopping, and /quitquitquit from
// loopback starts the shutdown.
func TestReadiness(t *testing.T) {
	s := newTestServer(t, &pegasusStore{})
	h := s.AdminHandler()
	if rec := adminCall(h, "GET", "/readyz", ""); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Serve: %d, want 503", rec.Code)
	}
	s.life.Set(admin.Ready)
	if rec := adminCall(h, "GET", "/readyz", ""); rec.Code != http.StatusOK {
		t.Errorf("ready: %d", rec.Code)
	}
	if rec := adminCall(h, "POST", "/quitquitquit", ""); rec.Code != http.StatusAccepted {
		t.Errorf("quitquitquit: %d", rec.Code)
	}
	s.life.Set(admin.Ready)
	if rec := adminCall(h, "GET", "/readyz", ""); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "stopping") {
		t.Errorf("after quitquitquit: %d %s, want 503 stopping for good", rec.Code, rec.Body)
	}
	select {
	case <-s.stopCh:
	default:
		t.Error("quitquitquit did not request the stop")
	}
}

// TestCancelAbortsInFlight: cancelling a job aborts its write in flight (the
// loader gets 409 naming the job) and leaves another job's write alone.
func TestCancelAbortsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aborted := make(chan string, 2)
		release := make(chan struct{})
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/admin/") {
				return
			}
			select {
			case <-r.Context().Done():
				aborted <- r.URL.Path
			case <-release:
				w.WriteHeader(http.StatusCreated)
			}
		})
		s := newTestServer(t, store, "UPSTREAM_TIMEOUT=10m")
		codes := make(chan [2]string, 2)
		for _, job := range []string{"victim", "bystander"} {
			go func() {
				rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/"+job, "x", proxy.HeaderJob, job)
				codes <- [2]string{job, strconv.Itoa(rec.Code) + " " + rec.Body.String()}
			}()
		}
		synctest.Wait()
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs/victim/cancel", `{"reason":"operator"}`); rec.Code != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
		}
		if p := <-aborted; p != "/victim" {
			t.Errorf("aborted %s, want the victim's write", p)
		}
		got := <-codes
		if got[0] != "victim" || !strings.HasPrefix(got[1], "409 ") || !strings.Contains(got[1], `"job":"victim"`) {
			t.Errorf("victim's loader got %v, want 409 naming the job", got)
		}
		close(release)
		if got := <-codes; got[0] != "bystander" || !strings.HasPrefix(got[1], "201") {
			t.Errorf("bystander got %v, want the store's 201", got)
		}
	})
}

// TestReadsAreNotProgress: a loader polling the store through sluice (GET,
// HEAD) while every write is throttled does not keep its job from stalling.
func TestReadsAreNotProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &pegasusStore{}
		store.throttleA.Store(true)
		s := newTestServer(t, store, "STALL_AFTER=1m", "CANCEL_GRACE=10m")
		end := time.Now().Add(2 * time.Minute)
		for time.Now().Before(end) {
			send(s.ProxyHandler(), context.Background(), http.MethodGet, "/b/_cluster/health", "", proxy.HeaderJob, "poller")
			send(s.ProxyHandler(), context.Background(), http.MethodPut, "/a/doc", "x", proxy.HeaderJob, "poller")
			time.Sleep(5 * time.Second)
		}
		j, err := s.jobs.Get("poller")
		if err != nil {
			t.Fatal(err)
		}
		if j.State != state.Stalled || j.Totals.Requests != 0 {
			t.Errorf("job %s with %d requests of progress, want stalled with none", j.State, j.Totals.Requests)
		}
	})
}

// brokenStore is a job state store whose writes fail while broken is set,
// like a full or read-only state dir, and, while hung is set, wait until
// it is closed, like a detached network volume.
type brokenStore struct {
	state.MemStore
	broken atomic.Bool
	hung   atomic.Pointer[chan struct{}]
	closed atomic.Bool // the job manager's flush ended with closing the store
}

func (s *brokenStore) Close() error {
	s.closed.Store(true)
	return s.MemStore.Close()
}

func (s *brokenStore) Delete(ids ...string) error {
	if s.broken.Load() {
		return errors.New("delete from sluice.db: read-only file system")
	}
	return s.MemStore.Delete(ids...)
}

// hang makes every Put wait, as on a state volume whose writes hang, until
// the func it returns is called: the store answers again. The test's
// cleanup calls it too, before the cleanups registered earlier (stopping
// the loops waits for their round), so that no goroutine is left waiting.
func (s *brokenStore) hang(t *testing.T) (answer func()) {
	gate := make(chan struct{})
	answer = sync.OnceFunc(func() {
		s.hung.Store(nil)
		close(gate)
	})
	s.hung.Store(&gate)
	t.Cleanup(answer)
	return answer
}

func (s *brokenStore) Put(recs ...state.Record) error {
	if c := s.hung.Load(); c != nil {
		<-*c
	}
	if s.broken.Load() {
		return errors.New("write sluice.db: no space left on device")
	}
	return s.MemStore.Put(recs...)
}

// brokenStoreServer is buildServer with a brokenStore for job state and a
// pegasusStore upstream.
func brokenStoreServer(t *testing.T) (*Server, *pegasusStore, *brokenStore) {
	t.Helper()
	upstream, st := &pegasusStore{}, &brokenStore{}
	return buildServer(t, upstream, st), upstream, st
}

// TestCancelNotRecorded: a cancel that cannot be recorded is answered 503
// cancel_not_recorded with Retry-After, and not done: the job goes on and
// no action runs. Retried once the state dir is usable, it is accepted.
func TestCancelNotRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, upstream, st := brokenStoreServer(t)
		t.Cleanup(s.StartLoops())
		h := s.AdminHandler()
		if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"load-1","cancel":{"url":"http://store.test/admin/cancel/${JOB}"}}`); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		st.broken.Store(true)
		rec := adminCall(h, "POST", "/v1/jobs/load-1/cancel", `{}`)
		var body apierror.Body
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusServiceUnavailable || body.Error != "cancel_not_recorded" ||
			!strings.Contains(body.Message, "retry") || rec.Header().Get("Retry-After") != "5" {
			t.Fatalf("cancel with the state dir full: %d %s (Retry-After %q), want 503 cancel_not_recorded, retry",
				rec.Code, rec.Body, rec.Header().Get("Retry-After"))
		}
		synctest.Wait()
		if j, _ := s.jobs.Get("load-1"); j.State != state.Pending || len(upstream.adminCalls()) != 0 {
			t.Fatalf("after a cancel not recorded: %s, store calls %q; want pending, none", j.State, upstream.adminCalls())
		}

		st.broken.Store(false)
		if rec := adminCall(h, "POST", "/v1/jobs/load-1/cancel", `{}`); rec.Code != http.StatusAccepted {
			t.Fatalf("cancel retried: %d %s", rec.Code, rec.Body)
		}
		synctest.Wait()
		if j, _ := s.jobs.Get("load-1"); j.State != state.Cancelled || len(upstream.adminCalls()) != 1 {
			t.Errorf("after the retried cancel: %s, store calls %q", j.State, upstream.adminCalls())
		}
	})
}

// TestCancelWhileTheStateStoreHangs: with a state volume whose writes
// hang, a cancel is answered within seconds, 503 state_store_slow with
// Retry-After, not held for as long as the volume hangs: the first one,
// whose record is being written, says that what comes of it is decided
// when the store answers; the next, which cannot get at the store, that it
// was not done. The first takes effect once the store records it.
func TestCancelWhileTheStateStoreHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, upstream, st := brokenStoreServer(t)
		t.Cleanup(s.StartLoops())
		h := s.AdminHandler()
		if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"load-1","cancel":{"url":"http://store.test/admin/cancel/${JOB}"}}`); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		answer := st.hang(t)
		for i, want := range []string{"decided when the state store answers", "cancel not done"} {
			start := time.Now()
			rec := adminCall(h, "POST", "/v1/jobs/load-1/cancel", `{}`)
			var body apierror.Body
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if took := time.Since(start); took != 5*time.Second {
				t.Errorf("cancel %d answered after %v with the state store hanging, want 5s", i+1, took)
			}
			if rec.Code != http.StatusServiceUnavailable || body.Error != "state_store_slow" ||
				!strings.Contains(body.Message, want) || rec.Header().Get("Retry-After") != "5" {
				t.Errorf("cancel %d with the state store hanging: %d %s (Retry-After %q), want 503 state_store_slow, %q",
					i+1, rec.Code, rec.Body, rec.Header().Get("Retry-After"), want)
			}
		}
		if j, _ := s.jobs.Get("load-1"); j.State != state.Pending || len(upstream.adminCalls()) != 0 {
			t.Fatalf("while the cancel's record is being written: %s, store calls %q; want pending, none", j.State, upstream.adminCalls())
		}
		answer()
		synctest.Wait()
		if j, _ := s.jobs.Get("load-1"); j.State != state.Cancelled || len(upstream.adminCalls()) != 1 {
			t.Errorf("once the store answered: %s, store calls %q; want cancelled, one", j.State, upstream.adminCalls())
		}
	})
}

// TestRegisterWithTotalWhileTheStateStoreHangs: a registration that
// carries its total, with a state volume whose writes hang, is answered
// once, 503 state_store_slow within 5 s, and what it kept in memory (the
// job and its total) is written once the store answers: the loader that
// does not retry still has its ETA.
func TestRegisterWithTotalWhileTheStateStoreHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _, st := brokenStoreServer(t)
		t.Cleanup(s.StartLoops())
		answer := st.hang(t)
		start := time.Now()
		rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", `{"id":"load-1","total":{"records":1000}}`)
		var body apierror.Body
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if took := time.Since(start); took != 5*time.Second {
			t.Errorf("registration answered after %v with the state store hanging, want 5s", took)
		}
		if rec.Code != http.StatusServiceUnavailable || body.Error != "state_store_slow" {
			t.Errorf("registration with the state store hanging: %d %s, want 503 state_store_slow", rec.Code, rec.Body)
		}
		answer()
		synctest.Wait()
		s.jobs.Tick(time.Now())
		recs, err := st.Load()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].ID != "load-1" || recs[0].Total == nil || *recs[0].Total != (state.Total{Unit: state.UnitRecords, N: 1000}) {
			t.Errorf("stored once the store answered: %+v, want load-1 with its total of 1000 records", recs)
		}
	})
}

// Every classification the proxy reports reaches the job manager, none is
// dropped as unknown on the way: as the kind of the same name (an
// unreachable store's stall cause is upstream_unreachable).
func TestObsKindMapsEveryKind(t *testing.T) {
	for k := classify.OK; k <= classify.Unreachable; k++ {
		if got := obsKind(k); got.String() != k.String() {
			t.Errorf("obsKind(%v) = %v", k, got)
		}
	}
	if got := obsKind(classify.Unreachable + 1); got != 0 {
		t.Errorf("obsKind(%v) = %v, want no kind", classify.Unreachable+1, got)
	}
}

// TestActionRetriesZero: SLUICE_ACTION_RETRIES=0 means one attempt of a
// cancel action and no retry, as the README says ("Retries of a
// cancel/cleanup action ... before the job is failed"), not the job
// manager's default of 5, which it gives a zero field.
func TestActionRetriesZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/admin/cancel/") {
				calls.Add(1)
				w.WriteHeader(http.StatusInternalServerError)
			}
		})
		s := newTestServer(t, store, "ACTION_RETRIES=0", "CANCEL_URL=http://store.test/admin/cancel/${JOB}")
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", `{"id":"j"}`); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs/j/cancel", ""); rec.Code != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
		}
		for range 3600 {
			if j, err := s.jobs.Get("j"); err == nil && j.State.Terminal() {
				break
			}
			time.Sleep(time.Second)
		}
		j, err := s.jobs.Get("j")
		if err != nil || j.State != state.Failed {
			t.Fatalf("job: %v %v, want failed", j.State, err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("the cancel action was called %d times, want 1 (SLUICE_ACTION_RETRIES=0)", n)
		}
	})
}

// sluice_start_time_seconds is when the process started, and stays so: the
// shipped alert counts its changes as restarts.
func TestStartTimeMetric(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, nil)
		want := float64(s.started.UnixNano()) / 1e9
		for range 2 {
			mfs, err := s.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := -1.0
			for _, mf := range mfs {
				if mf.GetName() == "sluice_start_time_seconds" {
					got = mf.GetMetric()[0].GetGauge().GetValue()
				}
			}
			if got != want {
				t.Fatalf("sluice_start_time_seconds %v, want the start, %v", got, want)
			}
			time.Sleep(time.Hour)
		}
	})
}

// The send-rate limit says its unit, so that a dashboard draws it beside
// the goodput it limits: requests beside requests, bytes beside bytes.
func TestRateLimitMetricSaysItsUnit(t *testing.T) {
	for _, unit := range []string{"requests", "bytes"} {
		s := newTestServer(t, nil, "RATE_UNIT="+unit, "INITIAL_RATE=50")
		if got := seriesValue(t, s, "sluice_limiter_rate_limit", "unit", unit); got != 50 {
			t.Errorf("SLUICE_RATE_UNIT=%s: sluice_limiter_rate_limit{unit=%q} = %v, want the limit, 50", unit, unit, got)
		}
	}
}

// A credential in a cancel or cleanup command (curl -u user:password) is
// hidden wherever the command is shown, as one in an action's URL is: in
// GET /v1/jobs/{id}, which answers any caller, and in check-config.
func TestCommandCredentialsHidden(t *testing.T) {
	const pw = "elastic:S3cretPW-91f2"
	cfg := testConfig(t,
		`CANCEL_COMMAND=["curl","-u","`+pw+`","-XPOST","http://es:9200/_tasks/${JOB}/_cancel"]`,
		`CLEANUP_COMMAND=curl -H Authorization:S3cretPW-91f2 http://es:9200/x/${JOB}`)
	s, err := NewServer(cfg, Options{Store: &state.MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	h := s.AdminHandler()
	if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"load-1"}`); rec.Code != http.StatusCreated {
		t.Fatalf("register: %d %s", rec.Code, rec.Body)
	}
	rec := adminCall(h, "GET", "/v1/jobs/load-1", "", "RemoteAddr", "192.0.2.7:4000")
	if body := rec.Body.String(); rec.Code != http.StatusOK || strings.Contains(body, "S3cretPW") || !strings.Contains(body, `"-XPOST"`) {
		t.Errorf("GET /v1/jobs/load-1 from another host: %d %s, want the commands without their credentials", rec.Code, body)
	}
	for _, kv := range cfg.Effective() {
		if strings.Contains(kv[1], "S3cretPW") {
			t.Errorf("check-config shows %s=%s", kv[0], kv[1])
		}
	}
}
