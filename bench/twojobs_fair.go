package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// The two-jobs benchmark: two jobs share one store through one sidecar
// (sluice, its fair queue or its single queue, today's FIFO) or each
// through its own instance of a peer, which knows nothing of the other.
// Three cases, each on virtual time (see TestTwoJobsFair):
//
//   - equal: a greedy job (64 writers) and a small one (2 writers), equal
//     weights, on a store of constant capacity C. The fair share of the
//     small job is min(its demand, half).
//   - weighted: two greedy jobs (64 writers each), weights 3:1: 75/25.
//   - classes: a live stream (writes at 0.4C/s, open loop) and a bulk
//     backfill (64 writers), on a store whose capacity is C, then C/2.
//     Live should keep its goodput and its latency, and bulk keep at
//     least its floor (10%) of what the store takes.

// twoJob is one job of a case.
type twoJob struct {
	name    string
	flow    limiter.Flow // for sluice's fair queue
	writers int          // greedy writers, or
	rate    float64      // writes/s of an open-loop stream (0.4C for live)
}

type twoJobsCase struct {
	name    string
	jobs    []twoJob
	phases  []float64     // capacities, as multiples of C, each held phase long
	phase   time.Duration // length of each phase
	measure time.Duration // the last span of each phase that is measured
}

func twoJobsCases(c float64) []twoJobsCase {
	return []twoJobsCase{
		{name: "equal", phases: []float64{1}, phase: 40 * time.Second, measure: 20 * time.Second, jobs: []twoJob{
			{name: "greedy", flow: limiter.Flow{Key: "greedy"}, writers: 64},
			{name: "small", flow: limiter.Flow{Key: "small"}, writers: 2},
		}},
		{name: "weighted", phases: []float64{1}, phase: 40 * time.Second, measure: 20 * time.Second, jobs: []twoJob{
			{name: "heavy", flow: limiter.Flow{Key: "heavy", Weight: 3}, writers: 64},
			{name: "light", flow: limiter.Flow{Key: "light", Weight: 1}, writers: 64},
		}},
		{name: "classes", phases: []float64{1, 0.5}, phase: 40 * time.Second, measure: 20 * time.Second, jobs: []twoJob{
			{name: "live", flow: limiter.Flow{Key: "live", Class: limiter.Live}, rate: 0.4 * c},
			{name: "bulk", flow: limiter.Flow{Key: "bulk", Class: limiter.Bulk}, writers: 64},
		}},
	}
}

// jobWrite delivers one write of a job, as the contender does.
type jobWrite func(ctx context.Context, w *writeReq) bool

// twoJobsStrategy builds, for one run, the write path of each job.
type twoJobsStrategy struct {
	name  string
	build func(e env, jobs []twoJob) (writes []jobWrite, closeAll func(), err error)
}

// twoJobsStrategies: sluice's fair queue and its single queue, both one
// sidecar for the two jobs, then each peer run per job.
func twoJobsStrategies() []twoJobsStrategy {
	out := []twoJobsStrategy{
		{"sluice (fair queue)", func(e env, jobs []twoJob) ([]jobWrite, func(), error) { return sluiceJobs(e, jobs, true) }},
		{"sluice (single queue)", func(e env, jobs []twoJob) ([]jobWrite, func(), error) { return sluiceJobs(e, jobs, false) }},
	}
	for _, c := range contenders[1:] {
		out = append(out, twoJobsStrategy{c.name + " per job", func(e env, jobs []twoJob) ([]jobWrite, func(), error) {
			var writes []jobWrite
			var clients []client
			closeAll := func() {
				for _, cl := range clients {
					cl.close()
				}
			}
			for _, j := range jobs {
				je := e
				je.id, je.capacity = j.name, e.capacity/float64(len(jobs)) // the static operator splits C
				cl, err := c.new(je)
				if err != nil {
					closeAll()
					return nil, nil, err
				}
				clients = append(clients, cl)
				writes = append(writes, cl.write)
			}
			return writes, closeAll, nil
		}})
	}
	return out
}

// sluiceJobs is one sidecar for every job: one limiter, whose queue is
// fair between the jobs' flows, or one FIFO (every write in the default
// flow, as before flows existed).
func sluiceJobs(e env, jobs []twoJob, fair bool) ([]jobWrite, func(), error) {
	cl, err := newSluice(e)
	if err != nil {
		return nil, nil, err
	}
	c := cl.(*sluiceClient)
	var writes []jobWrite
	for _, j := range jobs {
		f := limiter.Flow{}
		if fair {
			f = j.flow
		}
		writes = append(writes, func(ctx context.Context, w *writeReq) bool { return c.writeFlow(ctx, w, f) })
	}
	return writes, c.close, nil
}

