package state

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEstimate(t *testing.T) {
	type want struct {
		fraction float64
		rate     float64
		eta      int64 // seconds; 0: unknown
		unknown  ETAUnknown
	}
	records := func(n int64) Total { return Total{UnitRecords, n} }
	cases := []struct {
		name string
		in   progressInput
		want want
	}{
		{"no total", progressInput{done: 500, state: Running, recent: 60, watched: time.Hour},
			want{0, 0, 0, ETANoTotal}},
		{"records, a full window", progressInput{total: records(1000), done: 400, state: Running, recent: 600, watched: time.Hour},
			want{0.4, 10, 60, ""}},
		{"bytes", progressInput{total: Total{UnitBytes, 1 << 20}, done: 1 << 19, state: Running, recent: 60 << 10, watched: time.Hour},
			want{0.5, 1024, 512, ""}},
		{"items", progressInput{total: Total{UnitItems, 100}, done: 99, state: Throttled, recent: 3, watched: 2 * time.Minute},
			want{0.99, 0.05, 20, ""}},
		{"rounded up to a whole second", progressInput{total: records(100), done: 90, state: Running, recent: 180, watched: time.Hour},
			want{0.9, 3, 4, ""}},
		// A job sluice has watched for 10 s: its rate is over those 10 s,
		// not diluted by a minute it did not exist.
		{"young job", progressInput{total: records(1100), done: 100, state: Running, recent: 100, watched: 10 * time.Second},
			want{100.0 / 1100, 10, 100, ""}},
		{"younger than a second counts a second", progressInput{total: records(1000), done: 50, state: Running, recent: 50, watched: 200 * time.Millisecond},
			want{0.05, 50, 19, ""}},
		{"total reached", progressInput{total: records(1000), done: 1000, state: Running, recent: 600, watched: time.Hour},
			want{1, 10, 0, ETATotalReached}},
		{"past the total, capped at 1", progressInput{total: records(1000), done: 1500, state: Idle, watched: time.Hour},
			want{1, 0, 0, ETATotalReached}},
		{"rate zero", progressInput{total: records(1000), done: 250, state: Idle, watched: time.Hour},
			want{0.25, 0, 0, ETARateZero}},
		{"rate zero, never written", progressInput{total: Total{UnitItems, 10}, state: Pending},
			want{0, 0, 0, ETARateZero}},
		{"done decreasing", progressInput{total: records(1000), done: 100, decreasing: true, state: Running, recent: 600, watched: time.Hour},
			want{0.1, 10, 0, ETADoneDecreasing}},
		{"completed", progressInput{total: records(1000), done: 900, state: Completed, recent: 600, watched: time.Hour},
			want{0.9, 10, 0, ETACompleted}},
		{"cancelling", progressInput{total: records(1000), done: 900, state: Cancelling, recent: 600, watched: time.Hour},
			want{0.9, 10, 0, ETAStopped}},
		{"failed", progressInput{total: records(1000), done: 900, state: Failed, watched: time.Hour},
			want{0.9, 0, 0, ETAStopped}},
		{"stalled still estimates", progressInput{total: records(1000), done: 900, state: Stalled, recent: 60, watched: time.Hour},
			want{0.9, 1, 100, ""}},
		{"rate too low", progressInput{total: records(math.MaxInt64), done: 0, state: Running, recent: 1, watched: time.Hour},
			want{0, 1.0 / 60, 0, ETARateTooLow}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := estimate(tc.in, t0)
			if p.Unit != tc.in.total.Unit || p.Total != tc.in.total.N || p.Done != tc.in.done {
				t.Errorf("unit %q total %d done %d, want the input's", p.Unit, p.Total, p.Done)
			}
			if math.Abs(p.Fraction-tc.want.fraction) > 1e-12 || math.Abs(p.RatePerSecond-tc.want.rate) > 1e-12 {
				t.Errorf("fraction %v rate %v, want %v and %v", p.Fraction, p.RatePerSecond, tc.want.fraction, tc.want.rate)
			}
			if p.ETAUnknown != tc.want.unknown {
				t.Errorf("eta unknown %q, want %q", p.ETAUnknown, tc.want.unknown)
			}
			switch {
			case tc.want.eta == 0 && (p.ETASeconds != nil || p.ETAAt != nil):
				t.Errorf("ETA %v at %v, want none", *p.ETASeconds, p.ETAAt)
			case tc.want.eta != 0 && (p.ETASeconds == nil || p.ETAAt == nil):
				t.Errorf("no ETA, want %d s", tc.want.eta)
			case tc.want.eta != 0 && (*p.ETASeconds != tc.want.eta || !p.ETAAt.Equal(t0.Add(time.Duration(tc.want.eta)*time.Second))):
				t.Errorf("ETA %d s at %v, want %d s", *p.ETASeconds, p.ETAAt, tc.want.eta)
			}
		})
	}
}

