package bench

import (
	"flag"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"
)

var (
	aimdFull    = flag.Bool("aimd", false, "TestAIMDModel: sweep every setting at N = 4, 8, 32 and 64 (default: two settings at N = 8)")
	aimdReps    = flag.Int("aimd-reps", 5, "TestAIMDModel: runs per setting, reported as medians")
	aimdVerbose = flag.Bool("aimd-v", false, "TestAIMDModel: print every setting's medians")
)

// TestAIMDModel runs the idealised-law model (aimdmodel.go) and prints its
// table; with -aimd -update it writes it into BENCHMARKS.md. It asserts
// only that each run produced data; the figures are reported.
//
//	go test ./bench -run TestAIMDModel -v -args -aimd -update
func TestAIMDModel(t *testing.T) {
	if *aimdReps < 1 {
		t.Fatalf("-aimd-reps %d: want at least 1", *aimdReps)
	}
	sizes, laws, reps := []independentBench{independentSizes[1]}, aimdGrid()[:2], 1
	if *aimdFull {
		sizes, laws, reps = independentSizes, aimdGrid(), *aimdReps
	}
	wall := time.Now()
	var rows []modelRow
	for _, how := range []modelStart{startFirst, startSustained, startFair} {
		start := how.String()
		for _, ib := range sizes {
			res := sweepModel(ib, laws, how, reps)
			for _, r := range res {
				if r.share <= 0 {
					t.Fatalf("N=%d %s %s: the store took nothing", ib.n, start, r.name)
				}
				if *aimdVerbose {
					fmt.Printf("start=%s N=%d %s: slowest %.1f%% fastest %.1f%% throttle %.2f%% goodput %.1f%% joiner at 80%% after %s\n",
						start, ib.n, r.name, 100*r.slowest, 100*r.fastest, 100*r.throttle, 100*r.share, r.joinText())
				}
			}
			rows = append(rows, summariseModel(start, ib.n, res))
		}
	}
	md := revision() + modelMarkdown(laws, reps, rows)
	fmt.Printf("\n%s\nwall time %v on %d CPUs\n", md, time.Since(wall).Round(time.Second), runtime.NumCPU())
	if !*updateDoc || !*aimdFull {
		return
	}
	if err := updateSection("../BENCHMARKS.md", "aimdmodel", md); err != nil {
		t.Fatal(err)
	}
}

// Senders held at the fair share (no rise, no cut) get it, the store takes
// all but the Poisson arrivals' spill, and the joiner has its share at
// once: the model's store and senders give the bench's analysis what it
// measures.
func TestModelFairSendersMeasureFair(t *testing.T) {
	ib := independentSizes[1]
	r := analyseIndependent(ib.fleetBench(), "held", runModel(ib, aimdLaw{}, startFair, 1))
	if r.slowest < 0.9 || r.fastest > 1.1 {
		t.Errorf("shares %.3f–%.3f for senders at the fair share, want within 10%%", r.slowest, r.fastest)
	}
	if r.share < 0.95 || r.share > 1.01 {
		t.Errorf("goodput %.3f of capacity, want 0.95–1.01", r.share)
	}
	if r.throttle > 0.05 {
		t.Errorf("throttle ratio %.3f for senders at capacity in total, want a Poisson spill under 5%%", r.throttle)
	}
	if !r.join.ok || r.join.d > time.Second {
		t.Errorf("joiner at 80%% after %v (joined %v), want at once", r.join.d, r.join.ok)
	}
}

// A law that never cuts runs every sender to its writers' cap: the store
// takes no more than its capacity, and refuses the rest.
func TestModelOverloadIsRefused(t *testing.T) {
	ib := independentSizes[1] // 16 writers: 160/s each on 100/s
	r := analyseIndependent(ib.fleetBench(), "greedy", runModel(ib, aimdLaw{rise: 50}, startFirst, 1))
	if r.share > 1.01 {
		t.Errorf("goodput %.3f of capacity, want at most the capacity", r.share)
	}
	if r.throttle < 0.3 {
		t.Errorf("throttle ratio %.3f with every sender at 160/s on 100/s each, want over 0.3", r.throttle)
	}
}