// jobRecord is what one job's loader saw: when each write was
// acknowledged, and how long it took from issue to acknowledgement
// (queueing in the client, retries and the store).
type jobRecord struct {
	mu    sync.Mutex
	ackAt []time.Duration
	lat   []time.Duration
	wait  []time.Duration // in the client: lat less the store's latency of the attempt it took
}

func (r *jobRecord) add(at, lat time.Duration) { r.addWait(at, lat, 0) }

func (r *jobRecord) addWait(at, lat, wait time.Duration) {
	r.mu.Lock()
	r.ackAt = append(r.ackAt, at)
	r.lat = append(r.lat, lat)
	r.wait = append(r.wait, wait)
	r.mu.Unlock()
}

// window returns the goodput (writes/s), the p99 latency and the p99
// wait in the client of the writes acknowledged in [from, to).
func (r *jobRecord) window(from, to time.Duration) (goodput float64, p99, p99Wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lats, waits []time.Duration
	for i, at := range r.ackAt {
		if at >= from && at < to {
			lats = append(lats, r.lat[i])
			waits = append(waits, r.wait[i])
		}
	}
	if len(lats) == 0 {
		return 0, 0, 0
	}
	return float64(len(lats)) / (to - from).Seconds(), pct99(lats), pct99(waits)
}

func pct99(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[int(math.Ceil(0.99*float64(len(ds))))-1]
}

// twoJobsPhase is one measured span: per job, goodput and p99 latency;
// and the store's mean latency for the writes it took.
type twoJobsPhase struct {
	goodput   []float64
	p99       []time.Duration
	p99Wait   []time.Duration
	storeMean time.Duration
}

// timedStore measures the store's latency of each write it takes (2xx),
// whoever sends it: a job's demand depends on it (a writer that never
// waits in its client sends one write per store latency).
//
// It also keeps, by URL (each write has its own), the latency of the
// attempt the store took, so that a write's time in its client (queue,
// pacing, backoff before retries) is its latency less that attempt's.
type timedStore struct {
	rt    http.RoundTripper
	start time.Time
	rec   jobRecord
	mu    sync.Mutex
	byURL map[string]time.Duration
}

func (t *timedStore) RoundTrip(req *http.Request) (*http.Response, error) {
	t0 := time.Now()
	resp, err := t.rt.RoundTrip(req)
	if err == nil && resp.StatusCode/100 == 2 {
		d := time.Since(t0)
		t.rec.add(time.Since(t.start), d)
		t.mu.Lock()
		t.byURL[req.URL.String()] = d
		t.mu.Unlock()
	}
	return resp, err
}

// take returns and forgets the latency of the attempt of url the store took.
func (t *timedStore) take(url string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.byURL[url]
	delete(t.byURL, url)
	return d
}

