package admin

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// sample is one reading taken at a number of seconds after t0.
type sample struct {
	at float64
	v  HistoryValues
}

func TestHistorySample(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []sample
		want    []Point
	}{
		{
			name:    "the first sample is only the baseline",
			samples: []sample{{0, HistoryValues{Acknowledged: 100, RateLimit: 50, Concurrency: 4}}},
			want:    []Point{},
		},
		{
			name: "rates between samples, limits at the sample",
			samples: []sample{
				{0, HistoryValues{Acknowledged: 100, Throttled: 3, RateLimit: 50, Concurrency: 4}},
				{1, HistoryValues{Acknowledged: 140, Throttled: 3, RateLimit: 55, Concurrency: 5, InFlight: 2}},
				{2, HistoryValues{Acknowledged: 150, Throttled: 9, RateLimit: 27.5, Concurrency: 2, InFlight: 2}},
			},
			want: []Point{
				{T: at(1).UnixMilli(), Acknowledged: 40, RateLimit: 55, Concurrency: 5, InFlight: 2},
				{T: at(2).UnixMilli(), Acknowledged: 10, Throttled: 6, RateLimit: 27.5, Concurrency: 2, InFlight: 2},
			},
		},
		{
			name: "a late tick averages over the time it covers",
			samples: []sample{
				{0, HistoryValues{Acknowledged: 0}},
				{4, HistoryValues{Acknowledged: 100, Throttled: 2}},
			},
			want: []Point{{T: at(4).UnixMilli(), Acknowledged: 25, Throttled: 0.5}},
		},
		{
			name: "a clock stepped back drops the sample and becomes the baseline",
			samples: []sample{
				{10, HistoryValues{Acknowledged: 0}},
				{5, HistoryValues{Acknowledged: 50}},
				{5, HistoryValues{Acknowledged: 60}},
				{6, HistoryValues{Acknowledged: 70}},
			},
			want: []Point{{T: at(6).UnixMilli(), Acknowledged: 10}},
		},
		{
			// The chart asks for the points after the newest it has: one
			// stamped before it, after the clock stepped back, would
			// never reach it, and the chart would stop for as long as the
			// step. The points go on from the newest by the time between
			// samples.
			name: "points after a step back go on from the newest point",
			samples: []sample{
				{100, HistoryValues{Acknowledged: 0}},
				{101, HistoryValues{Acknowledged: 10}},
				{50, HistoryValues{Acknowledged: 20}},
				{52, HistoryValues{Acknowledged: 40}},
				{53, HistoryValues{Acknowledged: 45}},
			},
			want: []Point{
				{T: at(101).UnixMilli(), Acknowledged: 10},
				{T: at(103).UnixMilli(), Acknowledged: 10},
				{T: at(104).UnixMilli(), Acknowledged: 5},
			},
		},
		{
			name: "a counter that went down counts from zero",
			samples: []sample{
				{0, HistoryValues{Acknowledged: 500}},
				{2, HistoryValues{Acknowledged: 8}},
			},
			want: []Point{{T: at(2).UnixMilli(), Acknowledged: 4}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistory(10)
			for _, s := range tc.samples {
				h.Sample(at(s.at), s.v)
			}
			got := h.Since(0)
			if len(got) != len(tc.want) {
				t.Fatalf("points = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("point %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestHistoryBounded: the ring keeps the latest points only, oldest first,
// and Since reads what is newer than a point the caller already has.
func TestHistoryBounded(t *testing.T) {
	h := NewHistory(HistoryPoints)
	for i := range 2000 {
		h.Sample(at(float64(i)), HistoryValues{Acknowledged: float64(i * i), Concurrency: i})
	}
	all := h.Since(0)
	if len(all) != HistoryPoints {
		t.Fatalf("%d points, want %d", len(all), HistoryPoints)
	}
	if all[0].T != at(1100).UnixMilli() || all[len(all)-1].T != at(1999).UnixMilli() {
		t.Errorf("oldest %d, newest %d: want the last 900 seconds", all[0].T, all[len(all)-1].T)
	}
	for i := 1; i < len(all); i++ {
		if all[i].T <= all[i-1].T {
			t.Fatalf("points out of order at %d", i)
		}
	}
	// 1999² - 1998² = 3997
	if last := all[len(all)-1]; last.Acknowledged != 3997 || last.Concurrency != 1999 {
		t.Errorf("newest point = %+v", last)
	}
	newer := h.Since(at(1997).UnixMilli())
	if len(newer) != 2 || newer[0].T != at(1998).UnixMilli() {
		t.Errorf("Since(1997s) = %+v, want the points at 1998s and 1999s", newer)
	}
	if got := h.Since(at(5000).UnixMilli()); len(got) != 0 {
		t.Errorf("Since(the future) = %d points", len(got))
	}
	var none *History
	none.Sample(t0, HistoryValues{})
	if got := none.Since(0); got == nil || len(got) != 0 {
		t.Errorf("nil History: %v, want an empty list", got)
	}
}

func TestHistoryFeed(t *testing.T) {
	h := NewHistory(HistoryPoints)
	for i := range 5 {
		h.Sample(at(float64(i)), HistoryValues{Acknowledged: float64(10 * i), RateLimit: 20})
	}
	api := New(Config{Info: Info{RateUnit: "requests"}}, Deps{History: h})
	f := func(target string, wantStatus, wantPoints int) {
		t.Helper()
		rec := httptest.NewRecorder()
		api.handleHistory(rec, httptest.NewRequest("GET", target, nil))
		if rec.Code != wantStatus {
			t.Fatalf("%s: %d %s, want %d", target, rec.Code, rec.Body, wantStatus)
		}
		if wantStatus != http.StatusOK {
			return
		}
		var feed HistoryFeed
		if err := json.Unmarshal(rec.Body.Bytes(), &feed); err != nil {
			t.Fatal(err)
		}
		if len(feed.Points) != wantPoints || feed.Capacity != HistoryPoints || feed.IntervalSeconds != 1 || feed.RateUnit != "requests" {
			t.Errorf("%s: %+v, want %d points", target, feed, wantPoints)
		}
	}
	f("/v1/history", 200, 4)
	f("/v1/history?after=0", 200, 4)
	f("/v1/history?after="+strconv.FormatInt(at(2).UnixMilli(), 10), 200, 2)
	f("/v1/history?after=soon", 400, 0)
	f("/v1/history?after=1e3", 400, 0)
}

// TestRunHistoryAfterAStall: when the sampler does not run for a while (a
// paused process, a goroutine not scheduled, a gather that waited on a
// lock), the counters it then reads hold everything counted meanwhile.
// The point must spread them over the time they took, not over the one
// second a stale tick says passed: a steady 10 writes/s must not be
// charted as a spike of hundreds, which also squashes the rest of the
// chart under a tall axis for 15 minutes.
func TestRunHistoryAfterAStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim, err := limiter.New(limiter.Config{InitialRate: 100, MinRate: 1, MaxRate: 100, InitialConcurrency: 2, MaxConcurrency: 2})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var calls int
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_upstream_acknowledged_requests_total"}, func() float64 {
			time.Sleep(time.Millisecond) // a gather takes a little time
			if calls++; calls == 5 {
				time.Sleep(time.Minute) // the sampler stalls here
			}
			return math.Floor(10 * time.Since(start).Seconds()) // a steady 10 writes/s
		}))
		h := NewHistory(HistoryPoints)
		api := New(Config{}, Deps{Limiter: lim, Counters: reg, History: h})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { api.RunHistory(ctx); close(done) }()
		time.Sleep(90*time.Second + time.Millisecond)
		cancel()
		<-done

		points := h.Since(0)
		if len(points) < 20 {
			t.Fatalf("%d points over 90s", len(points))
		}
		for _, p := range points {
			if p.Acknowledged < 8 || p.Acknowledged > 12 {
				t.Errorf("point at %+.0fs: %.1f acknowledged/s, want 10", time.UnixMilli(p.T).Sub(start).Seconds(), p.Acknowledged)
			}
		}
	})
}
