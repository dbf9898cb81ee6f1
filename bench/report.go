package bench

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Targets from the issue; sluice is marked against them.
const (
	targetShare          = 0.95
	targetSteadyThrottle = 0.01
	targetConvHalf       = 2 * time.Second
	targetConvRise       = 5 * time.Second
	targetJain           = 0.95
	targetFleetShare     = 0.95
	lateJoinFraction     = 0.8 // the late joiner "has its share" at 80% of the fair share
)

// convergence is a time to converge, or never.
type convergence struct {
	d  time.Duration
	ok bool
}

func (c convergence) String() string {
	if !c.ok {
		return "never"
	}
	return fmt.Sprintf("%.1fs", c.d.Seconds())
}

// singleResult is one contender's run through the schedule.
type singleResult struct {
	name           string
	share          float64
	phaseShare     [numPhases]float64
	throttle       float64
	steadyThrottle float64
	p50, p99       time.Duration
	convStart      convergence
	convHalf       convergence
	convRise       convergence
	okWrites       int64
	failedWrites   int64
	// per second, for the plot
	capacity, sendRate, goodput []float64
	limit                       []float64 // the contender's own rate limit, if it reports one
	// over repeated runs (medianSingle)
	runs               int
	scoreMin, scoreMax float64
}

// score is goodput share × (1 − throttle ratio).
func (r singleResult) score() float64 { return r.share * (1 - r.throttle) }

func analyseSingle(name string, s scenario, r *run) singleResult {
	sched := s.schedule()
	total := len(r.capacity)
	res := singleResult{
		name:         name,
		share:        r.share(r.total, 0, total),
		throttle:     throttleRatio(r.total, 0, total),
		p50:          percentile(r.writes.latency, 0.50),
		p99:          percentile(r.writes.latency, 0.99),
		okWrites:     r.writes.ok,
		failedWrites: r.writes.failed,
	}
	var steadyAtt, steadyThr int64
	for i := range numPhases {
		_, start := sched.Phase(i)
		p, _ := sched.Phase(i)
		from, to := bucketOf(start), bucketOf(start+p.Duration)
		res.phaseShare[i] = r.share(r.total, from, to)
		if p.From == p.To { // flat phase
			for j := from + bucketOf(s.settle); j < to; j++ {
				steadyAtt += r.total.attempts[j]
				steadyThr += r.total.throttled[j]
			}
		}
	}
	if steadyAtt > 0 {
		res.steadyThrottle = float64(steadyThr) / float64(steadyAtt)
	}
	conv := func(phase int) convergence {
		p, start := sched.Phase(phase)
		d, ok := r.converge(r.total, bucketOf(start), bucketOf(start+p.Duration))
		return convergence{d, ok}
	}
	res.convStart, res.convHalf, res.convRise = conv(phaseC), conv(phaseHalf), conv(phaseDouble)
	res.capacity, res.sendRate, res.goodput = perSecond(r)
	res.limit = r.limit
	return res
}

// perSecond aggregates a run's totals into 1s points.
func perSecond(r *run) (capacity, send, good []float64) {
	per := bucketOf(time.Second)
	for i := 0; i+per <= len(r.capacity); i += per {
		var c, a, g float64
		for j := i; j < i+per; j++ {
			c += r.capacity[j]
			a += float64(r.total.attempts[j])
			g += r.total.accepted[j]
		}
		capacity = append(capacity, c/float64(per))
		send = append(send, a)
		good = append(good, g)
	}
	return capacity, send, good
}

// fleetResult is one contender's fleet run.
type fleetResult struct {
	name     string
	share    float64 // aggregate goodput ÷ capacity over the whole run
	jain     float64 // over [fleetJainFrom, end) of per-instance goodput
	throttle float64
	lateJoin convergence
	perInst  []float64 // goodput/s per instance over the Jain interval
	// over repeated runs (medianFleet)
	jainMin, jainMax float64
}

func analyseFleet(name string, s scenario, r *run) fleetResult {
	total := len(r.capacity)
	res := fleetResult{name: name, share: r.share(r.total, 0, total), throttle: throttleRatio(r.total, 0, total)}
	from := bucketOf(s.fleetJainFrom)
	for i := range s.fleetSize {
		g := goodputRate(r.clients[fmt.Sprintf("i%d", i)], from, total)
		res.perInst = append(res.perInst, g)
	}
	res.jain = jain(res.perInst)
	late := r.clients[fmt.Sprintf("i%d", s.fleetSize-1)]
	fair := s.fleetCapacity / float64(s.fleetSize)
	win := bucketOf(convWindow)
	d, ok := holdsFrom(bucketOf(s.fleetJoinAt), total, func(u int) bool {
		return late.accepted != nil && goodputRate(late, u, u+win) >= lateJoinFraction*fair
	})
	res.lateJoin = convergence{d, ok}
	return res
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}