func (t *timedStore) mean(from, to time.Duration) time.Duration {
	t.rec.mu.Lock()
	defer t.rec.mu.Unlock()
	var sum time.Duration
	n := 0
	for i, at := range t.rec.ackAt {
		if at >= from && at < to {
			sum += t.rec.lat[i]
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / time.Duration(n)
}

// runTwoJobs runs the jobs of tc (a subset: only) through st on one store
// of capacity c·tc.phases[i] in phase i, and measures the last tc.measure
// of each phase.
func (s scenario) runTwoJobs(ctx context.Context, st twoJobsStrategy, tc twoJobsCase, only []int) ([]twoJobsPhase, error) {
	var ps []storesim.Phase
	for i, f := range tc.phases {
		ps = append(ps, storesim.Steady(fmt.Sprintf("p%d", i), tc.phase, f*s.capacity))
	}
	sched := storesim.MustPhases(ps...)
	cfg := s.store
	cfg.Style, cfg.Unit, cfg.Schedule = s.style, storesim.Requests, sched
	store, err := storesim.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	profile, err := classify.ParseProfile(s.profile)
	if err != nil {
		return nil, err
	}
	var jobs []twoJob
	for _, i := range only {
		jobs = append(jobs, tc.jobs[i])
	}
	start := time.Now()
	timed := &timedStore{rt: store.Transport(), start: start, byURL: map[string]time.Duration{}}
	writes, closeAll, err := st.build(env{id: "sidecar", rt: timed, style: s.style, profile: profile, capacity: s.capacity}, jobs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithDeadline(ctx, start.Add(sched.Total()))
	defer cancel()
	recs := make([]*jobRecord, len(jobs))
	var wg sync.WaitGroup
	var seq atomic.Int64
	for k, j := range jobs {
		recs[k] = &jobRecord{}
		one := func() {
			w := s.payload()
			w.url += "?w=" + strconv.FormatInt(seq.Add(1), 10) // its own URL: see timedStore
			t0 := time.Now()
			ok := writes[k](ctx, w)
			lat, store := time.Since(t0), timed.take(w.url)
			if ok && ctx.Err() == nil {
				recs[k].addWait(time.Since(start), lat, lat-store)
			}
		}
		if j.rate > 0 {
			wg.Go(func() {
				tick := time.NewTicker(time.Duration(float64(time.Second) / j.rate))
				defer tick.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
						wg.Go(one)
					}
				}
			})
			continue
		}
		for range j.writers {
			wg.Go(func() {
				for ctx.Err() == nil {
					one()
				}
			})
		}
	}
	wg.Wait()
	closeAll()
	out := make([]twoJobsPhase, len(tc.phases))
	for i := range tc.phases {
		end := time.Duration(i+1) * tc.phase
		out[i].storeMean = timed.mean(end-tc.measure, end)
		for _, r := range recs {
			g, p, pw := r.window(end-tc.measure, end)
			out[i].goodput = append(out[i].goodput, g)
			out[i].p99 = append(out[i].p99, p)
			out[i].p99Wait = append(out[i].p99Wait, pw)
		}
	}
	return out, nil
}

// twoJobsResult is one strategy's figures in the three cases.
type twoJobsResult struct {
	name string
	// equal: the small job's goodput and its share of the total; its
	// demand, its 2 writers over the store's mean latency in the run (what
	// they send if they never wait in their client), and its goodput alone
	// on the store (its demand on a store it does not share).
	smallGoodput, smallShare, smallDemand, smallAlone, equalTotal float64
	storeLatency                                                  time.Duration
	// weighted: the heavy (weight 3) job's share.
	heavyShare, weightedTotal float64
	// classes, per phase (C, C/2): live's goodput and p99 latency, bulk's
	// share of the total; live's p99 alone on the store at C.
	liveGoodput                 [2]float64
	liveP99, liveWait           [2]time.Duration
	bulkShare                   [2]float64
	liveAloneP99, liveAloneWait time.Duration
}

// runTwoJobsAll runs every case for st.
func (s scenario) runTwoJobsAll(ctx context.Context, st twoJobsStrategy) (twoJobsResult, error) {
	r := twoJobsResult{name: st.name}
	cases := twoJobsCases(s.capacity)
	eq, err := s.runTwoJobs(ctx, st, cases[0], []int{0, 1})
	if err != nil {
		return r, err
	}
	alone, err := s.runTwoJobs(ctx, st, cases[0], []int{1})
	if err != nil {
		return r, err
	}
	g := eq[0].goodput
	r.smallGoodput, r.equalTotal, r.smallAlone = g[1], g[0]+g[1], alone[0].goodput[0]
	r.storeLatency = eq[0].storeMean
	if r.storeLatency > 0 {
		r.smallDemand = float64(cases[0].jobs[1].writers) / r.storeLatency.Seconds()
	}
	r.smallShare = g[1] / max(r.equalTotal, 1e-9)
	wt, err := s.runTwoJobs(ctx, st, cases[1], []int{0, 1})
	if err != nil {
		return r, err
	}
	g = wt[0].goodput
	r.weightedTotal = g[0] + g[1]
	r.heavyShare = g[0] / max(r.weightedTotal, 1e-9)
	cl, err := s.runTwoJobs(ctx, st, cases[2], []int{0, 1})
	if err != nil {
		return r, err
	}
	for i := range 2 {
		g := cl[i].goodput
		r.liveGoodput[i], r.liveP99[i], r.liveWait[i] = g[0], cl[i].p99[0], cl[i].p99Wait[0]
		r.bulkShare[i] = g[1] / max(g[0]+g[1], 1e-9)
	}
	liveAlone, err := s.runTwoJobs(ctx, st, cases[2], []int{0})
	if err != nil {
		return r, err
	}
	r.liveAloneP99, r.liveAloneWait = liveAlone[0].p99[0], liveAlone[0].p99Wait[0]
	return r, nil
}

// twoJobsMarkdown is the table of BENCHMARKS.md's two-jobs section.
func twoJobsMarkdown(s scenario, rs []twoJobsResult, runs int) string {
	var b strings.Builder
	c := s.capacity
	fmt.Fprintf(&b, "Store: %s style, capacity C = %.0f writes/s (C/2 in the second phase of \"classes\"), base latency %v; "+
		"each phase %v, the last %v measured; medians of %d runs.\n\n", s.style, c, s.store.BaseLatency, twoJobsCases(c)[0].phase, twoJobsCases(c)[0].measure, runs)
	b.WriteString("**Equal weights: greedy (64 writers) and small (2 writers).** Fair: small gets min(its demand, half), where its demand " +
		"is 2 writes per store latency (the store's mean latency in that run: a saturated store answers slower).\n\n")
	b.WriteString("| write path | small, writes/s | small's share | store latency | small's demand (2 / latency) | fair share | small's goodput / fair | small alone, writes/s | total, writes/s |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fair := min(r.smallDemand, r.equalTotal/2) / max(r.equalTotal, 1e-9)
		fmt.Fprintf(&b, "| %s | %.1f | %.1f%% | %s | %.1f | %.1f%% | %.2f | %.1f | %.1f |\n", r.name, r.smallGoodput, 100*r.smallShare,
			ms1(r.storeLatency), r.smallDemand, 100*fair, r.smallShare/max(fair, 1e-9), r.smallAlone, r.equalTotal)
	}
	b.WriteString("\n**Weights 3:1: two greedy jobs (64 writers each).** Fair: 75% / 25%.\n\n")
	b.WriteString("| write path | heavy's share (weight 3) | total, writes/s |\n|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.1f%% | %.1f |\n", r.name, 100*r.heavyShare, r.weightedTotal)
	}
	fmt.Fprintf(&b, "\n**Classes: live (%.0f writes/s, open loop) and bulk (64 writers); capacity C, then C/2.** "+
		"Live should keep %.0f writes/s and its p99 wait in the write path (queue, pacing, backoff: its latency less the store's "+
		"latency of the attempt the store took) within 2× of that alone; bulk at least 10%%. "+
		"p99 latency end to end, the store's included, in brackets.\n\n", 0.4*c, 0.4*c)
	b.WriteString("| write path | live p99 wait alone | live writes/s at C | live p99 wait at C | bulk's share at C | live writes/s at C/2 | live p99 wait at C/2 | bulk's share at C/2 |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s (%s) | %.1f | %s (%s) | %.1f%% | %.1f | %s (%s) | %.1f%% |\n", r.name,
			ms1(r.liveAloneWait), ms1(r.liveAloneP99),
			r.liveGoodput[0], ms1(r.liveWait[0]), ms1(r.liveP99[0]), 100*r.bulkShare[0],
			r.liveGoodput[1], ms1(r.liveWait[1]), ms1(r.liveP99[1]), 100*r.bulkShare[1])
	}
	return b.String()
}

