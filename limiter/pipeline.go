package limiter

import (
	"context"
	"time"
)

// stageState is what a pipelined permit (AcquirePipelined) holds beyond
// what every Permit does. Its fields are guarded by Controller.mu, except
// ready, which is set when the permit is made and only closed after.
type stageState struct {
	staged   bool          // sent behind leader, holds no slot yet
	slot     bool          // holds a slot: granted one, or was passed its leader's
	head     bool          // holds a slot and is not answered yet: a follower may go behind it
	leader   *Permit       // while staged: the permit it is written behind
	follower *Permit       // the permit staged behind this one, until it takes this one's slot
	lead     int           // index in Controller.leaders while head without a follower
	ready    chan struct{} // closed when a staged permit takes a slot or is done; nil if never staged
}

// AcquirePipelined is Acquire for an attempt that the caller can pipeline
// (RFC 9112 §9.3.2): write on an HTTP/1.1 connection behind another
// pipelined attempt, before that one is answered. When every slot is taken
// but a pipelined attempt in flight has no follower yet, it returns a
// staged permit behind that attempt, its Leader, as soon as the rate
// allows, once the concurrency limit has found the store's (it was cut
// once, or is at its maximum). The caller writes it on its leader's
// connection, and calls the
// leader's Pass once the store has answered the leader and taken the
// follower up: the follower then holds the leader's slot. A store that
// serves one request of a connection at a time then finds the next write
// already in its socket when it finishes one, and still sees no more
// writes at once than the concurrency limit: staged permits hold no slot,
// and count in the rate when granted.
func (c *Controller) AcquirePipelined(ctx context.Context, cost float64) (*Permit, error) {
	return c.acquire(ctx, "AcquirePipelined", cost, true)
}

// TryAcquirePipelined is AcquirePipelined without waiting, as TryAcquire
// is Acquire.
func (c *Controller) TryAcquirePipelined(cost float64) (*Permit, error) {
	return c.tryAcquire("TryAcquirePipelined", cost, true)
}

// admitStagedLocked is admitLocked for a staged permit, when the slots are
// all taken: it needs a leader and the rate. Requires that c.mu is held.
func (c *Controller) admitStagedLocked(cost float64, now time.Time) (time.Time, blocker) {
	switch {
	case c.out.active():
		// An outage admits one probe at a time, with a slot of its own
		// (see outage): a follower would be no probe, and its refusal
		// would not move the probe interval. A Done wakes the head.
		return time.Time{}, blockProbe
	case !c.answered && c.cfg.Burst == 0:
		// Nothing is known of the store yet: one write at a time per slot.
		return time.Time{}, blockConc
	case c.conc.startup() && c.conc.v < c.conc.max:
		// The concurrency limit is still growing to find the store's:
		// until a cut, followers would only pile more writes into a
		// store that may be refusing them.
		return time.Time{}, blockConc
	case c.inFlight > c.concLimit():
		// Over the limit (after a cut): the connections must drain, not
		// be kept busy by followers.
		return time.Time{}, blockConc
	case !c.concGrewAt.IsZero() && now.Before(c.concGrewAt.Add(c.cfg.Window)):
		// A probe of more slots runs without followers for a Window: if
		// the store refuses it, it refuses the probe alone, not each
		// follower queued behind it on the new connection in turn.
		return time.Time{}, blockConc
	case len(c.leaders) == 0:
		return time.Time{}, blockConc
	}
	if at := c.bucket.readyAt(cost); now.Before(at) {
		return at, blockRate
	}
	return time.Time{}, blockNone
}

// grantStagedLocked takes cost units for a staged permit behind the
// newest leader (the one the store will answer last, which leaves the
// follower the most time to be written): it is sent now, so it counts in
// the rate now, and takes a slot only when its leader passes it one.
// Requires that c.mu is held.
func (c *Controller) grantStagedLocked(cost float64, now time.Time) *Permit {
	c.bucket.take(cost, now)
	c.staged++
	c.roundSent += cost
	c.win.granted += cost
	c.win.grants++
	l := c.leaders[len(c.leaders)-1]
	c.removeLeaderLocked(l)
	p := &Permit{c: c, cost: cost, epoch: c.cutSeq, round: c.round, at: now, limit: c.concLimit(),
		stage: &stageState{staged: true, leader: l, ready: make(chan struct{})}}
	l.stage.follower = p
	return p
}

