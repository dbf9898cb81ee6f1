package limiter

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Class is a flow's priority class. Live is served before Bulk while both
// wait, except for Bulk's floor (Config.BulkFloor).
type Class uint8

const (
	// Bulk is the zero Class: backfills, replays, anything that can wait.
	Bulk Class = iota
	// Live is served first: a live stream whose writes should see the
	// store's latency and not a backfill's queue.
	Live

	numClasses = 2
)

var classNames = [numClasses]string{"bulk", "live"}

// String returns "bulk" or "live", for metric labels and the API.
func (k Class) String() string {
	if k < numClasses {
		return classNames[k]
	}
	return fmt.Sprintf("Class(%d)", uint8(k))
}

// ParseClass parses "bulk" or "live".
func ParseClass(s string) (Class, error) {
	for k, n := range classNames {
		if s == n {
			return Class(k), nil
		}
	}
	return 0, fmt.Errorf("limiter: class %q is not bulk or live", s)
}

// Classes lists every Class, in the order of their values.
func Classes() []Class { return []Class{Bulk, Live} }

// Flow says whom a write is for: a job. Writes of one Flow are served in
// the order they arrive; between flows of a class the queue is fair by
// Weight. The zero Flow is the default flow: key "", weight 1, Bulk.
type Flow struct {
	// Key names the flow (the job). Flows are told apart by Key and Class.
	Key string
	// Weight is the flow's share relative to the other flows of its class
	// waiting at the same time; 0 means 1. It must be finite and >= 0.
	Weight float64
	// Class is the flow's priority class.
	Class Class
}

func (f Flow) weight() float64 {
	if f.Weight == 0 {
		return 1
	}
	return f.Weight
}

func checkFlow(op string, f Flow) error {
	if math.IsNaN(f.Weight) || math.IsInf(f.Weight, 0) || f.Weight < 0 {
		return fmt.Errorf("limiter: %s(weight=%v): weight must be finite and >= 0", op, f.Weight)
	}
	if f.Class >= numClasses {
		return fmt.Errorf("limiter: %s(class=%d): unknown class", op, f.Class)
	}
	return nil
}

// AcquireFlow is Acquire for a write of flow f: while others wait, it
// waits in f's own queue, served as fairQueue says.
func (c *Controller) AcquireFlow(ctx context.Context, f Flow, cost float64) (*Permit, error) {
	return c.acquireFlow(ctx, "AcquireFlow", f, cost, false)
}

// AcquirePipelinedFlow is AcquirePipelined for a write of flow f.
func (c *Controller) AcquirePipelinedFlow(ctx context.Context, f Flow, cost float64) (*Permit, error) {
	return c.acquireFlow(ctx, "AcquirePipelinedFlow", f, cost, true)
}

// TryAcquireFlow is TryAcquire for a write of flow f: it counts in f's
// share when it is granted.
func (c *Controller) TryAcquireFlow(f Flow, cost float64) (*Permit, error) {
	return c.tryAcquireFlow("TryAcquireFlow", f, cost, false)
}

// TryAcquirePipelinedFlow is TryAcquirePipelined for a write of flow f.
func (c *Controller) TryAcquirePipelinedFlow(f Flow, cost float64) (*Permit, error) {
	return c.tryAcquireFlow("TryAcquirePipelinedFlow", f, cost, true)
}

// fairQueue is where writes wait for the Controller: weighted fair queuing
// between flows, in two priority classes.
//
// Within a class it is start-time fair queuing (SFQ). Each class has a
// virtual time, the start tag of the waiter it granted last. A waiter of
// flow f arriving gets the start tag max(virtual time, finish of f) and
// moves f's finish to start + cost/weight; the class serves the waiter
// with the smallest start tag (the earliest arrival among equals), which
// is always the first of its flow's FIFO. Backlogged flows thus get
// capacity in proportion to their weights, and a flow that asks for less
// than its share is served as soon as it asks: its tag is the virtual
// time, behind nobody's backlog. A flow that stops waiting banks nothing:
// its next waiter starts at the virtual time at the earliest, so its
// unused share went to the others at once. A flow with no waiters keeps
// only its finish tag, and only while that is ahead of the virtual time
// (it has had more than its share); once every waiter is gone the tags
// are forgotten: there was capacity for all.
//
// Between classes it is strict priority with a floor: Live's first waiter
// goes before Bulk's, except that while Bulk waits, each unit granted to
// Live earns Bulk floor/(1-floor) units of credit, and Bulk's first waiter
// goes first when its cost fits in the credit. Bulk therefore gets at
// least the floor's fraction of the units granted while it waits, and no
// more of Live's than that; the credit is dropped when Bulk has no
// waiters, so it covers a recent stretch only. Since Live is always served
// first, a cut of the limits lands on Bulk first: Live keeps its demand as
// long as the store's capacity, less Bulk's floor, covers it.
//
// A full queue (Config.QueueMax) pushes back the flow with the most
// waiters of the lowest class, not the newcomer: its last waiter gets
// ErrQueueFull and the newcomer takes its place, when the newcomer is of
// a higher class or its flow has at least two fewer waiters. Pushback thus
// stays with the flow that queues the most.
//
// The head (the waiter to serve next) is kept up to date by every push and
// removal; the Controller evaluates only it, as it did its FIFO's head.
// A queue of one flow is a FIFO. Cost per operation: O(log flows).
// Requires that Controller.mu is held for everything.
type fairQueue struct {
	head  *waiter
	n     int
	cost  float64
	floor float64 // Config.BulkFloor
	// credit is Bulk's: units it may take before Live's next waiter.
	credit float64
	seq    uint64
	class  [numClasses]classQ
	flows  map[flowKey]*flowQ // flows with waiters, or a finish tag ahead of their class's virtual time
	spare  *flowQ             // one flowQ to reuse: a lone flow's queue fills and drains without allocating
}

