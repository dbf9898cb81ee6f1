package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Targets sluice is held to, against the bare proxy in the same run.
const (
	smallMax        = 4 << 10 // bodies up to this size are "small"
	largeMin        = 1 << 20 // and from this size "large" (streamed)
	maxCPURatio     = 1.15    // small: CPU per write
	minRateRatio    = 0.90    // small: writes/s
	minBytesRatio   = 0.97    // large: bytes/s
	maxAddedP99     = 200 * time.Microsecond
	latencyRateFrac = 0.5 // of the bare proxy's peak, for the latency phase
)

func us(d time.Duration) string {
	return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
}

func signedUS(d time.Duration) string {
	return fmt.Sprintf("%+.0fµs", float64(d)/float64(time.Microsecond))
}

// verdict marks a ratio against its target.
func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

// printPeak prints a size's closed-loop table, each sluice row as ratios
// to the bare proxy's row of the same run.
func printPeak(ts []target, size int, res map[string]*tally, cfg config) {
	b := res["bare"]
	fmt.Printf("\n%s bodies, peak: %d writers, closed loop; × bare: median of the rounds' ratios (lowest–highest)\n\n", sizeName(size), cfg.writers)
	fmt.Println("| target | writes/s | MiB/s | CPU/write | CPU × bare | throughput × bare | p50 | p99 | errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var notes []string
	for _, t := range ts {
		r := res[t.name]
		cpuX, cpuLo, cpuHi := ratio(r, b, round.cpuPerWrite)
		rateX, rateLo, rateHi := ratio(r, b, round.bytesPerSec)
		fmt.Printf("| %s | %.0f | %.1f | %s | %.2f (%.2f–%.2f) | %.2f (%.2f–%.2f) | %s | %s | %d |\n", t.name, r.rate(), r.bytesPerSec()/(1<<20),
			us(r.cpuPerWrite()), cpuX, cpuLo, cpuHi, rateX, rateLo, rateHi, us(r.pct(0.5)), us(r.pct(0.99)), r.errors)
		if r.errors > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d errors, the first: %s", t.name, r.errors, r.firstErr))
		}
		if t.bare {
			continue
		}
		switch {
		case size <= smallMax:
			notes = append(notes, fmt.Sprintf("%s: CPU/write %.2f× bare (target ≤ %.2f: %s), writes/s %.2f× (target ≥ %.2f: %s)",
				t.name, cpuX, maxCPURatio, verdict(cpuX <= maxCPURatio), rateX, minRateRatio, verdict(rateX >= minRateRatio)))
		case size >= largeMin:
			notes = append(notes, fmt.Sprintf("%s: bytes/s %.2f× bare (target ≥ %.2f: %s)",
				t.name, rateX, minBytesRatio, verdict(rateX >= minBytesRatio)))
		}
	}
	if len(notes) > 0 {
		fmt.Println("\n- " + strings.Join(notes, "\n- "))
	}
}

// bootstrapIters is the resamples of a bootstrap interval; bootstrapSeed
// makes the interval a function of the measurements alone.
const (
	bootstrapIters = 4000
	bootstrapSeed  = 20
)

// pairedAdded is, cycle by cycle, what target t's block adds to target
// ref's block of the same cycle at quantile q (ref 0: the bare proxy).
func pairedAdded(blocks []pacedBlock, t, ref int, q float64) []time.Duration {
	bare := make(map[int]time.Duration)
	for _, b := range blocks {
		if b.Target == ref && len(b.LatNS) > 0 {
			bare[b.Cycle] = quantile(b.LatNS, q)
		}
	}
	var d []time.Duration
	for _, b := range blocks {
		if b.Target == t {
			if ref, ok := bare[b.Cycle]; ok && len(b.LatNS) > 0 {
				d = append(d, quantile(b.LatNS, q)-ref)
			}
		}
	}
	return d
}

// medianOf is the median of ds, which it sorts.
func medianOf(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}

