package main

import (
	"strings"
	"testing"
	"time"
)

// Senders held at the fair share (no rise, no cut) get it, the store takes
// all but the Poisson arrivals' spill, and the joiner has its share at
// once: the figures measure what they say.
func TestFairSendersMeasureFair(t *testing.T) {
	sc := benchScenario(8)
	sc.oracle = true
	o := run(sc, law{}, 1)
	if o.slowest < 0.9 || o.fastest > 1.1 {
		t.Errorf("shares %.3f–%.3f for senders at the fair share, want within 10%%", o.slowest, o.fastest)
	}
	if o.goodput < 0.95 || o.goodput > 1.01 {
		t.Errorf("goodput %.3f of capacity, want 0.95–1.01", o.goodput)
	}
	if o.throttle > 0.05 {
		t.Errorf("throttle ratio %.3f for senders at capacity in total, want a Poisson spill under 5%%", o.throttle)
	}
	if !o.joined || o.join > time.Second {
		t.Errorf("joiner at 80%% after %v (joined %v), want at once", o.join, o.joined)
	}
}

// A law that never cuts runs every sender to its writers' cap: the bucket
// still takes no more than its capacity, and refuses the rest.
func TestBucketCapsGoodput(t *testing.T) {
	sc := benchScenario(4)
	o := run(sc, law{rise: 50}, 1)
	if o.goodput > 1.01 {
		t.Errorf("goodput %.3f of capacity, want at most the capacity", o.goodput)
	}
	// 4 × 160 offered on 400: over a third refused.
	if o.throttle < 0.3 {
		t.Errorf("throttle ratio %.3f with every sender at 160/s on 100/s each, want over 0.3", o.throttle)
	}
}

// The joiner's time is the start of the first 1 s window that begins 3 s
// of windows at 80% of its share, counted from its joining.
func TestJoinMeasuredAsTheBench(t *testing.T) {
	sc := benchScenario(2)
	buckets := int(sc.duration / bucket)
	full := func() []float64 {
		v := make([]float64, buckets)
		for i := range v {
			v[i] = sc.perShare * bucket.Seconds()
		}
		return v
	}
	joiner := &sender{taken: make([]float64, buckets)}
	at := int((sc.joinAt + 4*time.Second) / bucket) // 4 s after joining…
	for i := at; i < buckets; i++ {
		joiner.taken[i] = sc.perShare * bucket.Seconds()
	}
	// …and a gap of 0.3 s 2.5 s in: the windows that hold all of it get
	// 70% and break the first run of good windows (3.8 s to 5.5 s in,
	// counting those that begin 0.2 s early, with 80%).
	for i := at + 25; i < at+28; i++ {
		joiner.taken[i] = 0
	}
	o := measure(sc, []*sender{{taken: full()}, joiner}, 100, 1, 99)
	// Windows from 2.6 s after at (two buckets of the gap, 80%) hold to
	// the end: the first at 4 s + 2.6 s.
	if want := 6600 * time.Millisecond; !o.joined || o.join != want {
		t.Errorf("join %v (joined %v), want %v", o.join, o.joined, want)
	}
	if o.throttle != 0.01 {
		t.Errorf("throttle %v, want 0.01", o.throttle)
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct{ ns, cuts, rises, deafs, want string }{
		{"1", "0.1", "1", "1s", "-n"},
		{"4,x", "0.1", "1", "1s", "-n"},
		{"4", "1", "1", "1s", "-cut"},
		{"4", "0.1", "0", "1s", "-rise"},
		{"4", "0.1", "1", "-1s", "-deaf"},
	} {
		if _, err := parseGrid(tc.ns, tc.cuts, tc.rises, tc.deafs); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("parseGrid(%q, %q, %q, %q) = %v, want an error naming %s", tc.ns, tc.cuts, tc.rises, tc.deafs, err, tc.want)
		}
	}
	g, err := parseGrid("4,8", "0.05,0.1", "1", "500ms,1s")
	if err != nil || len(g.ns) != 2 || len(g.laws) != 4 {
		t.Errorf("parseGrid of a 2 × 2 × 1 × 2 grid = %+v, %v, want 2 sizes and 4 laws", g, err)
	}
}