// Staged reports whether p is a staged permit that holds no slot yet (see
// AcquirePipelined).
func (p *Permit) Staged() bool {
	if p.stage == nil {
		return false
	}
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.stage.staged
}

// Leader returns the permit a staged p is to be written behind, nil once
// p is not staged.
func (p *Permit) Leader() *Permit {
	if p.stage == nil {
		return nil
	}
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.stage.leader
}

// Ready returns a channel closed once a staged p holds a slot or is done:
// its leader was answered, or ended without being sent. For a permit that
// was never staged it is nil.
func (p *Permit) Ready() <-chan struct{} {
	if p.stage == nil {
		return nil
	}
	return p.stage.ready
}

// Pass tells that the store has answered p. Its follower, if it has one,
// takes p's slot: the store has taken it up (it was written behind p), or
// it goes by itself now (it was not written yet). Nothing more is staged
// behind p. p's own Done still comes when its answer has been read, and
// only feeds its sample.
func (p *Permit) Pass() {
	if p.stage == nil {
		return // nothing is ever staged behind a permit that is not pipelined
	}
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := p.stage.follower; f != nil {
		c.handOverLocked(p, f, c.cfg.Now())
	}
	c.unheadLocked(p)
}

// donePipelinedLocked releases what pipelined p holds at its Done: its
// place behind its leader, or its slot, which goes to its follower if it
// has one. Requires that c.mu is held.
func (c *Controller) donePipelinedLocked(p *Permit, now time.Time) {
	st := p.stage
	switch {
	case st.staged:
		// Its caller gave up before the store took it up: its leader
		// may take another follower.
		st.staged = false
		c.staged--
		close(st.ready)
		if l := st.leader; l != nil {
			st.leader, l.stage.follower = nil, nil
			if l.stage.head {
				c.addLeaderLocked(l)
			}
		}
	case st.follower != nil:
		// Ended without an answer that was read (never sent, or its
		// connection broke): whatever became of its follower, the slot
		// is the follower's now.
		c.handOverLocked(p, st.follower, now)
	case st.slot:
		st.slot = false
		c.releaseSlotLocked(now)
	}
	c.unheadLocked(p)
}

// handOverLocked gives p's slot to its follower f. Requires that c.mu is
// held.
func (c *Controller) handOverLocked(p, f *Permit, now time.Time) {
	ps, fs := p.stage, f.stage
	ps.follower, fs.leader, ps.head = nil, nil, false // p is out of c.leaders since f was staged
	c.staged--
	fs.staged = false
	close(fs.ready)
	ps.slot = false // a permit with a follower holds a slot until it hands it over
	fs.slot, fs.head = true, true
	c.addLeaderLocked(f)
	c.startLocked(f, now)
	c.dispatchLocked(now) // a leader without a follower again
}

// unheadLocked marks pipelined p answered: no follower may be staged
// behind it. Requires that c.mu is held.
func (c *Controller) unheadLocked(p *Permit) {
	if st := p.stage; st.head {
		st.head = false
		if st.follower == nil {
			c.removeLeaderLocked(p)
		}
	}
}

// addLeaderLocked lists pipelined p as a leader a follower may be staged
// behind. Requires that c.mu is held.
func (c *Controller) addLeaderLocked(p *Permit) {
	p.stage.lead = len(c.leaders)
	c.leaders = append(c.leaders, p)
}

// removeLeaderLocked takes p off the leaders, in O(1): the last one takes
// its place. Requires that c.mu is held.
func (c *Controller) removeLeaderLocked(p *Permit) {
	last := c.leaders[len(c.leaders)-1]
	c.leaders[p.stage.lead], last.stage.lead = last, p.stage.lead
	c.leaders[len(c.leaders)-1] = nil
	c.leaders = c.leaders[:len(c.leaders)-1]
	p.stage.lead = -1
}

// startLocked dates p from now, when it took its slot: its answer is
// judged against the limits and cuts from then on. Requires that c.mu is
// held.
func (c *Controller) startLocked(p *Permit, now time.Time) {
	p.epoch, p.round, p.at = c.cutSeq, c.round, now
	p.inFlight, p.limit = c.inFlight, c.concLimit()
}
