// Command aimdmodel asks whether any law that learns of the other sidecars
// only through its own throttles can meet the independent-sidecar targets
// on the store of the bench's independent scenario, once every friction of
// a real sidecar is taken away. The targets: every sidecar within 85–115%
// of its fair share, at most 1% of writes throttled, 97% of the capacity
// used, and a late joiner at 80% of its share within 5 s. Without a shared
// budget (fleet mode) the sidecars' own throttles are all they learn of
// each other; the model separates what that limits from what sluice's law
// does with it.
//
// The model keeps only what the argument needs: N senders, each a
// Poisson process at its own rate, on one token bucket of N × 100
// requests/s with a 100 ms burst, each learning of a refusal 100 ms after
// it sent (the saturated store's latency; the latency itself carries no
// news, as in the simulator, where it is pinned from 90% utilisation).
// Their law is the ideal one for fairness, Chiu and Jain's: every sender
// climbs by the same absolute step (requests/s per second) and cuts by a
// fraction at a throttle, then ignores throttles for a while, so that one
// episode of the bucket running dry costs one cut. Nothing else: no
// slots, no latency finding, no capacity probe, no startup beyond
// doubling until the first throttle (or, with the oracle start, every
// sender starting at its fair share, the joiner too). A sender carries at
// most what the bench's greedy writers can, one write each per 100 ms.
//
// It runs a grid of cuts, steps and deaf times at each N, the same figures
// as the bench (bench.TestIndependentSideBySide) over the same windows,
// medians of -reps runs, and prints for each N and start: how many
// settings keep the throttle and goodput targets, the fairest of them,
// and whether any setting meets every target.
//
//	go run ./bench/aimdmodel [-n 4,8,32,64] [-reps 5] [-v]
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The targets, as the bench states them.
const (
	targetSlowest  = 0.85
	targetFastest  = 1.15
	targetThrottle = 0.01
	targetGoodput  = 0.97
	targetJoin     = 5 * time.Second
)

func main() {
	ns := flag.String("n", "4,8,32,64", "sender counts")
	cuts := flag.String("cut", "0.02,0.05,0.1,0.2,0.3", "multiplicative decreases to try")
	rises := flag.String("rise", "1,2,4,8,16", "additive increases to try, requests/s per second")
	deafs := flag.String("deaf", "250ms,500ms,1s,2s", "times a sender ignores throttles after a cut")
	reps := flag.Int("reps", 5, "runs of each setting (medians are reported)")
	seed := flag.Int64("seed", 1, "the first run's seed")
	verbose := flag.Bool("v", false, "print every setting's medians")
	flag.Parse()
	g, err := parseGrid(*ns, *cuts, *rises, *deafs)
	if err == nil {
		err = checkReps(*reps, flag.Args())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "aimdmodel:", err)
		os.Exit(2)
	}
	fmt.Printf("model: N senders on a token bucket of N × 100 requests/s, burst 100 ms, refusals known after 100 ms; 35 s, the last sender joining at 15 s\n")
	fmt.Printf("law: +rise requests/s per second, ×(1−cut) at a throttle, then deaf to throttles for deaf; %d settings, medians of %d runs\n\n", len(g.laws), *reps)
	fmt.Println("| start | N | settings at ≤ 1% throttles and ≥ 97% goodput | fairest of them (cut, rise, deaf) | slowest ÷ fair | fastest ÷ fair | throttle | goodput | joiner at 80% after | settings meeting every target |")
	fmt.Println("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, oracle := range []bool{false, true} {
		for _, n := range g.ns {
			sc := benchScenario(n)
			sc.oracle = oracle
			res := sweep(sc, g.laws, *reps, *seed)
			if *verbose {
				for i, l := range g.laws {
					fmt.Fprintf(os.Stderr, "start=%s N=%d %s: %s\n", startName(oracle), n, lawName(l), res[i])
				}
			}
			fmt.Println(summaryRow(startName(oracle), n, g.laws, res))
		}
	}
}

func checkReps(reps int, args []string) error {
	if reps < 1 {
		return fmt.Errorf("-reps %d: want at least 1", reps)
	}
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q: every setting is a flag", args)
	}
	return nil
}

// maxSenders bounds -n: the bench's largest N is 64, and a run's time
// and memory grow with N.
const maxSenders = 1024

type grid struct {
	ns   []int
	laws []law
}

func parseGrid(ns, cuts, rises, deafs string) (grid, error) {
	var g grid
	for _, s := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 || n > maxSenders {
			return g, fmt.Errorf("-n %q: want sender counts from 2 to %d, comma-separated", ns, maxSenders)
		}
		g.ns = append(g.ns, n)
	}
	cs, err := floats("-cut", cuts, 0, 1)
	if err != nil {
		return g, err
	}
	rs, err := floats("-rise", rises, 0, 1e6)
	if err != nil {
		return g, err
	}
	var ds []time.Duration
	for _, s := range strings.Split(deafs, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return g, fmt.Errorf("-deaf %q: want non-negative durations, comma-separated", deafs)
		}
		ds = append(ds, d)
	}
	for _, c := range cs {
		for _, r := range rs {
			for _, d := range ds {
				g.laws = append(g.laws, law{cut: c, rise: r, deaf: d})
			}
		}
	}
	return g, nil
}

