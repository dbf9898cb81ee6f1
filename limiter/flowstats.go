package limiter

import (
	"slices"
	"strings"
	"time"
)

// shareWindow is the span over which FlowStats measure a flow's share and
// wait: long enough to hold many grants at any useful rate, short enough
// that the status page shows the present.
const shareWindow = 5 * time.Second

// flowIdleWindows is how many shareWindows without a grant a flow's
// accounting outlives: a job that stopped writing leaves the list.
const flowIdleWindows = 3

// classWaitBounds are the upper bounds, in seconds, of the queue-wait
// histogram kept per class (ClassStats.WaitBuckets, ClassWaitBounds).
var classWaitBounds = [...]float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// ClassWaitBounds returns the upper bounds, in seconds, of the buckets
// of ClassStats.WaitBuckets, +Inf left out.
func ClassWaitBounds() []float64 { b := classWaitBounds; return b[:] }

// FlowStats is one flow's recent accounting (Snapshot.Flows): over the
// last complete shareWindow (5s) and the current one (5s to 10s in all),
// the share of the granted units it got and how long its writes waited in
// the queue.
type FlowStats struct {
	Key    string
	Class  Class   // of its latest grant
	Weight float64 // of its latest grant
	// Queued and QueuedCost are its writes waiting now.
	Queued     int
	QueuedCost float64
	// Share is its fraction of the units granted to all flows in the
	// window; Grants and Units what it was granted there.
	Share  float64
	Grants uint64
	Units  float64
	// MeanWait and MaxWait are over its grants in the window (a write
	// that found a slot free waited 0).
	MeanWait time.Duration
	MaxWait  time.Duration
}

// ClassStats is one class's accounting since the Controller was made
// (Snapshot.Classes), for metrics: counters and a histogram.
type ClassStats struct {
	Class      Class
	Queued     int     // writes waiting now
	QueuedCost float64 // units they wait for
	Grants     uint64  // permits granted
	Units      float64 // units granted
	// WaitSum is the total queue wait of the grants, in seconds;
	// WaitBuckets counts them per upper bound of ClassWaitBounds
	// (cumulative, as Prometheus histograms are), the last entry +Inf.
	WaitSum     float64
	WaitBuckets []uint64
}

// flowAcct is a flow's accounting: the current window and the last one.
type flowAcct struct {
	class  Class
	weight float64
	cur    winAcct
	last   winAcct
	idle   int // complete windows without a grant
}

type winAcct struct {
	grants  uint64
	units   float64
	waitSum time.Duration
	waitMax time.Duration
}

func (w *winAcct) add(cost float64, wait time.Duration) {
	w.grants++
	w.units += cost
	w.waitSum += wait
	w.waitMax = max(w.waitMax, wait)
}

type classAcct struct {
	grants  uint64
	units   float64
	waitSum float64
	buckets [len(classWaitBounds) + 1]uint64 // per classWaitBounds bound and +Inf, not cumulative
}

// accounting is what the Controller counts of each grant per flow and per
// class. The default flow (key "") has its own field, so a sidecar with
// one job touches no map per write.
type accounting struct {
	start     time.Time // of the current window
	cur, last float64   // units granted in the current and the last window
	def       flowAcct
	defSeen   bool // the default flow was granted in the last flowIdleWindows windows
	flows     map[string]*flowAcct
	class     [numClasses]classAcct
}

// accountLocked counts a grant of cost units to flow f after a queue wait.
// Requires that c.mu is held.
func (c *Controller) accountLocked(f Flow, cost float64, wait time.Duration, now time.Time) {
	a := &c.acct
	a.roll(now)
	a.cur += cost
	fa := &a.def
	if f.Key != "" {
		fa = a.flows[f.Key]
		if fa == nil {
			if a.flows == nil {
				a.flows = make(map[string]*flowAcct)
			}
			fa = new(flowAcct)
			a.flows[f.Key] = fa
		}
	} else {
		a.defSeen = true
	}
	fa.class, fa.weight = f.Class, f.weight()
	fa.cur.add(cost, wait)
	ca := &a.class[f.Class]
	ca.grants++
	ca.units += cost
	ca.waitSum += wait.Seconds()
	i := 0
	for i < len(classWaitBounds) && wait.Seconds() > classWaitBounds[i] {
		i++
	}
	ca.buckets[i]++
}

// roll closes the windows that ended by now.
func (a *accounting) roll(now time.Time) {
	if a.start.IsZero() {
		a.start = now
		return
	}
	if now.Sub(a.start) < shareWindow {
		return
	}
	n := int(now.Sub(a.start) / shareWindow)
	a.start = a.start.Add(time.Duration(n) * shareWindow)
	step := func(fa *flowAcct) bool {
		if n == 1 {
			fa.last = fa.cur
		} else {
			fa.last = winAcct{} // a whole window passed with no grant at all
		}
		if fa.cur.grants == 0 {
			fa.idle += n
		} else {
			fa.idle = n - 1 // the windows after the current one had none
		}
		fa.cur = winAcct{}
		return fa.idle >= flowIdleWindows
	}
	a.last = a.cur
	if n > 1 {
		a.last = 0
	}
	a.cur = 0
	if step(&a.def) {
		a.defSeen = false
	}
	for k, fa := range a.flows {
		if step(fa) {
			delete(a.flows, k)
		}
	}
}

// flowStatsLocked returns the accounting of every flow granted or waiting
// recently, by key. Requires that c.mu is held.
func (c *Controller) flowStatsLocked(now time.Time) []FlowStats {
	a := &c.acct
	a.roll(now)
	total := a.last + a.cur
	stat := func(key string, fa *flowAcct) FlowStats {
		w := fa.last
		w.grants += fa.cur.grants
		w.units += fa.cur.units
		w.waitSum += fa.cur.waitSum
		w.waitMax = max(w.waitMax, fa.cur.waitMax)
		s := FlowStats{Key: key, Class: fa.class, Weight: fa.weight, Grants: w.grants, Units: w.units, MaxWait: w.waitMax}
		if total > 0 {
			s.Share = w.units / total
		}
		if w.grants > 0 {
			s.MeanWait = w.waitSum / time.Duration(w.grants)
		}
		return s
	}
	var out []FlowStats
	if a.defSeen {
		out = append(out, stat("", &a.def))
	}
	for k, fa := range a.flows {
		out = append(out, stat(k, fa))
	}
	// Writes waiting now, of flows granted nothing yet included.
	for k, fq := range c.q.flows {
		if fq.n == 0 {
			continue
		}
		i := slices.IndexFunc(out, func(s FlowStats) bool { return s.Key == k.key })
		if i < 0 {
			out = append(out, FlowStats{Key: k.key, Class: k.class, Weight: fq.weight})
			i = len(out) - 1
		}
		out[i].Queued += fq.n
		out[i].QueuedCost += fq.cost
	}
	slices.SortFunc(out, func(x, y FlowStats) int { return strings.Compare(x.Key, y.Key) })
	return out
}

// classStatsLocked returns each class's accounting. Requires that c.mu is
// held.
func (c *Controller) classStatsLocked() []ClassStats {
	out := make([]ClassStats, numClasses)
	for k := range out {
		ca := &c.acct.class[k]
		s := ClassStats{Class: Class(k), Queued: c.q.class[k].n, QueuedCost: c.q.class[k].cost,
			Grants: ca.grants, Units: ca.units, WaitSum: ca.waitSum, WaitBuckets: make([]uint64, len(ca.buckets))}
		var sum uint64
		for i, n := range ca.buckets {
			sum += n
			s.WaitBuckets[i] = sum
		}
		out[k] = s
	}
	return out
}
