package sidecar

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/apierror"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// statusStore answers writes with status (200 when 0) and records the
// admin calls.
type statusStore struct {
	status atomic.Int32
	mu     sync.Mutex
	calls  []string
}

func (s *statusStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/admin/") {
		s.mu.Lock()
		s.calls = append(s.calls, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return
	}
	if code := s.status.Load(); code != 0 {
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(int(code))
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *statusStore) adminCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// shipper is a continuous shipper (vmagent, Vector): header-less writes
// every second while on, counting the answers by status.
type shipper struct {
	on     atomic.Bool
	mu     sync.Mutex
	codes  map[int]int
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func startShipper(h http.Handler) *shipper {
	ctx, cancel := context.WithCancel(context.Background())
	s := &shipper{codes: map[int]int{}, cancel: cancel}
	s.on.Store(true)
	s.done.Go(func() {
		for ctx.Err() == nil {
			if s.on.Load() {
				rec := send(h, context.Background(), http.MethodPost, "/api/v1/import", "m 1")
				s.mu.Lock()
				s.codes[rec.Code]++
				s.mu.Unlock()
			}
			time.Sleep(time.Second)
		}
	})
	return s
}

func (s *shipper) stop() { s.cancel(); s.done.Wait() }

func (s *shipper) count(code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codes[code]
}

func jobState(t *testing.T, s *Server, id string) state.JobView {
	t.Helper()
	v, err := s.jobs.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestShipperQuietSpellAndOutage: with the short settings a new user tried
// (10 s stall, 10 s grace), a continuous shipper's default job goes idle
// over a ten-minute quiet spell and a store outage of minutes only stalls
// it: nothing is cancelled, no write ever gets 409, and writes flow the
// moment the shipper or the store is back.
func TestShipperQuietSpellAndOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &statusStore{}
		s := newTestServer(t, store, "STALL_AFTER=10s", "CANCEL_GRACE=10s", "RETRY_MAX=0",
			"CANCEL_URL=http://store.test/admin/cancel/${JOB}", "CLEANUP_URL=http://store.test/admin/clear/${JOB}")
		sh := startShipper(s.ProxyHandler())
		defer sh.stop()
		time.Sleep(30 * time.Second)

		sh.on.Store(false) // a quiet spell
		time.Sleep(10 * time.Minute)
		if v := jobState(t, s, "default"); v.State != state.Idle {
			t.Fatalf("after a quiet spell: %s (%s %s), want idle", v.State, v.Reason, v.StallCause)
		}
		sh.on.Store(true)
		time.Sleep(5 * time.Second)
		if v := jobState(t, s, "default"); v.State != state.Running {
			t.Fatalf("shipping again: %s, want running", v.State)
		}

		store.status.Store(http.StatusInternalServerError) // an outage
		time.Sleep(5 * time.Minute)
		if v := jobState(t, s, "default"); v.State != state.Stalled || v.StallCause != state.CauseUpstreamErrors {
			t.Fatalf("during the outage: %s (%s), want stalled (upstream_errors)", v.State, v.StallCause)
		}
		store.status.Store(0)
		ok := sh.count(http.StatusOK)
		time.Sleep(5 * time.Second)
		if sh.count(http.StatusOK) <= ok {
			t.Fatal("no write acknowledged after the store came back")
		}
		if v := jobState(t, s, "default"); v.State != state.Running {
			t.Fatalf("after the outage: %s, want running", v.State)
		}
		if n := sh.count(http.StatusConflict); n != 0 || len(store.adminCalls()) != 0 {
			t.Fatalf("%d writes got 409, store admin calls %q; want none", n, store.adminCalls())
		}
		rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs/default/complete", "")
		var e apierror.Body
		if rec.Code != http.StatusConflict || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error != "illegal_transition" || !strings.Contains(e.Message, "stream") {
			t.Fatalf("complete the default job: %d %s, want 409 illegal_transition", rec.Code, rec.Body)
		}
	})
}