func TestTotalJSON(t *testing.T) {
	f := func(in string, want Total, ok bool) {
		t.Helper()
		var got Total
		err := json.Unmarshal([]byte(in), &got)
		if (err == nil) != ok || got != want {
			t.Errorf("%s = %+v, %v; want %+v ok=%v", in, got, err, want, ok)
		}
		if ok {
			if b, _ := json.Marshal(got); string(b) != strings.ReplaceAll(in, " ", "") {
				t.Errorf("%s marshals as %s", in, b)
			}
		}
	}
	f(`{"records": 1000000}`, Total{UnitRecords, 1000000}, true)
	f(`{"bytes": 1}`, Total{UnitBytes, 1}, true)
	f(`{"items": 42}`, Total{UnitItems, 42}, true)
	f(`{}`, Total{}, false)
	f(`null`, Total{}, false)
	f(`{"records": 0}`, Total{}, false)
	f(`{"records": -5}`, Total{}, false)
	f(`{"records": 1.5}`, Total{}, false)
	f(`{"records": "10"}`, Total{}, false)
	f(`{"records": 1, "bytes": 2}`, Total{}, false)
	f(`{"pages": 3}`, Total{}, false)
	f(`[1]`, Total{}, false)
	f(`{"records": 99999999999999999999}`, Total{}, false)
}

