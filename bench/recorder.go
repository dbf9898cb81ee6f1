package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/internal/storesim"
)

// bucketWidth is the resolution of every time series.
const bucketWidth = 100 * time.Millisecond

// series counts what the store saw, per bucketWidth bucket.
type series struct {
	attempts  []int64   // write requests
	throttled []int64   // requests with any item throttled
	accepted  []float64 // cost units the store kept (goodput)
}

func newSeries(n int) series {
	return series{attempts: make([]int64, n), throttled: make([]int64, n), accepted: make([]float64, n)}
}

func (s *series) add(i int, ev storesim.Event) {
	s.attempts[i]++
	if ev.Throttled || ev.Failed {
		s.throttled[i]++
	}
	s.accepted[i] += ev.AcceptedCost
}

// recorder collects one run: the store's events per client and the
// loader-visible outcome of every write. Safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	start   time.Time
	total   series
	clients map[string]*series
	writes  map[string]*writeStats
	n       int
	limit   []float64 // the client's own send-rate limit, per second
}

// limitReporter is a client that can tell its current send-rate limit.
type limitReporter interface {
	rateLimit() float64
}

// traceLimit samples lr's limit every second until ctx ends.
func (r *recorder) traceLimit(ctx context.Context, lr limitReporter) {
	for {
		v := lr.rateLimit()
		r.mu.Lock()
		r.limit = append(r.limit, v)
		r.mu.Unlock()
		if !sleepCtx(ctx, time.Second) {
			return
		}
	}
}

// writeStats is what the loader saw.
type writeStats struct {
	ok, failed int64
	latency    []time.Duration // of acknowledged writes, from first try to acknowledgement
}

func newRecorder(start time.Time, d time.Duration) *recorder {
	n := int((d + bucketWidth - 1) / bucketWidth)
	return &recorder{start: start, n: n, total: newSeries(n), clients: map[string]*series{}, writes: map[string]*writeStats{}}
}

// observe is the store's Config.Observe.
func (r *recorder) observe(ev storesim.Event) {
	i := int(ev.Time.Sub(r.start) / bucketWidth)
	if i < 0 || i >= r.n {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total.add(i, ev)
	s := r.clients[ev.Client]
	if s == nil {
		ns := newSeries(r.n)
		s = &ns
		r.clients[ev.Client] = s
	}
	s.add(i, ev)
}

// wrote records one write as the loader saw it.
func (r *recorder) wrote(client string, latency time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes[client]
	if w == nil {
		w = &writeStats{}
		r.writes[client] = w
	}
	if ok {
		w.ok++
		w.latency = append(w.latency, latency)
	} else {
		w.failed++
	}
}

// run is a finished recording with the capacity it ran against.
type run struct {
	capacity []float64 // units/s at each bucket's midpoint
	total    series
	clients  map[string]series
	writes   writeStats     // all clients
	stats    storesim.Stats // the store's own counters at the end
	limit    []float64      // the solo client's send-rate limit per second, if it reports one
}

func (r *recorder) finish(sched storesim.Schedule) *run {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &run{capacity: make([]float64, r.n), total: r.total, clients: map[string]series{}, limit: r.limit}
	for i := range out.capacity {
		out.capacity[i] = sched.Capacity(time.Duration(i)*bucketWidth + bucketWidth/2)
	}
	for id, s := range r.clients {
		out.clients[id] = *s
	}
	for _, w := range r.writes {
		out.writes.ok += w.ok
		out.writes.failed += w.failed
		out.writes.latency = append(out.writes.latency, w.latency...)
	}
	slices.Sort(out.writes.latency)
	return out
}

// bucketOf converts an elapsed time to a bucket index.
func bucketOf(d time.Duration) int { return int(d / bucketWidth) }

// share returns goodput ÷ capacity over buckets [from, to) of s.
func (r *run) share(s series, from, to int) float64 {
	var good, capa float64
	for i := max(from, 0); i < min(to, len(r.capacity)); i++ {
		good += s.accepted[i]
		capa += r.capacity[i] * bucketWidth.Seconds()
	}
	if capa == 0 {
		return math.NaN()
	}
	return good / capa
}

// throttleRatio returns throttled ÷ attempts over buckets [from, to).
func throttleRatio(s series, from, to int) float64 {
	var att, thr int64
	for i := max(from, 0); i < min(to, len(s.attempts)); i++ {
		att += s.attempts[i]
		thr += s.throttled[i]
	}
	if att == 0 {
		return 0
	}
	return float64(thr) / float64(att)
}

// goodputRate returns accepted units/s over buckets [from, to).
func goodputRate(s series, from, to int) float64 {
	var good float64
	from, to = max(from, 0), min(to, len(s.accepted))
	if to <= from {
		return 0
	}
	for i := from; i < to; i++ {
		good += s.accepted[i]
	}
	return good / (float64(to-from) * bucketWidth.Seconds())
}

// Convergence criteria: goodput within convTolerance of capacity and a
// throttle ratio below convMaxThrottle, in every 1s window of a convHold
// stretch.
const (
	convTolerance   = 0.10
	convMaxThrottle = 0.02
	convWindow      = time.Second
	convHold        = 3 * time.Second
)

// converge returns how long after bucket step the series s first holds the
// convergence criteria for convHold, looking no further than bucket end. ok
// is false if it never does.
func (r *run) converge(s series, step, end int) (d time.Duration, ok bool) {
	win := bucketOf(convWindow)
	return holdsFrom(step, end, func(u int) bool {
		var capa float64
		for i := u; i < u+win; i++ {
			capa += r.capacity[i]
		}
		capa /= float64(win)
		g := goodputRate(s, u, u+win)
		return capa > 0 && math.Abs(g-capa) <= convTolerance*capa && throttleRatio(s, u, u+win) < convMaxThrottle
	})
}

// holdsFrom returns how long after bucket from the predicate first holds
// for every 1s window (convWindow) starting in a convHold-long stretch,
// that is for every window inside the stretch, sliding by one bucket;
// windows end no later than bucket end. ok is false if it never does.
func holdsFrom(from, end int, good func(u int) bool) (d time.Duration, ok bool) {
	win := bucketOf(convWindow)
	hold := bucketOf(convHold) - win
	n := 0 // consecutive good window starts up to u
	for u := max(from, 0); u+win <= end; u++ {
		if good(u) {
			n++
		} else {
			n = 0
		}
		if n == hold+1 {
			return time.Duration(u-hold-from) * bucketWidth, true
		}
	}
	return 0, false
}

// percentile returns the p-th percentile (0 < p ≤ 1) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// jain returns Jain's fairness index (Σx)²/(n·Σx²): 1 when all equal, 1/n
// when one takes everything.
func jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}