func ms1(d time.Duration) string { return fmt.Sprintf("%.0fms", d.Seconds()*1000) }

// medianTwoJobs is the field-by-field median of repeated runs of one
// strategy (the runs differ by goroutine scheduling only).
func medianTwoJobs(rs []twoJobsResult) twoJobsResult {
	m := rs[0]
	f := func(get func(*twoJobsResult) *float64) {
		vs := make([]float64, len(rs))
		for i := range rs {
			vs[i] = *get(&rs[i])
		}
		slices.Sort(vs)
		*get(&m) = vs[len(vs)/2]
	}
	d := func(get func(*twoJobsResult) *time.Duration) {
		vs := make([]time.Duration, len(rs))
		for i := range rs {
			vs[i] = *get(&rs[i])
		}
		slices.Sort(vs)
		*get(&m) = vs[len(vs)/2]
	}
	f(func(r *twoJobsResult) *float64 { return &r.smallGoodput })
	f(func(r *twoJobsResult) *float64 { return &r.smallShare })
	f(func(r *twoJobsResult) *float64 { return &r.smallDemand })
	f(func(r *twoJobsResult) *float64 { return &r.smallAlone })
	f(func(r *twoJobsResult) *float64 { return &r.equalTotal })
	d(func(r *twoJobsResult) *time.Duration { return &r.storeLatency })
	f(func(r *twoJobsResult) *float64 { return &r.heavyShare })
	f(func(r *twoJobsResult) *float64 { return &r.weightedTotal })
	for i := range 2 {
		f(func(r *twoJobsResult) *float64 { return &r.liveGoodput[i] })
		f(func(r *twoJobsResult) *float64 { return &r.bulkShare[i] })
		d(func(r *twoJobsResult) *time.Duration { return &r.liveP99[i] })
		d(func(r *twoJobsResult) *time.Duration { return &r.liveWait[i] })
	}
	d(func(r *twoJobsResult) *time.Duration { return &r.liveAloneP99 })
	d(func(r *twoJobsResult) *time.Duration { return &r.liveAloneWait })
	return m
}