// medianInterval is the median of ds and its 95 % percentile-bootstrap
// interval: the pairs resampled with replacement, the median of each
// resample, their 2.5th and 97.5th percentiles.
func medianInterval(ds []time.Duration) (med, lo, hi time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	med = medianOf(slices.Clone(ds))
	rng := rand.New(rand.NewPCG(bootstrapSeed, uint64(len(ds))))
	meds := make([]time.Duration, bootstrapIters)
	re := make([]time.Duration, len(ds))
	for i := range meds {
		for j := range re {
			re[j] = ds[rng.IntN(len(ds))]
		}
		meds[i] = medianOf(re)
	}
	slices.Sort(meds)
	return med, meds[bootstrapIters*25/1000], meds[bootstrapIters*975/1000-1]
}

// latencyVerdict judges an added p99's interval against maxAddedP99: met
// only if all of it is at or below the target, missed only if all of it
// is above, and otherwise says it cannot tell.
func latencyVerdict(lo, hi time.Duration) string {
	switch {
	case hi <= maxAddedP99:
		return "met"
	case lo > maxAddedP99:
		return "MISSED"
	}
	return fmt.Sprintf("undecided (95%% interval %s…%s holds %v, %s wide)", signedUS(lo), signedUS(hi), maxAddedP99, us(hi-lo))
}

// printLatency prints a size's paced table: what each sluice adds to the
// bare proxy's latency at the same offered rate, pair by pair.
func printLatency(ts []target, spec pacedSpec, blocks []pacedBlock) {
	fmt.Printf("\n%s bodies, latency at %.0f%% of the bare proxy's peak: %.0f writes/s offered, open loop (latency from each write's scheduled send), %d cycles of a %v block per target\n\n",
		sizeName(spec.Size), 100*latencyRateFrac, spec.Rate, spec.Cycles, spec.Block)
	fmt.Println("| target | writes | pooled p50 | pooled p99 | pacer lag p99 | added p50: median of pairs [95% CI] | added p99: median of pairs [95% CI] (lowest–highest) | errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	var notes []string
	for i, t := range ts {
		var lat, lag []int64
		var writes, errs int64
		firstErr := ""
		for _, b := range blocks {
			if b.Target != i {
				continue
			}
			lat, lag = append(lat, b.LatNS...), append(lag, b.LagNS...)
			writes, errs = writes+b.Writes, errs+b.Errors
			if firstErr == "" {
				firstErr = b.FirstErr
			}
		}
		a50, a99 := "", ""
		if !t.bare {
			d50, d99 := pairedAdded(blocks, i, 0, 0.5), pairedAdded(blocks, i, 0, 0.99)
			m50, lo50, hi50 := medianInterval(d50)
			m99, lo99, hi99 := medianInterval(d99)
			slices.Sort(d99)
			a50 = fmt.Sprintf("%s [%s, %s]", signedUS(m50), signedUS(lo50), signedUS(hi50))
			a99 = fmt.Sprintf("%s [%s, %s] (%s–%s)", signedUS(m99), signedUS(lo99), signedUS(hi99), signedUS(d99[0]), signedUS(d99[len(d99)-1]))
			notes = append(notes, fmt.Sprintf("%s: added p99 %s, 95%% interval [%s, %s] over %d pairs (target ≤ %v): %s",
				t.name, signedUS(m99), signedUS(lo99), signedUS(hi99), len(d99), maxAddedP99, latencyVerdict(lo99, hi99)))
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s | %d |\n", t.name, writes, us(quantile(lat, 0.5)), us(quantile(lat, 0.99)),
			us(quantile(lag, 0.99)), a50, a99, errs)
		if errs > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d errors, the first: %s", t.name, errs, firstErr))
		}
	}
	// A base build against this one directly, pair by pair: the change's
	// own effect, without the bare proxy's blocks in between.
	for i := 2; i < len(ts); i++ {
		m50, lo50, hi50 := medianInterval(pairedAdded(blocks, 1, i, 0.5))
		m99, lo99, hi99 := medianInterval(pairedAdded(blocks, 1, i, 0.99))
		notes = append(notes, fmt.Sprintf("%s against %s, pair by pair: p50 %s [%s, %s], p99 %s [%s, %s]",
			ts[1].name, ts[i].name, signedUS(m50), signedUS(lo50), signedUS(hi50), signedUS(m99), signedUS(lo99), signedUS(hi99)))
	}
	fmt.Println("\n- " + strings.Join(notes, "\n- "))
}