// The bucket holds no more than its burst, however long it idles.
func TestModelBucketHoldsItsBurst(t *testing.T) {
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
func TestModelOneCutPerEpisode(t *testing.T) {
	l := aimdLaw{cut: 0.1, rise: 1, deaf: time.Second}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	s := &modelSender{rate: 80, starting: true, answers: []modelAnswer{
		{at: ms(100), refused: false},
		{at: ms(200), refused: true},  // ends the start: 40
		{at: ms(300), refused: true},  // deaf
		{at: ms(1100), refused: true}, // deaf until 1.2 s
		{at: ms(1300), refused: true}, // a cut: 36
		{at: ms(1400), refused: true}, // deaf
		{at: ms(2400), refused: true}, // not yet known at 2 s
	}}
	for now := time.Duration(0); now <= ms(2000); now += modelStep {
		s.learn(now, 100*time.Millisecond, l) // as runModel does, each step
	}
	if s.starting || s.rate != 36 {
		t.Errorf("rate %v (starting %v), want 36 after the start's halving and one cut", s.rate, s.starting)
	}
	if len(s.answers) != 1 || s.deafUntil != ms(2300) {
		t.Errorf("%d answers left, deaf until %v; want the one not yet known, deaf until 2.3s", len(s.answers), s.deafUntil)
	}
}

// The sustained start lets one refusal, or a burst of them in one dry
// episode, pass; refusals in three episodes within a second end it, back
// at the rate the writes were sent at a latency earlier (the doubling's
// fifth of a period: 2^−0.2), cut once. After it, refusals cut as usual.
func TestModelSustainedStart(t *testing.T) {
	l := aimdLaw{cut: 0.1, rise: 1, deaf: 500 * time.Millisecond}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	s := &modelSender{rate: 100, how: startSustained, starting: true}
	learn := func(at ...int) {
		for _, a := range at {
			s.answers = append(s.answers, modelAnswer{at: ms(a), refused: true})
		}
		s.learn(ms(at[len(at)-1]), 100*time.Millisecond, l)
	}
	learn(100, 120, 150) // one episode
	learn(1300)          // another, but the first is over a second old
	if !s.starting || s.rate != 100 {
		t.Fatalf("rate %v (starting %v) after two episodes a second apart, want 100, still starting", s.rate, s.starting)
	}
	learn(1500, 1550) // a third, but with the 1.3 s one the only two within a second
	if !s.starting {
		t.Fatalf("the start ended on two episodes within a second, want three")
	}
	learn(1700) // the third within a second
	want := 100 * math.Pow(2, -0.2) * 0.9
	if s.starting || math.Abs(s.rate-want) > 1e-9 || s.deafUntil != ms(2200) {
		t.Fatalf("rate %v (starting %v), deaf until %v after three episodes within 0.4 s; want %v, ended, 2.2s", s.rate, s.starting, s.deafUntil, want)
	}
	learn(2100) // deaf
	learn(2300)
	if math.Abs(s.rate-want*0.9) > 1e-9 {
		t.Errorf("rate %v after a refusal in and one past the deaf time, want one cut: %v", s.rate, want*0.9)
	}
}

// The row picks the fairest law among those within the budget, and counts
// the laws that meet every target.
func TestSummariseModel(t *testing.T) {
	ok := convergence{2 * time.Second, true}
	res := []independentRow{
		{name: "unfair", share: 0.99, throttle: 0.005, slowest: 0.6, fastest: 1.3, join: ok},
		{name: "fair but throttles", share: 0.99, throttle: 0.02, slowest: 0.95, fastest: 1.05, join: ok},
		{name: "fairest in budget", share: 0.98, throttle: 0.008, slowest: 0.9, fastest: 1.1, join: ok},
		{name: "in budget, slow joiner", share: 0.98, throttle: 0.008, slowest: 0.88, fastest: 1.12, join: convergence{9 * time.Second, true}},
	}
	m := summariseModel("x", 8, res)
	if m.kept != 3 || m.all != 1 || m.best.name != "fairest in budget" {
		t.Errorf("kept %d, all %d, best %q; want 3, 1, fairest in budget", m.kept, m.all, m.best.name)
	}
	if m := summariseModel("x", 8, res[1:2]); m.kept != 0 || m.all != 0 {
		t.Errorf("one law over the throttle budget: kept %d, all %d; want 0, 0", m.kept, m.all)
	}
	// All but the throttle ratio: the fair law over the budget and the
	// fairest in it; the cheaper of them in throttles.
	if m.cheap != 2 || m.cheapest.name != "fairest in budget" {
		t.Errorf("cheap %d, cheapest %q; want 2, fairest in budget", m.cheap, m.cheapest.name)
	}
	if m := summariseModel("x", 8, res[1:2]); m.cheap != 1 || m.cheapest.name != "fair but throttles" {
		t.Errorf("one fair law over the throttle budget: cheap %d, cheapest %q; want 1, fair but throttles", m.cheap, m.cheapest.name)
	}
	slowPour := res[2]
	slowPour.name, slowPour.share, slowPour.throttle = "fair, quiet, wastes capacity", 0.9, 0.001
	if m := summariseModel("x", 8, append(res, slowPour)); m.cheapest.name != "fairest in budget" {
		t.Errorf("cheapest %q with a law under the goodput target; want fairest in budget", m.cheapest.name)
	}
}
