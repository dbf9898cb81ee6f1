package storesim

import (
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := NewStore(cfg, t0)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s
}

// offer sends evenly spaced writes at rate per second for d and returns the
// accepted and rejected request counts.
func offer(s *Store, from time.Time, rate float64, d time.Duration, r Request) (accepted, rejected int) {
	n := int(rate * d.Seconds())
	step := time.Duration(float64(time.Second) / rate)
	for i := range n {
		dec := s.Admit(from.Add(time.Duration(i)*step), r)
		if dec.Refused {
			rejected++
		} else {
			accepted++
		}
	}
	return accepted, rejected
}

func TestAdmitHonoursCapacity(t *testing.T) {
	for _, tc := range []struct {
		name       string
		capacity   float64
		offered    float64
		rejectCost float64
		want       float64 // accepted per second
	}{
		// Under capacity: everything goes through.
		{"under", 100, 80, 0.05, 80},
		// 2× overload, free rejections: exactly the capacity.
		{"2x free rejections", 100, 200, -1, 100},
		// 2× overload: a + 0.05·(200−a) = 100 → a ≈ 94.7.
		{"2x costly rejections", 100, 200, 0.05, 100 * 0.9 / 0.95},
		// 10× overload: a + 0.05·(1000−a) = 100 → a ≈ 52.6.
		{"10x costly rejections", 100, 1000, 0.05, 50 / 0.95},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, Config{Schedule: Constant(tc.capacity), RejectCost: tc.rejectCost})
			const secs = 20
			acc, rej := offer(s, t0, tc.offered, secs*time.Second, Request{})
			got := float64(acc) / secs
			if math.Abs(got-tc.want) > 0.03*tc.want {
				t.Errorf("accepted %.1f/s (rejected %d), want %.1f/s ±3%%", got, rej, tc.want)
			}
			st := s.Stats(t0.Add(secs * time.Second))
			if st.Accepted != int64(acc) || st.Throttled != int64(rej) || st.Attempts != int64(acc+rej) {
				t.Errorf("Stats = %+v, want accepted %d throttled %d", st, acc, rej)
			}
		})
	}
}

func TestAdmitFollowsSchedule(t *testing.T) {
	s := newStore(t, Config{Schedule: MustPhases(Steady("a", 10*time.Second, 100), Steady("b", 10*time.Second, 40)), RejectCost: -1})
	acc1, _ := offer(s, t0, 500, 10*time.Second, Request{})
	acc2, _ := offer(s, t0.Add(10*time.Second), 500, 10*time.Second, Request{})
	if math.Abs(float64(acc1)-1000) > 20 || math.Abs(float64(acc2)-400) > 20 {
		t.Errorf("accepted %d then %d, want ≈1000 then ≈400", acc1, acc2)
	}
	s.SetCapacity(t0.Add(20*time.Second), 10)
	if got := s.Capacity(t0.Add(time.Hour)); got != 10 {
		t.Errorf("Capacity after SetCapacity = %v, want 10", got)
	}
}

func TestBurstAllowance(t *testing.T) {
	// A full bucket holds Burst seconds of capacity: 100/s × 200ms = 20.
	s := newStore(t, Config{Schedule: Constant(100), Burst: 200 * time.Millisecond})
	n := 0
	for s.Admit(t0, Request{}).AcceptedItems == 1 {
		n++
		if n > 1000 {
			t.Fatal("burst never ran out")
		}
	}
	if n != 20 {
		t.Errorf("burst admitted %d writes at one instant, want 20", n)
	}
}

func TestLatencyGrowsWithLoad(t *testing.T) {
	cfg := Config{Schedule: Constant(100), BaseLatency: 10 * time.Millisecond, MaxLatencyFactor: 8, RejectCost: -1}
	f := func(rate float64, wantMin, wantMax time.Duration) {
		t.Helper()
		s := newStore(t, cfg)
		offer(s, t0, rate, 10*time.Second, Request{})
		d := s.Admit(t0.Add(10*time.Second), Request{})
		if d.Refused {
			d = s.Admit(t0.Add(10*time.Second+50*time.Millisecond), Request{})
		}
		if d.Latency < wantMin || d.Latency > wantMax {
			t.Errorf("at %v/s latency %v (ρ=%.2f), want in [%v, %v]", rate, d.Latency, d.Utilisation, wantMin, wantMax)
		}
	}
	f(1, 10*time.Millisecond, 11*time.Millisecond)   // idle: base latency
	f(50, 18*time.Millisecond, 22*time.Millisecond)  // ρ≈0.5: twice the base
	f(300, 75*time.Millisecond, 80*time.Millisecond) // saturated: clamped at 8×
}

