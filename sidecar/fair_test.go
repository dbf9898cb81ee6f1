package sidecar

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// slowStore answers every write after latency, without limit: the
// sidecar's concurrency limit is the bottleneck.
type slowStore struct{ latency time.Duration }

func (s slowStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	time.Sleep(s.latency)
	w.WriteHeader(http.StatusOK)
}

// A bad X-Sluice-Weight or X-Sluice-Priority is the loader's 400, naming
// the header; so is a registration's weight or priority out of bounds,
// naming the field.
func TestFlowInputErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, slowStore{time.Millisecond})
		for _, c := range []struct{ header, value, code string }{
			{proxy.HeaderWeight, "1000", "invalid_weight"},
			{proxy.HeaderWeight, "0", "invalid_weight"},
			{proxy.HeaderWeight, "NaN", "invalid_weight"},
			{proxy.HeaderWeight, "three", "invalid_weight"},
			{proxy.HeaderPriority, "urgent", "invalid_priority"},
		} {
			rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", "x", c.header, c.value)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), c.code) || !strings.Contains(rec.Body.String(), c.header) {
				t.Errorf("%s: %s: %d %s, want 400 %s naming the header", c.header, c.value, rec.Code, rec.Body, c.code)
			}
		}
		for _, c := range []struct{ body, field string }{
			{`{"id":"a","weight":1000}`, "weight"},
			{`{"id":"a","weight":0}`, "weight"},
			{`{"id":"a","weight":"heavy"}`, "weight"},
			{`{"id":"a","priority":"urgent"}`, "priority"},
		} {
			rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", c.body)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), c.field) {
				t.Errorf("%s: %d %s, want 400 naming %s", c.body, rec.Code, rec.Body, c.field)
			}
		}
		rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", `{"id":"a","weight":2.5,"priority":"live"}`)
		var v state.JobView
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != http.StatusCreated || v.Weight != 2.5 || v.Priority != "live" {
			t.Errorf("register: %d %s", rec.Code, rec.Body)
		}
	})
}

// Two jobs through the proxy on a store the sidecar's 4 slots saturate:
// one says weight 3 in its headers, the other is registered with weight
// 1; /v1/jobs and /v1/status show the 75/25 split, and their writes'
// queue waits.
func TestFairSharesThroughProxy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, slowStore{10 * time.Millisecond}, "INITIAL_CONCURRENCY=4", "MAX_CONCURRENCY=4", "INITIAL_RATE=100000", "MAX_RATE=100000")
		if rec := adminCall(s.AdminHandler(), "POST", "/v1/jobs", `{"id":"light","weight":1}`); rec.Code != http.StatusCreated {
			t.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, job := range []struct{ id, weight string }{{"heavy", "3"}, {"light", "50"}} { // light's registration wins over its header
			for range 16 {
				wg.Go(func() {
					for ctx.Err() == nil {
						send(s.ProxyHandler(), ctx, http.MethodPut, "/w", "x", proxy.HeaderJob, job.id, proxy.HeaderWeight, job.weight)
					}
				})
			}
		}
		time.Sleep(12 * time.Second)
		var list struct{ Jobs []state.JobSummary }
		rec := adminCall(s.AdminHandler(), "GET", "/v1/jobs", "")
		if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
			t.Fatal(err)
		}
		var st struct {
			Limiter struct {
				Flows []struct {
					Job   string
					Share float64
				}
				Classes []struct {
					Priority string
					Grants   uint64
				}
			}
		}
		rec = adminCall(s.AdminHandler(), "GET", "/v1/status", "")
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
		cancel()
		wg.Wait()
		time.Sleep(time.Second) // the store's answers to writes whose loaders left
		want := map[string]struct{ weight, share float64 }{"heavy": {3, 0.75}, "light": {1, 0.25}}
		seen := 0
		for _, j := range list.Jobs {
			w, ok := want[j.ID]
			if !ok {
				continue
			}
			seen++
			if j.Weight != w.weight || j.Priority != "bulk" || math.Abs(j.Share-w.share) > 0.05 || j.QueueWaitSeconds <= 0 {
				t.Errorf("%s: weight %v priority %s share %.3f wait %.4fs; want weight %v, bulk, share %v ± 0.05, a wait",
					j.ID, j.Weight, j.Priority, j.Share, j.QueueWaitSeconds, w.weight, w.share)
			}
		}
		if seen != 2 || len(st.Limiter.Flows) != 2 || len(st.Limiter.Classes) != 2 || st.Limiter.Classes[0].Grants == 0 {
			t.Errorf("jobs %+v; status flows %+v classes %+v", list.Jobs, st.Limiter.Flows, st.Limiter.Classes)
		}
		if v := metricValue(t, s, "sluice_limiter_class_grants_total"); v == 0 {
			t.Error("sluice_limiter_class_grants_total is 0")
		}
	})
}

// One job's waiting writes never hold back another job's: behind 64
// writers of a backfill on a sidecar with 2 send slots, each write of a
// job that writes one at a time waits for the next slot only (a store
// latency at most), not for the backfill's queue (about 32 of them).
func TestFairNoHeadOfLineBetweenJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, slowStore{50 * time.Millisecond}, "INITIAL_CONCURRENCY=2", "MAX_CONCURRENCY=2", "INITIAL_RATE=100000", "MAX_RATE=100000")
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for ctx.Err() == nil {
					send(s.ProxyHandler(), ctx, http.MethodPut, "/w", "x", proxy.HeaderJob, "backfill")
				}
			})
		}
		time.Sleep(5 * time.Second)
		var worst time.Duration
		for range 20 {
			t0 := time.Now()
			if rec := send(s.ProxyHandler(), context.Background(), http.MethodPut, "/w", "x", proxy.HeaderJob, "small"); rec.Code != http.StatusOK {
				t.Fatalf("small's write: %d %s", rec.Code, rec.Body)
			}
			worst = max(worst, time.Since(t0))
		}
		cancel()
		wg.Wait()
		time.Sleep(time.Second) // the store's answers to writes whose loaders left
		if worst > 110*time.Millisecond {
			t.Errorf("small's slowest write took %v, want at most a slot's wait and its own 50ms", worst)
		}
	})
}