// TestDefaultJobCancelledCleanedReopened: allowed to, sluice cancels the
// default job when the store throttles all of it for the stall and grace,
// runs its cancel and cleanup, and reopens it; the shipper's writes
// meanwhile get 429 (come back), never 409 (drop), and flow again after.
func TestDefaultJobCancelledCleanedReopened(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &statusStore{}
		s := newTestServer(t, store, "STALL_AFTER=10s", "CANCEL_GRACE=10s", "RETRY_MAX=0", "QUEUE_TIMEOUT=2s",
			"DEFAULT_JOB_AUTO_CANCEL_CAUSES=store_throttling",
			"CANCEL_URL=http://store.test/admin/cancel/${JOB}", "CLEANUP_URL=http://store.test/admin/clear/${JOB}")
		sh := startShipper(s.ProxyHandler())
		defer sh.stop()
		time.Sleep(10 * time.Second)
		store.status.Store(http.StatusTooManyRequests)
		deadline := time.Now().Add(10 * time.Minute)
		for len(store.adminCalls()) < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Second)
		}
		store.status.Store(0)
		time.Sleep(10 * time.Second)
		v := jobState(t, s, "default")
		var path []string
		for _, tr := range v.History {
			path = append(path, tr.To.String())
		}
		want := []string{"stalled", "cancelling", "cleaning", "cancelled", "running"}
		reopened := slices.ContainsFunc(v.History, func(tr state.Transition) bool { return tr.Reason == "stream_reopened" })
		if !v.State.Accepting() || !isSubsequence(want, path) || !reopened {
			t.Fatalf("default job %s (%s), went %v; want %v, reopened", v.State, v.Reason, path, want)
		}
		if calls := store.adminCalls(); !slices.Equal(calls, []string{"POST /admin/cancel/default", "POST /admin/clear/default"}) {
			t.Fatalf("store admin calls %q, want the cancel and the cleanup of the default job", calls)
		}
		if n := sh.count(http.StatusConflict); n != 0 {
			t.Fatalf("%d writes got 409 while the default job was cleaned up", n)
		}
		ok := sh.count(http.StatusOK)
		time.Sleep(5 * time.Second)
		if sh.count(http.StatusOK) <= ok {
			t.Fatal("the reopened default job takes no writes")
		}
	})
}

