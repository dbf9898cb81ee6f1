package limiter

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Permit is one admitted attempt. Call Done exactly once when the attempt
// is over; further calls are no-ops. Safe for concurrent use.
type Permit struct {
	c        *Controller
	cost     float64
	epoch    uint64    // c.cutSeq when granted
	round    uint64    // c.round when granted
	win      uint64    // c.win.seq when granted: the window its units counted in
	at       time.Time // when granted
	inFlight int       // in-flight count at grant, this one included
	limit    int       // concurrency limit at grant
	done     bool      // Done was called; guarded by c.mu
	probe    uint64    // the outage it was granted as the probe of (outage.n), 0 if none; guarded by c.mu
	// stage is the pipelining state of a permit from AcquirePipelined, nil
	// for any other. The pointer is set before the permit is handed out
	// and never changes.
	stage *stageState
}

// Cost returns the units charged for p.
func (p *Permit) Cost() float64 { return p.cost }

// Acquire waits in the bounded queue, in the default flow (see
// AcquireFlow), until a concurrency slot and cost rate units are
// available, and takes them. cost is 1 per request or the body
// size in bytes; a cost above the burst is admitted once the bucket is full
// and leaves it in debt.
//
// It returns ErrQueueFull at once when Config.QueueMax callers already
// wait and none of them is to be pushed out for it, or later when a write
// of another flow takes its place (see fairQueue), ctx.Err() when ctx has ended or ends first (the caller sets the
// queue timeout on ctx), and ErrClosed after Close. A limit change takes
// effect at once for waiting callers, and a pause (Retry-After) keeps them
// queued.
func (c *Controller) Acquire(ctx context.Context, cost float64) (*Permit, error) {
	return c.acquire(ctx, "Acquire", cost, false)
}

func (c *Controller) acquire(ctx context.Context, op string, cost float64, pipelined bool) (*Permit, error) {
	return c.acquireFlow(ctx, op, Flow{}, cost, pipelined)
}

func (c *Controller) acquireFlow(ctx context.Context, op string, f Flow, cost float64, pipelined bool) (*Permit, error) {
	if err := checkCost(op, cost); err != nil {
		return nil, err
	}
	if err := checkFlow(op, f); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	now := c.cfg.Now()
	c.askedLocked(now)
	c.coldCostLocked(cost, now)
	if c.q.n == 0 {
		if p, _, _ := c.tryGrantLocked(cost, pipelined, now); p != nil {
			c.accountLocked(f, cost, 0, now)
			c.mu.Unlock()
			return p, nil
		}
	}
	if c.q.n >= c.cfg.QueueMax {
		// Full: the flow that queues the most is pushed back, not
		// necessarily this write (see fairQueue).
		v := c.q.victim(f)
		if v == nil {
			c.mu.Unlock()
			return nil, ErrQueueFull
		}
		c.q.remove(v)
		v.err = ErrQueueFull
		v.signal()
	}
	w := &waiter{cost: cost, pipelined: pipelined, since: now, ready: make(chan struct{}, 1)}
	c.q.push(w, f)
	c.dispatchLocked(now)
	return c.waitLocked(ctx, w)
}

// waitLocked waits until w is granted, the controller closes or ctx ends.
// It requires that c.mu is held and releases it.
func (c *Controller) waitLocked(ctx context.Context, w *waiter) (*Permit, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if w.permit != nil {
			c.mu.Unlock()
			return w.permit, nil
		}
		if w.err != nil {
			c.mu.Unlock()
			return nil, w.err
		}
		var fire <-chan time.Time
		if !w.deadline.IsZero() {
			now := c.cfg.Now()
			d := w.deadline.Sub(now)
			if d <= 0 {
				c.dispatchLocked(now)
				continue
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			fire = timer.C
		}
		c.mu.Unlock()
		select {
		case <-w.ready:
			c.mu.Lock()
		case <-fire:
			c.mu.Lock()
			c.dispatchLocked(c.cfg.Now())
		case <-ctx.Done():
			c.mu.Lock()
			if w.permit == nil && w.err == nil {
				head := c.q.head
				c.q.remove(w)
				if c.q.head != head {
					c.dispatchLocked(c.cfg.Now())
				}
				c.mu.Unlock()
				return nil, ctx.Err()
			}
		}
	}
}