// floats parses a comma-separated list of numbers in (lo, hi).
func floats(name, list string, lo, hi float64) ([]float64, error) {
	var out []float64
	for _, s := range strings.Split(list, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || !(v > lo && v < hi) { // NaN is neither

			return nil, fmt.Errorf("%s %q: want numbers above %g and below %g, comma-separated", name, list, lo, hi)
		}
		out = append(out, v)
	}
	return out, nil
}

// sweep runs every law reps times on sc, on all CPUs, and returns each
// law's medians.
func sweep(sc scenario, laws []law, reps int, seed int64) []outcome {
	runs := make([][]outcome, len(laws))
	for i := range runs {
		runs[i] = make([]outcome, reps)
	}
	type job struct{ li, rep int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				runs[j.li][j.rep] = run(sc, laws[j.li], seed+int64(j.rep))
			}
		}()
	}
	for li := range laws {
		for rep := range reps {
			jobs <- job{li, rep}
		}
	}
	close(jobs)
	wg.Wait()
	out := make([]outcome, len(laws))
	for i, rs := range runs {
		out[i] = medianOutcome(rs)
	}
	return out
}

// medianOutcome takes each figure's median as the bench does (the mean of
// the middle two for an even count); the joiner's time counts a run in
// which it never held its share as longer than any other, and is never
// when half the runs or more never held it.
func medianOutcome(rs []outcome) outcome {
	med := func(f func(outcome) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	join := med(func(o outcome) float64 {
		if !o.joined {
			return math.Inf(1)
		}
		return float64(o.join)
	})
	o := outcome{
		slowest:     med(func(o outcome) float64 { return o.slowest }),
		fastest:     med(func(o outcome) float64 { return o.fastest }),
		joinerShare: med(func(o outcome) float64 { return o.joinerShare }),
		throttle:    med(func(o outcome) float64 { return o.throttle }),
		goodput:     med(func(o outcome) float64 { return o.goodput }),
	}
	if !math.IsInf(join, 1) {
		o.join, o.joined = time.Duration(join), true
	}
	return o
}

// keepsBudget: the throttle and goodput targets, the two a law can meet
// without any fairness (a static limit at the fair share keeps them); the
// fairest of the laws that keep them is the question.
func (o outcome) keepsBudget() bool {
	return o.throttle <= targetThrottle && o.goodput >= targetGoodput
}

func (o outcome) meetsAll() bool {
	return o.keepsBudget() && o.slowest >= targetSlowest && o.fastest <= targetFastest && o.joined && o.join <= targetJoin
}

// spread is how far the worst sender is from its fair share.
func (o outcome) spread() float64 { return max(1-o.slowest, o.fastest-1) }

func (o outcome) String() string {
	join := "never"
	if o.joined {
		join = fmt.Sprintf("%.1fs", o.join.Seconds())
	}
	return fmt.Sprintf("slowest %.1f%% fastest %.1f%% (joiner %.1f%%) throttle %.2f%% goodput %.1f%% joiner at 80%% after %s",
		100*o.slowest, 100*o.fastest, 100*o.joinerShare, 100*o.throttle, 100*o.goodput, join)
}

func startName(oracle bool) string {
	if oracle {
		return "at the fair share"
	}
	return "doubling"
}

func lawName(l law) string {
	return fmt.Sprintf("%g%%, %g/s², %v", 100*l.cut, l.rise, l.deaf)
}

// summaryRow is one table row: the fairest law among those that keep the
// throttle and goodput targets, and how many laws meet every target.
func summaryRow(start string, n int, laws []law, res []outcome) string {
	best, kept, all := -1, 0, 0
	for i, o := range res {
		if o.meetsAll() {
			all++
		}
		if !o.keepsBudget() {
			continue
		}
		kept++
		if best < 0 || o.spread() < res[best].spread() {
			best = i
		}
	}
	if best < 0 {
		return fmt.Sprintf("| %s | %d | 0 of %d | | | | | | | %d |", start, n, len(laws), all)
	}
	o := res[best]
	join := "never"
	if o.joined {
		join = fmt.Sprintf("%.1fs", o.join.Seconds())
	}
	return fmt.Sprintf("| %s | %d | %d of %d | %s | %.1f%% | %.1f%% | %.2f%% | %.1f%% | %s | %d |",
		start, n, kept, len(laws), lawName(laws[best]), 100*o.slowest, 100*o.fastest, 100*o.throttle, 100*o.goodput, join, all)
}