// TestJobsAPIReopenDelete: POST /v1/jobs/{id}/reopen and DELETE
// /v1/jobs/{id} are mutating endpoints (loopback or token), refuse illegal
// states with 409 illegal_transition and unknown jobs with 404, and a
// request that cannot be recorded with 503 and a Retry-After.
func TestJobsAPIReopenDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _, st := brokenStoreServer(t)
		t.Cleanup(s.StartLoops())
		h := s.AdminHandler()
		f := func(method, path, body string, want int, wantCode string, header ...string) state.JobView {
			t.Helper()
			rec := adminCall(h, method, path, body, header...)
			var v state.JobView
			var e apierror.Body
			switch {
			case rec.Code != want:
				t.Fatalf("%s %s: %d %s, want %d", method, path, rec.Code, rec.Body, want)
			case wantCode != "" && (json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error != wantCode):
				t.Fatalf("%s %s: %s, want error %s", method, path, rec.Body, wantCode)
			case wantCode == "" && json.Unmarshal(rec.Body.Bytes(), &v) != nil:
				t.Fatalf("%s %s: %s is not a job", method, path, rec.Body)
			}
			return v
		}
		remote := []string{"RemoteAddr", "10.0.0.8:5000"}
		f("POST", "/v1/jobs", `{"id":"load-1","auto_cancel_causes":["loader_idle","store_throttling"],"heartbeat_interval":"30s"}`, http.StatusCreated, "")
		v := f("GET", "/v1/jobs/load-1", "", http.StatusOK, "")
		if !slices.Equal(v.Settings.AutoCancelCauses, []state.StallCause{state.CauseLoaderIdle, state.CauseStoreThrottling}) || v.Settings.HeartbeatInterval != "30s" {
			t.Fatalf("registered settings %+v", v.Settings)
		}
		f("POST", "/v1/jobs", `{"id":"x","auto_cancel_causes":["loader_hung"]}`, http.StatusBadRequest, "invalid_request")
		f("POST", "/v1/jobs", `{"id":"x","heartbeat_interval":"-1s"}`, http.StatusBadRequest, "invalid_json")
		f("POST", "/v1/jobs", `{"id":"none","auto_cancel_causes":[]}`, http.StatusCreated, "")
		if v := f("GET", "/v1/jobs/none", "", http.StatusOK, ""); v.Settings.AutoCancelCauses == nil || len(v.Settings.AutoCancelCauses) != 0 {
			t.Fatalf("registered with no causes: %+v", v.Settings)
		}

		f("POST", "/v1/jobs/load-1/reopen", "", http.StatusConflict, "illegal_transition") // pending
		f("DELETE", "/v1/jobs/load-1", "", http.StatusConflict, "illegal_transition")
		f("POST", "/v1/jobs/nope/reopen", "", http.StatusNotFound, "job_not_found")
		f("DELETE", "/v1/jobs/nope", "", http.StatusNotFound, "job_not_found")
		f("POST", "/v1/jobs/load-1/cancel", `{}`, http.StatusAccepted, "")
		synctest.Wait()
		f("POST", "/v1/jobs/load-1/reopen", "", http.StatusForbidden, "forbidden", remote...)
		f("DELETE", "/v1/jobs/load-1", "", http.StatusForbidden, "forbidden", remote...)

		st.broken.Store(true)
		rec := adminCall(h, "POST", "/v1/jobs/load-1/reopen", "")
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "reopen_not_recorded") || rec.Header().Get("Retry-After") != "5" {
			t.Fatalf("reopen with the state dir full: %d %s", rec.Code, rec.Body)
		}
		rec = adminCall(h, "DELETE", "/v1/jobs/load-1", "")
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "delete_not_recorded") || rec.Header().Get("Retry-After") != "5" {
			t.Fatalf("delete with the state dir full: %d %s", rec.Code, rec.Body)
		}
		if v := jobState(t, s, "load-1"); v.State != state.Cancelled {
			t.Fatalf("after a reopen and a delete not recorded: %s, want cancelled", v.State)
		}
		st.broken.Store(false)

		if v := f("POST", "/v1/jobs/load-1/reopen", `{"reason":"store fixed"}`, http.StatusOK, ""); v.State != state.Running || v.Reason != "store fixed" {
			t.Fatalf("reopened: %s (%s)", v.State, v.Reason)
		}
		if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/b/put", "row", proxy.HeaderJob, "load-1"); rec.Code != http.StatusOK {
			t.Fatalf("a write to the reopened job: %d %s", rec.Code, rec.Body)
		}
		f("POST", "/v1/jobs/load-1/reopen", "", http.StatusConflict, "illegal_transition")
		f("POST", "/v1/jobs/load-1/complete", "", http.StatusOK, "")
		f("POST", "/v1/jobs/load-1/reopen", "", http.StatusConflict, "illegal_transition") // completed
		if v := f("DELETE", "/v1/jobs/load-1", "", http.StatusOK, ""); v.State != state.Completed {
			t.Fatalf("deleted: %s", v.State)
		}
		f("GET", "/v1/jobs/load-1", "", http.StatusNotFound, "job_not_found")
		f("PUT", "/v1/jobs/load-1", "", http.StatusMethodNotAllowed, "method_not_allowed")
	})
}

// TestReopenDeleteNeedTheToken: with SLUICE_ADMIN_TOKEN set, reopen and
// delete need it from every address, loopback included.
func TestReopenDeleteNeedTheToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const tok = "tok-123-4f9c2e7a1b8d"
		s := newTestServer(t, &pegasusStore{}, "ADMIN_TOKEN="+tok)
		h := s.AdminHandler()
		auth := []string{"Authorization", "Bearer " + tok}
		for _, id := range []string{"a", "b"} {
			if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"`+id+`"}`, auth...); rec.Code != http.StatusCreated {
				t.Fatal(rec.Body)
			}
			if rec := adminCall(h, "POST", "/v1/jobs/"+id+"/cancel", "", auth...); rec.Code != http.StatusAccepted {
				t.Fatal(rec.Body)
			}
		}
		synctest.Wait()
		for _, c := range []struct{ method, path string }{{"POST", "/v1/jobs/a/reopen"}, {"DELETE", "/v1/jobs/b"}} {
			for _, header := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
				if rec := adminCall(h, c.method, c.path, "", header...); rec.Code != http.StatusUnauthorized {
					t.Errorf("%s %s with %v: %d, want 401", c.method, c.path, header, rec.Code)
				}
			}
			if rec := adminCall(h, c.method, c.path, "", append([]string{"RemoteAddr", "10.0.0.8:5000"}, auth...)...); rec.Code != http.StatusOK {
				t.Errorf("%s %s with the token: %d %s", c.method, c.path, rec.Code, rec.Body)
			}
		}
		if v := jobState(t, s, "a"); v.State != state.Running {
			t.Errorf("a: %s, want running", v.State)
		}
		if _, err := s.jobs.Get("b"); err == nil {
			t.Error("b not deleted")
		}
	})
}