// FuzzTotalJSON: any input is refused or gives a valid total that
// marshals back to itself.
func FuzzTotalJSON(f *testing.F) {
	for _, s := range []string{`{"records":1}`, `{"bytes":9223372036854775807}`, `{"items":0}`, `{"records":1,"items":1}`, `null`, `{"Records":3}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var got Total
		if err := json.Unmarshal([]byte(in), &got); err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("%q accepted as invalid %+v: %v", in, got, err)
		}
		b, err := json.Marshal(got)
		var back Total
		if err != nil || json.Unmarshal(b, &back) != nil || back != got {
			t.Fatalf("%q → %+v → %s → %+v", in, got, b, back)
		}
	})
}

// TestJobProgress reads a job's progress through the Manager, as the loader
// reports records: none without a total, a young job's rate over its age,
// and an ETA that is unknown while the loader's count goes down.
func TestJobProgress(t *testing.T) {
	now := t0
	m := newTestManager(t, Config{Now: func() time.Time { return now }})
	defer m.Close()
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, m, "j"); v.Progress != nil {
		t.Fatalf("progress %+v without a total", v.Progress)
	}
	if _, err := m.SetTotal("j", Total{UnitRecords, 1000}); err != nil {
		t.Fatal(err)
	}
	report := func(after time.Duration, records int64) {
		t.Helper()
		now = now.Add(after)
		if _, err := m.ReportProgress("j", Progress{Records: records}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(done int64, rate float64, eta int64, unknown ETAUnknown) {
		t.Helper()
		p := mustGet(t, m, "j").Progress
		if p == nil {
			t.Fatal("no progress with a total")
		}
		gotETA := int64(0)
		if p.ETASeconds != nil {
			gotETA = *p.ETASeconds
		}
		if p.Unit != UnitRecords || p.Total != 1000 || p.Done != done || math.Abs(p.RatePerSecond-rate) > 1e-9 ||
			gotETA != eta || p.ETAUnknown != unknown {
			t.Errorf("at +%v: done %d rate %v ETA %d s (%q), want %d, %v, %d s (%q)",
				now.Sub(t0), p.Done, p.RatePerSecond, gotETA, p.ETAUnknown, done, rate, eta, unknown)
		}
	}
	check(0, 0, 0, ETARateZero)
	report(10*time.Second, 100)
	check(100, 10, 90, "") // 100 records in the job's first 10 s
	report(10*time.Second, 300)
	check(300, 15, 47, "") // 700 left at 15/s: 46.7 s
	report(10*time.Second, 250)
	check(250, 10, 0, ETADoneDecreasing) // the loader counts again from its last checkpoint
	report(5*time.Second, 250)
	check(250, 300.0/35, 0, ETADoneDecreasing) // the same count is no rise
	report(5*time.Second, 260)
	check(260, 310.0/40, 96, "") // risen: 740 left at 7.75/s
	now = now.Add(2 * time.Minute)
	check(260, 0, 0, ETARateZero)
	report(0, 1000)
	check(1000, 740.0/60, 0, ETATotalReached)

	// Equal totals change nothing; a new one replaces the old.
	if v, err := m.SetTotal("j", Total{UnitItems, 10}); err != nil || v.Progress.Unit != UnitItems || v.Progress.Done != 0 {
		t.Fatalf("replaced total: %+v, %v", v.Progress, err)
	}
	if _, err := m.Complete("j"); err != nil {
		t.Fatal(err)
	}
	if p := mustGet(t, m, "j").Progress; p.ETAUnknown != ETACompleted {
		t.Errorf("completed job's ETA: %q", p.ETAUnknown)
	}
}

// TestJobProgressAcknowledged: bytes and items count what the store
// acknowledged through the proxy, not what the loader reports.
func TestJobProgressAcknowledged(t *testing.T) {
	now := t0
	m := newTestManager(t, Config{Now: func() time.Time { return now }})
	defer m.Close()
	for _, id := range []string{"by-bytes", "by-items"} {
		if _, err := m.Register(id, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.SetTotal("by-bytes", Total{UnitBytes, 10 << 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetTotal("by-items", Total{UnitItems, 40}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(4 * time.Second)
	for _, id := range []string{"by-bytes", "by-items"} {
		_, release, err := m.Admit(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		m.Observe(id, Observation{Kind: ObsOK, Bytes: 2 << 10, Items: 8})
		m.Observe(id, Observation{Kind: ObsThrottled}) // not progress
		release()
		if _, err := m.ReportProgress(id, Progress{Records: 5, Bytes: 9 << 10}); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]struct {
		done int64
		eta  int64
	}{"by-bytes": {2 << 10, 16}, "by-items": {8, 16}} {
		p := mustGet(t, m, id).Progress
		if p.Done != want.done || p.ETASeconds == nil || *p.ETASeconds != want.eta {
			t.Errorf("%s: %+v, want done %d ETA %d s", id, p, want.done, want.eta)
		}
	}
}

// TestTotalSurvivesRestart: the total is in the job's record; a record
// written before totals existed loads without one.
func TestTotalSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := newTestManager(t, Config{Store: st})
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetTotal("j", Total{UnitRecords, 500}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReportProgress("j", Progress{Records: 125}); err != nil {
		t.Fatal(err)
	}
	old := Record{ID: "old", MachineState: MachineState{State: Running, Since: t0, Created: t0}, Totals: Totals{Items: 3}}
	if err := st.Put(old); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	m = newTestManager(t, Config{Store: st})
	defer m.Close()
	p := mustGet(t, m, "j").Progress
	if p == nil || p.Unit != UnitRecords || p.Total != 500 || p.Done != 125 || p.Fraction != 0.25 {
		t.Fatalf("after restart: %+v, want 125 of 500 records", p)
	}
	// The rate window starts again with the process: no ETA until the
	// job moves.
	if p.ETAUnknown != ETARateZero {
		t.Errorf("after restart: ETA unknown %q, want rate_zero", p.ETAUnknown)
	}
	if v := mustGet(t, m, "old"); v.Progress != nil {
		t.Errorf("old record: progress %+v, want none", v.Progress)
	}
}

func TestSetTotalErrors(t *testing.T) {
	m := newTestManager(t, Config{})
	if _, err := m.SetTotal("nope", Total{UnitItems, 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	if _, err := m.Register("j", Settings{}); err != nil {
		t.Fatal(err)
	}
	for _, tot := range []Total{{}, {UnitItems, 0}, {UnitRecords, -1}, {"pages", 3}} {
		if _, err := m.SetTotal("j", tot); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", tot, err)
		}
		if _, err := m.RegisterWithTotal("k", Settings{}, tot); !errors.Is(err, ErrInvalid) {
			t.Errorf("registered with %+v: %v, want ErrInvalid", tot, err)
		}
	}
	if v := mustGet(t, m, "j"); v.Progress != nil {
		t.Errorf("invalid totals left %+v", v.Progress)
	}
	if _, err := m.Get("k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a registration with an invalid total created its job: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetTotal("j", Total{UnitItems, 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v", err)
	}
}

// TestProgressMetrics: live jobs with a total have a progress ratio, and an
// ETA while it is known; jobs without a total and finished jobs have
// neither.
func TestProgressMetrics(t *testing.T) {
	now := t0
	reg := prometheus.NewRegistry()
	m := newTestManager(t, Config{Registerer: reg, Now: func() time.Time { return now }})
	defer m.Close()
	for _, id := range []string{"moving", "waiting", "plain", "done"} {
		if _, err := m.Register(id, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"moving", "waiting", "done"} {
		if _, err := m.SetTotal(id, Total{UnitRecords, 100}); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(5 * time.Second)
	for _, id := range []string{"moving", "done"} {
		if _, err := m.ReportProgress(id, Progress{Records: 25}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Complete("done"); err != nil {
		t.Fatal(err)
	}
	lint(t, reg)
	series := gather(t, reg)
	for k, want := range map[string]float64{
		`sluice_job_progress_ratio{job_id="moving"}`:  0.25,
		`sluice_job_eta_seconds{job_id="moving"}`:     15, // 75 left at 5/s
		`sluice_job_progress_ratio{job_id="waiting"}`: 0,
	} {
		if got, ok := series[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	for _, k := range []string{
		`sluice_job_eta_seconds{job_id="waiting"}`, // rate zero
		`sluice_job_progress_ratio{job_id="plain"}`, `sluice_job_eta_seconds{job_id="plain"}`,
		`sluice_job_progress_ratio{job_id="done"}`, `sluice_job_eta_seconds{job_id="done"}`,
	} {
		if _, ok := series[k]; ok {
			t.Errorf("%s exported", k)
		}
	}
}
