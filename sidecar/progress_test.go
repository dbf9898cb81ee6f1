package sidecar

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/state"
)

// TestJobTotalAPI declares totals through the admin API, at registration
// and later, and reads the progress and ETA back from GET /v1/jobs/{id}
// and GET /v1/jobs; a job without a total shows no progress.
func TestJobTotalAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, &pegasusStore{})
		h := s.AdminHandler()
		call := func(method, path, body string, want int) []byte {
			t.Helper()
			rec := adminCall(h, method, path, body)
			if rec.Code != want {
				t.Fatalf("%s %s %s: %d %s, want %d", method, path, body, rec.Code, rec.Body, want)
			}
			return rec.Body.Bytes()
		}
		start := time.Now()
		p := progressOf(t, call("POST", "/v1/jobs", `{"id":"load-1","total":{"records":1000}}`, http.StatusCreated))
		want := map[string]any{"unit": "records", "total": 1000.0, "done": 0.0, "fraction": 0.0,
			"rate_per_second": 0.0, "eta_unknown": "rate_zero"}
		if !equalJSON(p, want) {
			t.Errorf("registered: progress %v, want %v", p, want)
		}
		time.Sleep(10 * time.Second)
		call("POST", "/v1/jobs/load-1/progress", `{"records":250}`, http.StatusOK)
		p = progressOf(t, call("GET", "/v1/jobs/load-1", "", http.StatusOK))
		want = map[string]any{"unit": "records", "total": 1000.0, "done": 250.0, "fraction": 0.25,
			"rate_per_second": 25.0, "eta_seconds": 30.0, // 750 left at 25/s
			"eta_at": start.Add(40 * time.Second).UTC().Format(time.RFC3339Nano)}
		if !equalJSON(p, want) {
			t.Errorf("after a report: progress %v, want %v", p, want)
		}

		// Declared later, by an operator or a loader that counted its
		// input after registering; any job, even one created by a write.
		call("POST", "/v1/jobs", `{"id":"plain"}`, http.StatusCreated)
		p = progressOf(t, call("POST", "/v1/jobs/plain/total", `{"items":40}`, http.StatusOK))
		if p["unit"] != "items" || p["total"] != 40.0 {
			t.Errorf("total declared later: %v", p)
		}
		p = progressOf(t, call("POST", "/v1/jobs/plain/total", `{"bytes":1048576}`, http.StatusOK))
		if p["unit"] != "bytes" || p["total"] != 1048576.0 {
			t.Errorf("total replaced: %v", p)
		}
		// Registering again without a total keeps the one it has.
		if p = progressOf(t, call("POST", "/v1/jobs", `{"id":"plain","stall_after":"10m"}`, http.StatusCreated)); p["unit"] != "bytes" {
			t.Errorf("re-registered without a total: %v", p)
		}

		call("POST", "/v1/jobs", `{"id":"no-total"}`, http.StatusCreated)
		if body := call("GET", "/v1/jobs/no-total", "", http.StatusOK); strings.Contains(string(body), `"progress"`) {
			t.Errorf("a job without a total shows progress: %s", body)
		}
		var list struct {
			Jobs []struct {
				ID       string          `json:"id"`
				Progress *map[string]any `json:"progress"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal(call("GET", "/v1/jobs", "", http.StatusOK), &list); err != nil {
			t.Fatal(err)
		}
		for _, j := range list.Jobs {
			if (j.Progress != nil) != (j.ID != "no-total") {
				t.Errorf("list: %s has progress %v", j.ID, j.Progress)
			}
		}

		// Refusals: JSON errors, and nothing declared.
		for _, c := range []struct {
			method, path, body string
			want               int
		}{
			{"POST", "/v1/jobs/plain/total", `{"records":0}`, http.StatusBadRequest},
			{"POST", "/v1/jobs/plain/total", `{"records":-3}`, http.StatusBadRequest},
			{"POST", "/v1/jobs/plain/total", `{"records":1,"items":2}`, http.StatusBadRequest},
			{"POST", "/v1/jobs/plain/total", `{"pages":3}`, http.StatusBadRequest},
			{"POST", "/v1/jobs/plain/total", `{}`, http.StatusBadRequest},
			{"POST", "/v1/jobs/plain/total", ``, http.StatusBadRequest},
			{"POST", "/v1/jobs/plain/total", `{"items":1} {"items":2}`, http.StatusBadRequest},
			{"POST", "/v1/jobs/nope/total", `{"items":1}`, http.StatusNotFound},
			{"GET", "/v1/jobs/plain/total", ``, http.StatusMethodNotAllowed},
			{"POST", "/v1/jobs", `{"id":"bad-total","total":{"rows":5}}`, http.StatusBadRequest},
		} {
			rec := adminCall(h, c.method, c.path, c.body)
			if rec.Code != c.want || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("%s %s %s: %d %s, want %d JSON", c.method, c.path, c.body, rec.Code, rec.Body, c.want)
			}
		}
		if p = progressOf(t, call("GET", "/v1/jobs/plain", "", http.StatusOK)); p["unit"] != "bytes" || p["total"] != 1048576.0 {
			t.Errorf("refused totals changed it: %v", p)
		}
		call("GET", "/v1/jobs/bad-total", "", http.StatusNotFound)
	})
}

// TestJobTotalNeedsToken: declaring a total is a mutation: at registration
// or later, it needs the admin token, like the other mutations, and a
// refusal declares nothing.
func TestJobTotalNeedsToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const token = "tok-123-4f9c2e7a1b8d"
		s := newTestServer(t, &pegasusStore{}, "ADMIN_TOKEN="+token)
		h := s.AdminHandler()
		bearer := []string{"Authorization", "Bearer " + token}
		if rec := adminCall(h, "POST", "/v1/jobs", `{"id":"j"}`, bearer...); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		for _, c := range []struct {
			path, body string
		}{
			{"/v1/jobs/j/total", `{"records":10}`},
			{"/v1/jobs", `{"id":"j","total":{"records":10}}`},
		} {
			for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
				if rec := adminCall(h, "POST", c.path, c.body, hdr...); rec.Code != http.StatusUnauthorized {
					t.Errorf("POST %s with %v: %d %s, want 401", c.path, hdr, rec.Code, rec.Body)
				}
			}
		}
		if v, err := s.jobs.Get("j"); err != nil || v.Progress != nil {
			t.Fatalf("refused totals declared %+v (%v)", v.Progress, err)
		}
		if rec := adminCall(h, "POST", "/v1/jobs/j/total", `{"records":10}`, append(bearer, "RemoteAddr", "10.0.0.8:5000")...); rec.Code != http.StatusOK {
			t.Errorf("with the token: %d %s", rec.Code, rec.Body)
		}
		if rec := adminCall(h, "GET", "/v1/jobs/j", ""); rec.Code != http.StatusOK || progressOf(t, rec.Body.Bytes())["unit"] != "records" {
			t.Errorf("read without a token: %d %s", rec.Code, rec.Body)
		}
	})

	// Without a token, mutations are for loopback callers only.
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, &pegasusStore{})
		h := s.AdminHandler()
		adminCall(h, "POST", "/v1/jobs", `{"id":"j"}`)
		if rec := adminCall(h, "POST", "/v1/jobs/j/total", `{"records":10}`, "RemoteAddr", "10.0.0.8:5000"); rec.Code != http.StatusForbidden {
			t.Errorf("from the network without a token: %d %s, want 403", rec.Code, rec.Body)
		}
	})
}

// TestJobTotalSurvivesRestart: a sidecar restarted on the same state keeps
// the job's total.
func TestJobTotalSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &state.MemStore{}
		start := func() (*Server, func()) {
			s, err := NewServer(testConfig(t), Options{Logger: slog.New(slog.DiscardHandler), Store: st})
			if err != nil {
				t.Fatal(err)
			}
			return s, s.StartLoops()
		}
		s, stop := start()
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", `{"id":"j","total":{"items":500}}`); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		stop()
		s, stop = start()
		defer stop()
		rec := adminCall(s.AdminHandler(), "GET", "/v1/jobs/j", "")
		if p := progressOf(t, rec.Body.Bytes()); p["unit"] != "items" || p["total"] != 500.0 {
			t.Errorf("after a restart: progress %v", p)
		}
	})
}

// progressOf returns the "progress" object of a job's view.
func progressOf(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var v struct {
		Progress map[string]any `json:"progress"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return v.Progress
}

// equalJSON compares decoded JSON objects.
func equalJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