type flowKey struct {
	key   string
	class Class
}

// flowQ is one flow's waiters, in arrival order.
type flowQ struct {
	flowKey
	fifo
	weight float64
	finish float64 // virtual finish tag of its latest waiter
	idx    int     // index in its class's heap while it has waiters, -1 otherwise
}

// classQ is one class's flows with waiters, in a min-heap by the start tag
// of each flow's first waiter.
type classQ struct {
	vtime float64
	n     int
	cost  float64
	heap  []*flowQ
}

// push queues w for flow f.
func (q *fairQueue) push(w *waiter, f Flow) {
	k := flowKey{f.Key, f.Class}
	cq := &q.class[f.Class]
	fq := q.flows[k]
	if fq == nil {
		if fq = q.spare; fq != nil {
			q.spare = nil
			*fq = flowQ{}
		} else {
			fq = new(flowQ)
		}
		fq.flowKey, fq.idx, fq.finish = k, -1, cq.vtime
		if q.flows == nil {
			q.flows = make(map[flowKey]*flowQ)
		}
		q.sweep()
		q.flows[k] = fq
	}
	fq.weight = f.weight()
	q.seq++
	w.flow, w.seq = fq, q.seq
	w.start = max(cq.vtime, fq.finish)
	fq.finish = w.start + w.cost/fq.weight
	fq.push(w)
	cq.n++
	cq.cost += w.cost
	q.n++
	q.cost += w.cost
	if fq.n == 1 {
		cq.heapPush(fq)
	}
	q.pick()
}

// pop takes w, the head, out of the queue to be granted: its class's
// virtual time moves to w's start tag, and the credit between classes
// follows.
func (q *fairQueue) pop(w *waiter) {
	fq := w.flow
	cq := &q.class[fq.class]
	cq.vtime = max(cq.vtime, w.start)
	switch {
	case fq.class == Live && q.class[Bulk].n > 0:
		q.credit += classCost(w) * q.floor / (1 - q.floor)
	case fq.class == Bulk:
		q.credit = max(0, q.credit-classCost(w))
	}
	q.unlink(w)
}

// classCost is what w counts in the share between classes: its cost, at
// least one unit, or writes of cost 0 (which Acquire accepts) would earn
// Bulk no credit when Live's and take none when Bulk's, which would then
// always go first.
func classCost(w *waiter) float64 { return max(w.cost, 1) }

// remove takes w out of the queue without granting it (its caller gave
// up, was pushed out, or the Controller closed). The flow is not charged
// for it: if it was the flow's latest waiter, the finish tag goes back to
// w's start; otherwise the waiters behind it move up by its span. Leaving
// their tags would charge the flow for every write that timed out in
// its queue: a job whose oldest writes time out and are sent again would
// fall further behind the others with each, and never be served.
// O(the flow's waiters behind w).
func (q *fairQueue) remove(w *waiter) {
	fq := w.flow
	if fq.tail == w {
		fq.finish = w.start
	} else {
		// d is w's span, and any gap the virtual time left after it:
		// the next waiter takes w's tag, the others keep their spacing
		// and their order. (NaN, from tags that overflowed to Inf, fails
		// every test here.)
		prev, d := w.start, w.next.start-w.start
		for x := w.next; x != nil; x = x.next {
			old := x.start
			if s := old - d; s > prev {
				prev = s
			}
			x.start = prev
			if sh := old - x.start; x == fq.tail && sh > 0 {
				fq.finish = max(x.start, fq.finish-sh) // not before it, whatever the rounding
			}
		}
	}
	q.unlink(w) // fixes the heap if w was its flow's first
}