func TestPartialAdmission(t *testing.T) {
	s := newStore(t, Config{Style: StyleElasticsearch, Unit: Items, Schedule: Constant(100), Burst: 100 * time.Millisecond, RejectCost: -1})
	// The bucket holds 10 items; a 25-item bulk gets 10 in.
	d := s.Admit(t0, Request{Cost: 25, Items: 25})
	if d.AcceptedItems != 10 || d.Refused || !d.Throttled(25) {
		t.Fatalf("first bulk: %+v, want 10 items accepted and the rest throttled", d)
	}
	d = s.Admit(t0, Request{Cost: 25, Items: 25})
	if d.AcceptedItems != 0 || !d.Refused {
		t.Fatalf("second bulk on an empty bucket: %+v, want all rejected", d)
	}
	st := s.Stats(t0)
	if st.Partial != 1 || st.AcceptedItems != 10 || st.RejectedItems != 40 || st.Throttled != 2 {
		t.Errorf("Stats = %+v", st)
	}
	// An all-or-nothing style never splits a request.
	s2 := newStore(t, Config{Style: StyleS3, Unit: Items, Schedule: Constant(100)})
	if d := s2.Admit(t0, Request{Cost: 25, Items: 25}); d.AcceptedItems != 25 {
		t.Errorf("request bigger than the burst on a full bucket: %+v, want accepted (the store goes into debt)", d)
	}
	if d := s2.Admit(t0.Add(100*time.Millisecond), Request{Cost: 1, Items: 1}); !d.Refused {
		t.Errorf("write while in debt: %+v, want refused", d)
	}
}

func TestRetryAfter(t *testing.T) {
	s := newStore(t, Config{Schedule: Constant(2), Burst: time.Second, RejectCost: -1})
	s.Admit(t0, Request{Cost: 2})
	if d := s.Admit(t0, Request{Cost: 2}); d.RetryAfter != time.Second {
		t.Errorf("RetryAfter = %v, want 1s (2 tokens at 2/s)", d.RetryAfter)
	}
	s2 := newStore(t, Config{Schedule: Constant(1), Burst: 4 * time.Second, RejectCost: -1, Unit: Bytes})
	s2.Admit(t0, Request{Cost: 4})
	if d := s2.Admit(t0, Request{Cost: 3}); d.RetryAfter != 3*time.Second {
		t.Errorf("RetryAfter = %v, want 3s", d.RetryAfter)
	}
	s3 := newStore(t, Config{Schedule: Constant(1), RetryAfter: 7 * time.Second})
	s3.Admit(t0, Request{})
	if d := s3.Admit(t0, Request{}); d.RetryAfter != 7*time.Second {
		t.Errorf("fixed RetryAfter = %v, want 7s", d.RetryAfter)
	}
}

func TestOutages(t *testing.T) {
	s := newStore(t, Config{Schedule: Constant(1000)})
	s.SetOutage(Refuse)
	if d := s.Admit(t0, Request{}); !d.Refused || d.AcceptedItems != 0 {
		t.Errorf("Refuse: %+v, want refused", d)
	}
	s.SetOutage(Fail)
	if d := s.Admit(t0, Request{}); d.AcceptedItems != 0 {
		t.Errorf("Fail: %+v, want nothing accepted", d)
	}
	s.SetOutage(Healthy)
	if d := s.Admit(t0, Request{}); d.AcceptedItems != 1 {
		t.Errorf("Healthy: %+v, want accepted", d)
	}
	st := s.Stats(t0)
	if st.Throttled != 1 || st.Failed != 1 || st.Accepted != 1 || st.Outage != "healthy" {
		t.Errorf("Stats = %+v", st)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Schedule: Constant(1), Style: 99},
		{Schedule: Constant(1), Unit: 99},
		{Schedule: Constant(1), MaxConcurrency: -1},
	} {
		if _, err := NewStore(cfg, t0); err == nil {
			t.Errorf("NewStore(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestLatencyJitter(t *testing.T) {
	s := newStore(t, Config{Schedule: Constant(1e6), BaseLatency: 100 * time.Millisecond, LatencyJitter: 0.2, Seed: 7})
	lo, hi := time.Hour, time.Duration(0)
	for i := range 1000 {
		d := s.Admit(t0.Add(time.Duration(i)*time.Second), Request{}) // idle: ρ≈0
		lo, hi = min(lo, d.Latency), max(hi, d.Latency)
	}
	if lo < 80*time.Millisecond || hi > 120*time.Millisecond || hi-lo < 30*time.Millisecond {
		t.Errorf("latencies in [%v, %v], want spread over most of [80ms, 120ms]", lo, hi)
	}
	if _, err := NewStore(Config{Schedule: Constant(1), LatencyJitter: 1.5}, t0); err == nil {
		t.Error("LatencyJitter 1.5 accepted, want an error")
	}
}