// TryAcquire is Acquire without waiting (backpressure mode "reject"): it
// returns ErrNoCapacity when it would have to wait, including when others
// are queued.
func (c *Controller) TryAcquire(cost float64) (*Permit, error) {
	return c.tryAcquire("TryAcquire", cost, false)
}

func (c *Controller) tryAcquire(op string, cost float64, pipelined bool) (*Permit, error) {
	return c.tryAcquireFlow(op, Flow{}, cost, pipelined)
}

func (c *Controller) tryAcquireFlow(op string, f Flow, cost float64, pipelined bool) (*Permit, error) {
	if err := checkCost(op, cost); err != nil {
		return nil, err
	}
	if err := checkFlow(op, f); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.q.n > 0 {
		return nil, ErrNoCapacity
	}
	now := c.cfg.Now()
	c.askedLocked(now)
	c.coldCostLocked(cost, now)
	p, _, why := c.tryGrantLocked(cost, pipelined, now)
	if p == nil {
		c.markBlockedLocked(why)
		return nil, ErrNoCapacity
	}
	c.accountLocked(f, cost, 0, now)
	return p, nil
}

func checkCost(op string, cost float64) error {
	if math.IsNaN(cost) || math.IsInf(cost, 0) || cost < 0 {
		return fmt.Errorf("limiter: %s(cost=%v): cost must be finite and >= 0", op, cost)
	}
	return nil
}

// coldCostLocked sizes the cold bucket (see coldMax) to cost, if it is the
// largest asked for yet; a bucket that was full stays full. Requires that
// c.mu is held.
func (c *Controller) coldCostLocked(cost float64, now time.Time) {
	if c.answered || c.cfg.Burst > 0 || cost <= c.coldCost {
		return
	}
	c.coldCost = cost
	full := c.bucket.tokensAt(now) >= c.bucket.burst
	c.applyRateLocked(now)
	if full {
		c.bucket.tokens = c.bucket.burst
	}
}

// blocker is why the head of the queue cannot be admitted.
type blocker uint8

const (
	blockNone blocker = iota
	blockPause
	blockConc
	blockRate
	blockCold  // see coldMax
	blockProbe // an outage: the probe interval, or the probe in flight (see outage)
)

// admitLocked reports whether cost can be admitted at now and, if the rate
// or a pause blocks it, from when. Requires that c.mu is held.
func (c *Controller) admitLocked(cost float64, now time.Time) (time.Time, blocker) {
	if now.Before(c.pausedUntil) {
		return c.bucket.readyAt(cost), blockPause // the bucket refills from pausedUntil
	}
	if at, why := c.admitOutageLocked(now); why != blockNone {
		return at, why
	}
	if c.inFlight >= c.concLimit() {
		return time.Time{}, blockConc
	}
	if !c.answered && c.cfg.Burst == 0 && c.inFlight >= coldMax {
		return time.Time{}, blockCold // a Done wakes the head, as for concurrency
	}
	if at := c.bucket.readyAt(cost); now.Before(at) {
		return at, blockRate
	}
	return time.Time{}, blockNone
}

// tryGrantLocked grants cost at now if it can be admitted: a slot, or for
// a pipelined caller blocked only by the slots, a staged permit. If not,
// it reports from when it may be and what blocks it. Requires that c.mu
// is held.
func (c *Controller) tryGrantLocked(cost float64, pipelined bool, now time.Time) (*Permit, time.Time, blocker) {
	at, why := c.admitLocked(cost, now)
	if why == blockConc && pipelined {
		if at, why = c.admitStagedLocked(cost, now); why == blockNone {
			return c.grantStagedLocked(cost, now), time.Time{}, blockNone
		}
	}
	if why != blockNone {
		return nil, at, why
	}
	p := c.grantLocked(cost, now)
	c.grantProbeLocked(p)
	if pipelined {
		p.stage = &stageState{slot: true, head: true}
		c.addLeaderLocked(p)
	}
	return p, time.Time{}, blockNone
}