func (q *fairQueue) unlink(w *waiter) {
	fq := w.flow
	cq := &q.class[fq.class]
	first := fq.head == w
	fq.remove(w)
	w.flow = nil
	cq.n--
	cq.cost -= w.cost
	q.n--
	q.cost -= w.cost
	switch {
	case fq.n == 0:
		cq.heapRemove(fq)
		if fq.finish <= cq.vtime {
			q.forget(fq)
		}
	case first:
		cq.heapFix(fq)
	}
	if cq.n == 0 {
		cq.cost = 0
		if fq.class == Bulk {
			q.credit = 0 // credit covers a stretch in which Bulk waits
		}
	}
	if q.n == 0 {
		// Everyone was served: nothing is owed to anyone.
		q.cost, q.credit = 0, 0
		for k := range q.class {
			q.class[k].vtime = 0
		}
		clear(q.flows)
	}
	q.pick()
}

func (q *fairQueue) forget(fq *flowQ) {
	delete(q.flows, fq.flowKey)
	q.spare = fq
}

// sweep forgets idle flows whose finish tag the virtual time has passed,
// once they are many: their tags no longer tell anything.
func (q *fairQueue) sweep() {
	if len(q.flows) < 64+2*(len(q.class[Bulk].heap)+len(q.class[Live].heap)) {
		return
	}
	for k, fq := range q.flows {
		if fq.n == 0 && fq.finish <= q.class[k.class].vtime {
			delete(q.flows, k)
		}
	}
}

// pick sets the head: Live's first waiter, unless Bulk's fits in its
// credit or Live has none. A head that loses its place stops watching the
// clock (its deadline is the head's alone).
func (q *fairQueue) pick() {
	live, bulk := q.class[Live].first(), q.class[Bulk].first()
	h := live
	if live == nil || bulk != nil && q.credit >= classCost(bulk) && q.floor > 0 {
		h = bulk
	}
	if h != q.head {
		if q.head != nil {
			q.head.deadline = time.Time{}
		}
		q.head = h
	}
}

// victim returns the waiter to push out so that a write of flow f may
// wait in a full queue, nil if f's write is the one to refuse.
func (q *fairQueue) victim(f Flow) *waiter {
	k := flowKey{f.Key, f.Class}
	mine := 0
	if fq := q.flows[k]; fq != nil {
		mine = fq.n
	}
	for cl := Bulk; cl <= f.Class; cl++ {
		var worst *flowQ
		for _, fq := range q.class[cl].heap {
			if worst == nil || fq.n > worst.n {
				worst = fq
			}
		}
		switch {
		case worst == nil:
			continue
		case cl < f.Class, worst.flowKey != k && worst.n >= mine+2:
			return worst.tail
		}
		return nil
	}
	return nil
}

func (cq *classQ) first() *waiter {
	if len(cq.heap) == 0 {
		return nil
	}
	return cq.heap[0].head
}

func flowLess(a, b *flowQ) bool {
	if a.head.start != b.head.start {
		return a.head.start < b.head.start
	}
	return a.head.seq < b.head.seq
}

func (cq *classQ) heapPush(fq *flowQ) {
	fq.idx = len(cq.heap)
	cq.heap = append(cq.heap, fq)
	cq.up(fq.idx)
}

func (cq *classQ) heapRemove(fq *flowQ) {
	i, last := fq.idx, len(cq.heap)-1
	if i != last {
		cq.swap(i, last)
	}
	cq.heap[last] = nil
	cq.heap = cq.heap[:last]
	fq.idx = -1
	if i != last {
		cq.heapFixAt(i)
	}
}

func (cq *classQ) heapFix(fq *flowQ) { cq.heapFixAt(fq.idx) }

func (cq *classQ) heapFixAt(i int) {
	if !cq.down(i) {
		cq.up(i)
	}
}

func (cq *classQ) swap(i, j int) {
	h := cq.heap
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (cq *classQ) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !flowLess(cq.heap[j], cq.heap[i]) {
			break
		}
		cq.swap(i, j)
		j = i
	}
}

func (cq *classQ) down(i0 int) bool {
	i, n := i0, len(cq.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && flowLess(cq.heap[r], cq.heap[l]) {
			j = r
		}
		if !flowLess(cq.heap[j], cq.heap[i]) {
			break
		}
		cq.swap(i, j)
		i = j
	}
	return i > i0
}
