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

// A law that never cuts runs every sender to its writers' cap: the store
// takes no more than its capacity, and refuses the rest.
func TestOverloadIsRefused(t *testing.T) {
	sc := benchScenario(8)
	o := run(sc, law{rise: 50}, 1)
	if o.goodput > 1.01 {
		t.Errorf("goodput %.3f of capacity, want at most the capacity", o.goodput)
	}
	// 8 × 160 offered on 800: over a third refused.
	if o.throttle < 0.3 {
		t.Errorf("throttle ratio %.3f with every sender at 160/s on 100/s each, want over 0.3", o.throttle)
	}
}

// The bucket holds no more than its burst, however long it idles.
func TestBucketHoldsItsBurst(t *testing.T) {
	b := newTokenBucket(100, 100*time.Millisecond)
	b.refill(time.Minute)
	n := 0
	for b.take() {
		n++
	}
	if n != 10 {
		t.Errorf("took %d writes after a minute idle, want the burst: 10", n)
	}
	b.refill(50 * time.Millisecond)
	if n := b.tokens; n != 5 {
		t.Errorf("%.1f tokens 50 ms after it ran dry, want 5", n)
	}
}

// A sender cuts once per episode: refusals within its deaf time are the
// same news; one after it is a new cut. Its start ends at its first
// refusal, halved.
func TestOneCutPerEpisode(t *testing.T) {
	l := law{cut: 0.1, rise: 1, deaf: time.Second}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	s := &sender{rate: 80, starting: true, answers: []answer{
		{at: ms(100), refused: false},
		{at: ms(200), refused: true},  // ends the start: 40
		{at: ms(300), refused: true},  // deaf
		{at: ms(1100), refused: true}, // deaf until 1.2 s
		{at: ms(1300), refused: true}, // a cut: 36
		{at: ms(1400), refused: true}, // deaf
		{at: ms(2400), refused: true}, // not yet known at 2 s
	}}
	for now := time.Duration(0); now <= ms(2000); now += step {
		s.learn(now, l) // as run does, each step
	}
	if s.starting || s.rate != 36 {
		t.Errorf("rate %v (starting %v), want 36 after the start's halving and one cut", s.rate, s.starting)
	}
	if len(s.answers) != 1 || s.deafUntil != ms(2300) {
		t.Errorf("%d answers left, deaf until %v; want the one not yet known, deaf until 2.3s", len(s.answers), s.deafUntil)
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
	// 70% and break the first run of good windows (those starting 3.8 s
	// to 5.5 s in, counting the two that begin early with 80%: one short
	// of the 21 starts, 3 s of windows, that make a join).
	for i := at + 25; i < at+28; i++ {
		joiner.taken[i] = 0
	}
	o := measure(sc, []*sender{{taken: full()}, joiner}, 100, 1, 99)
	// Windows from 2.6 s after at (two buckets of the gap, 80%) hold to
	// the end: the first at 4 s + 2.6 s.
	if want := 6600 * time.Millisecond; !o.joined || o.join != want {
		t.Errorf("join %v (joined %v), want %v", o.join, o.joined, want)
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct{ ns, cuts, rises, deafs, want string }{
		{"1", "0.1", "1", "1s", "-n"},
		{"4,x", "0.1", "1", "1s", "-n"},
		{"4,100000", "0.1", "1", "1s", "-n"},
		{"4", "1", "1", "1s", "-cut"},
		{"4", "0.1", "0", "1s", "-rise"},
		{"4", "0.1", "1", "-1s", "-deaf"},
		{"4", "NaN", "1", "1s", "-cut"},
		{"4", "0.1", "NaN", "1s", "-rise"},
	} {
		if _, err := parseGrid(tc.ns, tc.cuts, tc.rises, tc.deafs); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("parseGrid(%q, %q, %q, %q) = %v, want an error naming %s", tc.ns, tc.cuts, tc.rises, tc.deafs, err, tc.want)
		}
	}
	if err := checkReps(0, nil); err == nil || !strings.HasPrefix(err.Error(), "-reps") {
		t.Errorf("checkReps(0) = %v, want an error naming -reps", err)
	}
	if err := checkReps(3, []string{"8"}); err == nil {
		t.Error("checkReps with a stray argument: no error, want one")
	}
	g, err := parseGrid("4,8", "0.05,0.1", "1", "500ms,1s")
	if err != nil || len(g.ns) != 2 || len(g.laws) != 4 {
		t.Errorf("parseGrid of a 2 × 2 × 1 × 2 grid = %+v, %v, want 2 sizes and 4 laws", g, err)
	}
}
