package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// The independent-sidecars benchmark: N sidecars of one contender, each
// adapting alone (no shared budget: most users start without Redis), on
// one store of constant capacity, N × 100 requests/s; the last one joins
// late. It measures what fleet mode would otherwise provide: how far the
// slowest and the fastest sidecar are from the fair share, what the store
// throttles, the aggregate goodput, and how soon the late joiner gets 80%
// of its share.

// independentBench is one independent-sidecars scenario.
type independentBench struct {
	n       int
	writers int    // greedy writers per sidecar
	trace   tracer // one sidecar's limit changes and seconds, if asked for
}

// independentSizes are the sizes of the table, each with its writers per
// sidecar: the issue asks for any N from 4 to 64 with 8 to 64 writers.
var independentSizes = []independentBench{{n: 4, writers: 64}, {n: 8, writers: 16}, {n: 32, writers: 32}, {n: 64, writers: 16}}

// fleetBench returns the scenario in the fleet benchmark's terms: no
// kill, the last sidecar joining at 15 s of 35 s, fairness over the last
// 10 s.
func (ib independentBench) fleetBench() fleetBench {
	fb := newFleetBench(ib.n, false)
	fb.writers = ib.writers
	fb.duration, fb.joinAt, fb.killAt = 35*time.Second, 15*time.Second, 35*time.Second
	fb.settle, fb.fairFrom = 5*time.Second, 25*time.Second
	fb.trace = ib.trace
	return fb
}

// Targets of the independent sidecars (issue 20, item 2).
const (
	targetIndepSlowest  = 0.85
	targetIndepFastest  = 1.15
	targetIndepThrottle = 0.01
	targetIndepGoodput  = 0.97
	targetIndepJoin     = 5 * time.Second
)

// independentRow is one contender's figures in one scenario.
type independentRow struct {
	name     string
	share    float64 // aggregate goodput ÷ capacity over [settle, end)
	throttle float64 // store throttle ratio over [settle, end)
	slowest  float64 // slowest sidecar's goodput ÷ fair share over [fairFrom, end)
	fastest  float64 // fastest sidecar's, over the same
	join     convergence
	// othersLow is the share of the 1 s windows over [fairFrom, end) in
	// which a sidecar other than the late joiner got less than the share
	// the joiner must hold (lateJoinFraction): the joiner's criterion met
	// by sidecars that have long been in. Where it is large, the joiner's
	// figure measures the spread as much as the joining.
	othersLow float64
	runs      int
}

// runIndependent runs one contender through ib and measures it.
func runIndependent(ctx context.Context, ib independentBench, c contender) (independentRow, error) {
	fb := ib.fleetBench()
	fc := fleetContender{name: c.name, new: func(fleetBench, *fleetShared) func(env) (client, error) { return c.new }}
	r, err := recordFleet(ctx, fb, fc, &fleetShared{})
	if err != nil {
		return independentRow{}, err
	}
	if fb.trace.w != nil {
		traceSeconds(fb.trace.w, fb.trace.id, r)
	}
	return analyseIndependent(fb, c.name, r), nil
}

// traceSeconds writes, for each second of r, what the store saw of the
// sidecar id beside what it saw of all of them: whether the sidecar draws
// more than its share of the throttles, and how its goodput climbs.
func traceSeconds(w io.Writer, id string, r *run) {
	s, ok := r.clients[id]
	if !ok {
		return
	}
	per := bucketOf(time.Second)
	fmt.Fprintf(w, "%s, per second: goodput, attempts, throttled, throttle ratio; the store's throttle ratio\n", id)
	for from := 0; from+per <= len(s.attempts); from += per {
		var att, thr int64
		for i := from; i < from+per; i++ {
			att, thr = att+s.attempts[i], thr+s.throttled[i]
		}
		if att == 0 {
			continue
		}
		fmt.Fprintf(w, "t=%2ds %s goodput %6.1f attempts %4d throttled %3d (%4.1f%%); store %4.1f%%\n", from/per, id,
			goodputRate(s, from, from+per), att, thr, 100*float64(thr)/float64(att), 100*throttleRatio(r.total, from, from+per))
	}
}