// grantLocked takes a slot and cost units. Requires that c.mu is held.
func (c *Controller) grantLocked(cost float64, now time.Time) *Permit {
	c.bucket.take(cost, now)
	c.flightLocked(now)
	c.inFlight++
	c.roundSent += cost
	c.win.granted += cost
	c.win.grants++
	c.win.peak = max(c.win.peak, c.inFlight)
	return &Permit{c: c, cost: cost, epoch: c.cutSeq, round: c.round, win: c.win.seq, at: now, inFlight: c.inFlight, limit: c.concLimit()}
}

// markBlockedLocked records which limit made a caller wait in this window
// (a pause, an outage or the cold start is no bottleneck: it does not call
// for growth). Requires that c.mu is held.
func (c *Controller) markBlockedLocked(why blocker) {
	switch why {
	case blockRate:
		c.win.blockRate = true
		c.roundBlocked = true
	case blockConc:
		c.win.blockConc = true
	}
}

// dispatchLocked admits waiters from the head of the queue (fairQueue's
// choice) while it can and tells the new head when to look again. It must run after anything that
// may let the head in sooner or later: a limit change, a released slot, a
// pause, a removed head. Requires that c.mu is held.
func (c *Controller) dispatchLocked(now time.Time) {
	for w := c.q.head; w != nil; w = c.q.head {
		p, deadline, why := c.tryGrantLocked(w.cost, w.pipelined, now)
		if p == nil {
			c.markBlockedLocked(why)
			if !w.deadline.Equal(deadline) {
				w.deadline = deadline
				w.signal()
			}
			return
		}
		// A Tick dispatches at its caller's now (a timer's firing), which
		// may be earlier than when w queued: it waited no time, not less.
		c.accountLocked(Flow{Key: w.flow.key, Class: w.flow.class, Weight: w.flow.weight}, w.cost, max(now.Sub(w.since), 0), now)
		c.q.pop(w)
		w.permit = p
		w.signal()
	}
}

// Done releases p's slot (or its staging) and feeds s to the controller. A Congested sample
// may cut a limit at once and pause sends, a Success may end a startup
// round (see Controller). Done is idempotent: calls after the first do
// nothing. It never blocks on I/O.
func (p *Permit) Done(s Sample) { p.end(&s) }

// Unused gives p back without an attempt made under it: its slot as Done
// does, and the rate units it took, which go back to the bucket and out
// of what the window and the round count as sent. A caller that needs
// permits of several limiters at once and lets go of those it took when
// another has none free (the scopes of a write) would otherwise spend
// each limiter's rate on writes it never sent, and the growth of the
// rate, which reads what was sent, would take that for demand the limit
// held back. It feeds no sample. Of Done and Unused, only the first call
// does anything. A pipelined permit is given back as Done gives it back,
// its units spent: they were counted when it was staged, and its round
// and time are those of its slot.
func (p *Permit) Unused() { p.end(nil) }

// end is Done with the sample s, or Unused with s nil.
func (p *Permit) end(s *Sample) {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	now := c.cfg.Now()
	switch {
	case p.stage != nil:
		c.donePipelinedLocked(p, now)
	case s != nil:
		c.releaseSlotLocked(now)
	default:
		c.releaseSlotLocked(now)
		c.bucket.advance(now)
		c.bucket.tokens = min(c.bucket.tokens+p.cost, c.bucket.burst)
		if p.round == c.round {
			c.roundSent -= p.cost
		}
		// By the window it was counted in, not by its time: Tick's now
		// (a timer's firing) may be earlier than a grant made before the
		// Tick ran, and the new window would give back what it never
		// counted, its grants wrapping around below zero.
		if p.win == c.win.seq {
			c.win.granted -= p.cost
			c.win.grants--
		}
	}
	if s != nil {
		c.observeLocked(p, *s, now)
	} else if c.probesLocked(p) {
		c.out.probing = false // a probe that found nothing: the next caller probes
	}
	c.dispatchLocked(now)
	c.releasedLocked(now)
}

// releaseSlotLocked gives back a slot at now. Requires that c.mu is held.
func (c *Controller) releaseSlotLocked(now time.Time) {
	c.flightLocked(now)
	c.inFlight--
}