func mark(ok bool) string {
	if ok {
		return "✅ met"
	}
	return "❌ missed"
}

// markdown renders the results and sluice's targets.
func markdown(s scenario, singles []singleResult, fleets []fleetResult) string {
	var b strings.Builder
	sched := s.schedule()
	if len(singles) > 0 && singles[0].runs > 1 {
		fmt.Fprintf(&b, "Every figure is the median of %d runs (ranges: lowest–highest).\n\n", singles[0].runs)
	}
	fmt.Fprintf(&b, "Store: %s style, capacity C = %.0f requests/s, base latency %v (×1/(1−ρ), at most ×%.0f), burst %v, rejections cost %.0f%% of a write; loader: %d greedy writers per instance; phases of %v.\n\n",
		s.style, s.capacity, s.store.BaseLatency, s.store.MaxLatencyFactor, s.store.Burst, 100*s.store.RejectCost, s.writers, s.phase)

	b.WriteString("| contender | goodput share | ")
	for i := range numPhases {
		p, _ := sched.Phase(i)
		fmt.Fprintf(&b, "%s | ", p.Name)
	}
	b.WriteString("throttle ratio | steady throttle | p50 | p99 | converge: start | after ÷2 | after ×4 | failed writes | share×(1−throttle) | its range |\n")
	b.WriteString("|---|---:|" + strings.Repeat("---:|", numPhases) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range singles {
		fmt.Fprintf(&b, "| %s | %s | ", r.name, pct(r.share))
		for _, v := range r.phaseShare {
			fmt.Fprintf(&b, "%s | ", pct(v))
		}
		fmt.Fprintf(&b, "%s | %s | %s | %s | %s | %s | %s | %d | %.3f | %.3f–%.3f |\n",
			pct(r.throttle), pct(r.steadyThrottle), ms(r.p50), ms(r.p99), r.convStart, r.convHalf, r.convRise, r.failedWrites, r.score(), r.scoreMin, r.scoreMax)
	}

	fmt.Fprintf(&b, "\nFleet: %d instances of each contender on one store of constant capacity %.0f requests/s for %v; the last instance joins at %v. Jain's index over per-instance goodput in [%v, %v); the late joiner has its share when its goodput stays ≥ %.0f%% of the fair share (%.0f/s) for %v.\n\n",
		s.fleetSize, s.fleetCapacity, s.fleetDuration, s.fleetJoinAt, s.fleetJainFrom, s.fleetDuration, 100*lateJoinFraction, s.fleetCapacity/float64(s.fleetSize), convHold)
	b.WriteString("| contender | aggregate goodput share | Jain's index | its range | throttle ratio | late joiner has its share after | per-instance goodput/s (median-Jain run) |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, f := range fleets {
		inst := make([]string, len(f.perInst))
		for i, v := range f.perInst {
			inst[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f–%.3f | %s | %s | %s |\n", f.name, pct(f.share), f.jain, f.jainMin, f.jainMax, pct(f.throttle), f.lateJoin, strings.Join(inst, " "))
	}

	// Targets, for sluice.
	var sl, aws, arc *singleResult
	for i := range singles {
		switch singles[i].name {
		case "sluice":
			sl = &singles[i]
		case "aws-adaptive":
			aws = &singles[i]
		case "vector-arc":
			arc = &singles[i]
		}
	}
	var fl *fleetResult
	for i := range fleets {
		if fleets[i].name == "sluice" {
			fl = &fleets[i]
		}
	}
	if sl == nil {
		return b.String()
	}
	b.WriteString("\nsluice against its targets:\n\n| target | measured | |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| goodput ≥ %.0f%% of capacity over the run | %s | %s |\n", 100*targetShare, pct(sl.share), mark(sl.share >= targetShare))
	fmt.Fprintf(&b, "| steady-phase throttle ratio ≤ %.0f%% | %s | %s |\n", 100*targetSteadyThrottle, pct(sl.steadyThrottle), mark(sl.steadyThrottle <= targetSteadyThrottle))
	fmt.Fprintf(&b, "| converged ≤ %v after a halving | %s | %s |\n", targetConvHalf, sl.convHalf, mark(sl.convHalf.ok && sl.convHalf.d <= targetConvHalf))
	fmt.Fprintf(&b, "| converged ≤ %v after a rise (C/2 → 2C) | %s | %s |\n", targetConvRise, sl.convRise, mark(sl.convRise.ok && sl.convRise.d <= targetConvRise))
	if fl != nil {
		fmt.Fprintf(&b, "| fleet Jain ≥ %.2f with aggregate ≥ %.0f%% | %.3f, %s | %s |\n", targetJain, 100*targetFleetShare, fl.jain, pct(fl.share), mark(fl.jain >= targetJain && fl.share >= targetFleetShare))
	}
	if aws != nil && arc != nil {
		fmt.Fprintf(&b, "| share×(1−throttle) > AWS adaptive (%.3f) and Vector ARC (%.3f) | %.3f | %s |\n", aws.score(), arc.score(), sl.score(), mark(sl.score() > aws.score() && sl.score() > arc.score()))
	}
	return b.String()
}

// medianOf returns the median of xs (the mean of the middle two for an
// even count); NaN for none.
func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// medianConv is the median of convergence times, "never" counting as the
// longest; it is never when at least half the runs never converged.
func medianConv(cs []convergence) convergence {
	ds := make([]float64, len(cs))
	for i, c := range cs {
		ds[i] = math.Inf(1)
		if c.ok {
			ds[i] = float64(c.d)
		}
	}
	m := medianOf(ds)
	if math.IsInf(m, 1) || math.IsNaN(m) {
		return convergence{}
	}
	return convergence{time.Duration(m), true}
}

// medianSingle folds repeated runs of one contender into per-metric
// medians; the time series are those of the run with the median score.
func medianSingle(rs []singleResult) singleResult {
	pick := func(f func(r singleResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return medianOf(xs)
	}
	convs := func(f func(r singleResult) convergence) convergence {
		cs := make([]convergence, len(rs))
		for i, r := range rs {
			cs[i] = f(r)
		}
		return medianConv(cs)
	}
	byScore := slices.Clone(rs)
	slices.SortFunc(byScore, func(a, b singleResult) int { return cmp.Compare(a.score(), b.score()) })
	m := byScore[len(byScore)/2] // series, name
	m.share = pick(func(r singleResult) float64 { return r.share })
	for i := range m.phaseShare {
		m.phaseShare[i] = pick(func(r singleResult) float64 { return r.phaseShare[i] })
	}
	m.throttle = pick(func(r singleResult) float64 { return r.throttle })
	m.steadyThrottle = pick(func(r singleResult) float64 { return r.steadyThrottle })
	m.p50 = time.Duration(pick(func(r singleResult) float64 { return float64(r.p50) }))
	m.p99 = time.Duration(pick(func(r singleResult) float64 { return float64(r.p99) }))
	m.convStart = convs(func(r singleResult) convergence { return r.convStart })
	m.convHalf = convs(func(r singleResult) convergence { return r.convHalf })
	m.convRise = convs(func(r singleResult) convergence { return r.convRise })
	m.okWrites = int64(pick(func(r singleResult) float64 { return float64(r.okWrites) }))
	m.failedWrites = int64(pick(func(r singleResult) float64 { return float64(r.failedWrites) }))
	m.runs = len(rs)
	m.scoreMin, m.scoreMax = byScore[0].score(), byScore[len(byScore)-1].score()
	return m
}

// medianFleet folds repeated fleet runs into per-metric medians; the
// per-instance goodputs are those of the run with the median Jain index.
func medianFleet(fs []fleetResult) fleetResult {
	pick := func(f func(r fleetResult) float64) float64 {
		xs := make([]float64, len(fs))
		for i, r := range fs {
			xs[i] = f(r)
		}
		return medianOf(xs)
	}
	byJain := slices.Clone(fs)
	slices.SortFunc(byJain, func(a, b fleetResult) int { return cmp.Compare(a.jain, b.jain) })
	m := byJain[len(byJain)/2]
	m.share = pick(func(r fleetResult) float64 { return r.share })
	m.jain = pick(func(r fleetResult) float64 { return r.jain })
	m.throttle = pick(func(r fleetResult) float64 { return r.throttle })
	cs := make([]convergence, len(fs))
	for i, f := range fs {
		cs[i] = f.lateJoin
	}
	m.lateJoin = medianConv(cs)
	m.jainMin, m.jainMax = byJain[0].jain, byJain[len(byJain)-1].jain
	return m
}