func analyseIndependent(fb fleetBench, name string, r *run) independentRow {
	total := len(r.capacity)
	settle := bucketOf(fb.settle)
	row := independentRow{name: name, share: r.share(r.total, settle, total), throttle: throttleRatio(r.total, settle, total)}
	fair := fb.perMember
	from := bucketOf(fb.fairFrom)
	per := make([]float64, fb.n)
	for i := range fb.n {
		per[i] = goodputRate(r.clients[sidecarID(i)], from, total)
	}
	row.slowest, row.fastest = slices.Min(per)/fair, slices.Max(per)/fair
	late := r.clients[sidecarID(fb.n-1)]
	win := bucketOf(convWindow)
	d, ok := holdsFrom(bucketOf(fb.joinAt), total, func(u int) bool {
		return late.accepted != nil && goodputRate(late, u, u+win) >= lateJoinFraction*fair
	})
	row.join = convergence{d, ok}
	var low, all int
	for i := range fb.n - 1 {
		s := r.clients[sidecarID(i)]
		for u := from; u+win <= total; u++ {
			all++
			if goodputRate(s, u, u+win) < lateJoinFraction*fair {
				low++
			}
		}
	}
	if all > 0 {
		row.othersLow = float64(low) / float64(all)
	}
	return row
}

// medianIndependent folds repeated runs into per-metric medians.
func medianIndependent(rs []independentRow) independentRow {
	pick := func(f func(r independentRow) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return medianOf(xs)
	}
	m := rs[0]
	m.share = pick(func(r independentRow) float64 { return r.share })
	m.throttle = pick(func(r independentRow) float64 { return r.throttle })
	m.slowest = pick(func(r independentRow) float64 { return r.slowest })
	m.fastest = pick(func(r independentRow) float64 { return r.fastest })
	m.othersLow = pick(func(r independentRow) float64 { return r.othersLow })
	cs := make([]convergence, len(rs))
	for i, r := range rs {
		cs[i] = r.join
	}
	m.join = medianConv(cs)
	m.runs = len(rs)
	return m
}

// independentMarkdown renders one table with a block of rows per size,
// and sluice's rows against the targets.
func independentMarkdown(sizes []independentBench, rows map[int][]independentRow) string {
	var b strings.Builder
	fb := sizes[0].fleetBench()
	fmt.Fprintf(&b, "Store: S3 style, capacity %.0f requests/s per sidecar, base latency %v (×1/(1−ρ), at most ×%.0f), burst %v; %v. The last sidecar joins at %v. Aggregate figures over [%v, %v); fairness (each sidecar's goodput ÷ the fair share) over [%v, %v), all sidecars in; the late joiner has its share when a 1 s window of its goodput stays ≥ %.0f%% of the fair share for %v; \"others below %.0f%%\" is the share of the 1 s windows over [%v, %v) in which one of the other sidecars, in since the start, got less than that.\n\n",
		fb.perMember, fb.store.BaseLatency, fb.store.MaxLatencyFactor, fb.store.Burst, fb.duration, fb.joinAt,
		fb.settle, fb.duration, fb.fairFrom, fb.duration, 100*lateJoinFraction, convHold, 100*lateJoinFraction, fb.fairFrom, fb.duration)
	if rs := rows[sizes[0].n]; len(rs) > 0 && rs[0].runs > 1 {
		fmt.Fprintf(&b, "Every figure is the median of %d runs.\n\n", rs[0].runs)
	}
	b.WriteString("| N | writers each | contender | slowest ÷ fair | fastest ÷ fair | throttle ratio | aggregate goodput | late joiner at 80% after | others below 80% |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, ib := range sizes {
		for _, r := range rows[ib.n] {
			fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", ib.n, ib.writers, r.name,
				pct(r.slowest), pct(r.fastest), pct(r.throttle), pct(r.share), r.join, pct(r.othersLow))
		}
	}
	b.WriteString("\nsluice against the targets:\n\n| N | slowest ≥ 85%, fastest ≤ 115% | throttle ≤ 1% | goodput ≥ 97% | late joiner ≤ 5 s |\n|---:|---|---|---|---|\n")
	for _, ib := range sizes {
		for _, r := range rows[ib.n] {
			if r.name != "sluice" {
				continue
			}
			fmt.Fprintf(&b, "| %d | %s, %s %s | %s %s | %s %s | %s %s |\n", ib.n,
				pct(r.slowest), pct(r.fastest), mark(r.slowest >= targetIndepSlowest && r.fastest <= targetIndepFastest),
				pct(r.throttle), mark(r.throttle <= targetIndepThrottle),
				pct(r.share), mark(r.share >= targetIndepGoodput),
				r.join, mark(r.join.ok && r.join.d <= targetIndepJoin))
		}
	}
	return b.String()
}
