package main

import (
	"fmt"
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

// printLatency prints a size's paced table: what each sluice adds to the
// bare proxy's latency at the same offered rate.
func printLatency(ts []target, size int, rate float64, res map[string]*tally) {
	b := res["bare"]
	fmt.Printf("\n%s bodies, latency at %.0f%% of the bare proxy's peak (%.0f writes/s offered)\n\n", sizeName(size), 100*latencyRateFrac, rate)
	fmt.Println("| target | writes/s | p50 | p99 | added p50 | added p99 | errors |")
	fmt.Println("|---|---|---|---|---|---|---|")
	var notes []string
	for _, t := range ts {
		r := res[t.name]
		added50, added99 := r.pct(0.5)-b.pct(0.5), r.pct(0.99)-b.pct(0.99)
		a50, a99 := "", ""
		if !t.bare {
			a50, a99 = signedUS(added50), signedUS(added99)
			notes = append(notes, fmt.Sprintf("%s: added p99 %s (target ≤ %v: %s)", t.name, a99, maxAddedP99, verdict(added99 <= maxAddedP99)))
		}
		fmt.Printf("| %s | %.0f | %s | %s | %s | %s | %d |\n", t.name, r.rate(), us(r.pct(0.5)), us(r.pct(0.99)), a50, a99, r.errors)
		if r.errors > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d errors, the first: %s", t.name, r.errors, r.firstErr))
		}
	}
	fmt.Println("\n- " + strings.Join(notes, "\n- "))
}
