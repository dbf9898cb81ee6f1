package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/limiter"
)

// Mode is where a Client stands on fleet mode's fallback ladder. Each step
// down keeps the sidecar limited: never unlimited, never stopped.
type Mode uint8

const (
	// ModeJoining: no answer from the fleet yet; the sidecar's own limit
	// alone sets its rate.
	ModeJoining Mode = iota
	// ModeLeased: the sidecar sends no faster than its lease, renewed at
	// every refresh, and kept while Redis does not answer until it
	// expires (LeaseTTL after the refresh that got it).
	ModeLeased
	// ModeSafeShare: the lease expired without renewal; the sidecar caps
	// itself at its weighted share of the last budget it saw, for SafeFor.
	ModeSafeShare
	// ModeLocal: the fleet has not answered for longer still (or never
	// did): the sidecar's own adaptive limit alone, until it answers again.
	ModeLocal
	// ModeLeft: the sidecar stopped and left the fleet. Terminal.
	ModeLeft

	numModes
)

var modeNames = [numModes]string{"joining", "leased", "safe_share", "local", "left"}

func (m Mode) String() string {
	if m < numModes {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Local is the sidecar's own limiter as the Client drives it:
// *limiter.Controller.
type Local interface {
	SetCeiling(rate float64, until time.Time) error
	ClearCeiling()
	Load(now time.Time) limiter.Load
}

// Defaults of Config's zero fields.
const (
	DefaultRefresh = time.Second
	DefaultWeight  = 1
	// MinWeight and MaxWeight bound a member's weight: the scripts keep
	// weights in fixed notation with six decimals, so a smaller one would
	// be kept as 0 (the others' allocation then divides by it), and a far
	// larger one puts the fleet's water level below what they keep.
	MinWeight = 0.001
	MaxWeight = 1000
	// DefaultMaxRate is the sidecar's default SLUICE_MAX_RATE in requests.
	DefaultMaxRate = 100000
	// DefaultSafeFor: a safe share holds for 30s after the lease expired:
	// long enough to ride out a Redis restart or failover, short enough
	// that a fleet that changed meanwhile (members gone, capacity moved)
	// is not held to a stale share for long; each sidecar's own limit then
	// takes over alone.
	DefaultSafeFor = 30 * time.Second
	// leaseRefreshes: a lease lasts this many refreshes, and a member that
	// has not reported for as long is taken for dead (Params.MemberTTL is
	// the LeaseTTL): its share goes to the others only once its lease has
	// surely lapsed, so a member that is slow, not dead, cannot hold a
	// lease the others were given too; and the share of one that died is
	// idle for no longer. Two: a refresh is due every Refresh ±10%, so a
	// lease outlives the next one by most of a refresh; a refresh that
	// fails steps the member down to its safe share until the next one,
	// which for a member short of its demand is the same rate.
	leaseRefreshes = 2
	// maxTimeout bounds each call's deadline: Redis answers in a
	// millisecond; one that takes longer is slow, not busy.
	maxTimeout = 500 * time.Millisecond
	// keyTTL: a fleet nobody reported to for this long is forgotten.
	keyTTL = 10 * time.Minute
	// listEvery and listWanted: the member list (for /v1/status) is
	// fetched with a refresh at most every listEvery, and only while
	// someone read the status in the last listWanted: it is O(members)
	// per call.
	listEvery  = 5 * time.Second
	listWanted = time.Minute
	// errorLogEvery throttles the log line of a failing refresh.
	errorLogEvery = 30 * time.Second
	// budgetAvgWeight: the safe share's budget is an EWMA over about four
	// refreshes.
	budgetAvgWeight = 0.25
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// Resource names the shared budget (see ValidResource). Required.
	Resource string
	// Member names this sidecar in the fleet, unique among its members;
	// "" means MemberID().
	Member string
	// Weight is this sidecar's share relative to the others'; 0 means 1.
	Weight float64
	// Capacity is the store's known budget in units/s; 0 lets the fleet
	// learn it from throttles.
	Capacity float64
	// InitialRate, MinRate and MaxRate are the sidecar's (limiter.Config):
	// a new fleet starts from its members' initial rates, never gives a
	// member less than MinRate, and a member's first report, before it
	// knows its load, claims MaxRate. MinRate must be > 0; MaxRate 0 means
	// DefaultMaxRate.
	InitialRate, MinRate, MaxRate float64
	// Refresh is the period of the calls to Redis (jittered ±10%); 0 means
	// DefaultRefresh.
	Refresh time.Duration
	// Timeout is each call's deadline; 0 means Refresh/2, at most 500ms.
	Timeout time.Duration
	// LeaseTTL is how long a lease holds without renewal, and how long
	// the fleet keeps the share of a member that stopped reporting; 0
	// means two refreshes.
	LeaseTTL time.Duration
	// SafeFor is how long a safe share holds after the lease expired; 0
	// means DefaultSafeFor.
	SafeFor time.Duration
	// Logger receives mode changes and (throttled) refresh errors; nil
	// discards.
	Logger *slog.Logger
	// Metrics, if set, are kept up to date.
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	if c.Member == "" {
		c.Member = MemberID()
	}
	if c.MaxRate == 0 {
		c.MaxRate = DefaultMaxRate
	}
	if c.Weight == 0 {
		c.Weight = DefaultWeight
	}
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.Timeout == 0 {
		c.Timeout = min(c.Refresh/2, maxTimeout)
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = leaseRefreshes * c.Refresh
	}
	if c.SafeFor == 0 {
		c.SafeFor = DefaultSafeFor
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field of c, naming it.
func (c Config) Validate() error {
	pos := func(v float64) bool { return v > 0 && !math.IsInf(v, 1) }
	switch {
	case ValidResource(c.Resource) != nil:
		return ValidResource(c.Resource)
	case c.Member != "" && ValidResource(c.Member) != nil:
		return fmt.Errorf("fleet: Config.Member %q: A-Za-z0-9 and ._:/@=+- only, 1-%d characters", c.Member, maxResourceLen)
	case c.Weight != 0 && !(c.Weight >= MinWeight && c.Weight <= MaxWeight):
		return fmt.Errorf("fleet: Config.Weight=%v must be between %v and %v", c.Weight, MinWeight, MaxWeight)
	case c.Capacity != 0 && !pos(c.Capacity):
		return fmt.Errorf("fleet: Config.Capacity=%v must be 0 (learned) or finite and > 0", c.Capacity)
	case !pos(c.MinRate):
		return fmt.Errorf("fleet: Config.MinRate=%v must be finite and > 0", c.MinRate)
	case !pos(c.InitialRate):
		return fmt.Errorf("fleet: Config.InitialRate=%v must be finite and > 0", c.InitialRate)
	case c.MaxRate != 0 && !pos(c.MaxRate):
		return fmt.Errorf("fleet: Config.MaxRate=%v must be 0 (default) or finite and > 0", c.MaxRate)
	case c.Refresh < 0 || c.Refresh != 0 && c.Refresh < 10*time.Millisecond:
		return fmt.Errorf("fleet: Config.Refresh=%v must be 0 (default) or >= 10ms", c.Refresh)
	case c.Timeout < 0, c.LeaseTTL < 0, c.SafeFor < 0:
		return fmt.Errorf("fleet: Config.Timeout, LeaseTTL and SafeFor must be >= 0")
	}
	return nil
}

// MemberID returns a member id for this process: the host name (a pod's
// name in Kubernetes), the process id and a random suffix, so that a
// restarted sidecar is a new member and never inherits a sequence number.
func MemberID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if resourceRune(r) {
			return r
		}
		return '_'
	}, host)
	if len(host) > 100 {
		host = host[:100]
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	if host == "" {
		host = "sluice"
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Client is one sidecar's membership of a fleet: a loop that, about once
// per Refresh, reports the sidecar's demand to Redis in one script call
// with a short deadline, and sets the lease it gets as a ceiling on the
// sidecar's limiter. It never runs on the write path: a write never waits
// for Redis.
//
// When Redis is slow or down the Client steps down a ladder, never to
// "unlimited": it keeps the last lease until it expires (LeaseTTL after
// the refresh that got it), then caps the sidecar at its weighted share
// of the last budget (the safe share) for SafeFor, then leaves the
// sidecar's own adaptive limit alone. Every refresh tries again; go-redis
// reconnects by itself, and the first answer puts the Client back on a
// lease. There is no queue of calls to replay: a failed refresh is
// replaced by the next one, whose report supersedes it.
//
// Make one with New and run it with Run. Status is safe for concurrent
// use.
type Client struct {
	cfg    Config
	params Params
	rdb    redis.Scripter
	local  Local
	log    *slog.Logger
	m      *Metrics
	errLog rate.Sometimes

	mu           sync.Mutex
	mode         Mode
	seq          uint64
	lease        float64
	budget       float64 // last seen; 0 before the first answer
	budgetAvg    float64 // EWMA of the budgets seen (budgetAvgWeight), for the safe share
	members      int
	weightSum    float64
	demand       float64
	epoch        string // of the lease in force
	thrBase      uint64 // the limiter's throttle count when that lease came
	leaseUntil   time.Time
	lastOK       time.Time
	failing      bool
	failingSince time.Time
	lastErr      string
	errors       uint64
	list         []MemberInfo
	listAt       time.Time // when list was fetched (local clock)
	listNow      time.Time // the server's clock then
	statusAt     time.Time // when Status was last read
	transitions  uint64
	kick         chan struct{} // a mode change, for watchLapses; never blocks
}

// New returns a Client of the fleet cfg.Resource on the Redis rdb (a
// *redis.Client; see NewRedis), driving local. It does no I/O.
func New(cfg Config, rdb redis.Scripter, local Local) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{
		cfg: cfg,
		params: Params{
			// A lease runs from when its call was sent, a membership from
			// when the server ran it: with the same TTL, a member's lease
			// has lapsed by the time the others get its share.
			MemberTTL: cfg.LeaseTTL,
			Period:    cfg.Refresh,
			KeyTTL:    max(keyTTL, 10*cfg.LeaseTTL),
			Beta:      defaultBeta,
			Recover:   defaultRecover,
		},
		rdb:    rdb,
		local:  local,
		log:    cfg.Logger.With("component", "fleet", "resource", cfg.Resource),
		m:      cfg.Metrics,
		errLog: rate.Sometimes{Interval: errorLogEvery},
		kick:   make(chan struct{}, 1),
	}
	c.setModeMetricLocked()
	return c, nil
}

// Member returns this sidecar's id in the fleet.
func (c *Client) Member() string { return c.cfg.Member }

// Run refreshes at once and then about every Refresh until ctx ends, then
// leaves the fleet (one call with its own deadline), so that the others
// get this sidecar's share at their next refresh. Beside the refreshes, a
// watcher steps down the ladder when the lease (or the safe share) runs
// out unrenewed, at that moment rather than at the next refresh, which
// may be waiting on a Redis that does not answer: the limiter is never
// left without the rung it should be on.
func (c *Client) Run(ctx context.Context) {
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.watchLapses(wctx) })
	defer wg.Wait()
	defer stopWatch()
	c.Refresh(ctx)
	t := time.NewTimer(c.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.Leave()
			return
		case <-t.C:
			c.Refresh(ctx)
			t.Reset(c.interval())
		}
	}
}

// watchLapses calls Lapse when the rung the Client is on runs out, until
// ctx ends. A change of rung (becomeLocked) wakes it to look again; a
// renewed lease only makes it wake early, to find nothing to do.
func (c *Client) watchLapses(ctx context.Context) {
	t := time.NewTimer(c.untilLapse(time.Now()))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
			c.Lapse(time.Now())
		}
		t.Reset(c.untilLapse(time.Now()))
	}
}

// noLapse stands for "no rung runs out": the lapse timer of a Client that
// is joining, on its own limit or gone waits this long, to no effect.
const noLapse = time.Hour

// untilLapse is how long after now the rung the Client is on runs out
// without an answer from the fleet.
func (c *Client) untilLapse(now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.mode {
	case ModeLeased:
		return max(c.leaseUntil.Sub(now), 0)
	case ModeSafeShare:
		return max(c.leaseUntil.Add(c.cfg.SafeFor).Sub(now), 0)
	}
	return noLapse
}

// Lapse steps down the ladder if, at now, the lease or the safe share ran
// out without an answer from the fleet. Run calls it when one is due;
// tests may call it directly.
func (c *Client) Lapse(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode != ModeLeased && c.mode != ModeSafeShare {
		return
	}
	c.stepDownLocked(now)
	c.setMetricsLocked()
}

// interval is Refresh jittered by ±10%, so that a fleet started at once
// does not call in lockstep.
func (c *Client) interval() time.Duration {
	return time.Duration(float64(c.cfg.Refresh) * (0.9 + 0.2*mrand.Float64()))
}

// Refresh makes one call to Redis, within Timeout, and applies its answer
// or steps down the ladder. Run calls it; tests may call it directly.
func (c *Client) Refresh(ctx context.Context) {
	start := time.Now()
	r, ok := c.report(start)
	if !ok {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	g, err := update(cctx, c.rdb, c.cfg.Resource, c.params, r)
	cancel()
	end := time.Now()
	if c.m != nil {
		c.m.duration.Observe(end.Sub(start).Seconds())
	}
	if err != nil && ctx.Err() != nil {
		return // stopping: not Redis's failure
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode == ModeLeft {
		return
	}
	if err != nil {
		c.failedLocked(err, end)
		return
	}
	c.grantedLocked(g, r.WantMembers, start, end)
}

// report builds the next report at now, or says there is none to make
// (the Client left).
func (c *Client) report(now time.Time) (Report, bool) {
	load := c.local.Load(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode == ModeLeft {
		return Report{}, false
	}
	c.seq++
	c.demand = load.Demand
	r := Report{
		Member:        c.cfg.Member,
		Seq:           c.seq,
		Demand:        load.Demand,
		Weight:        c.cfg.Weight,
		Goodput:       load.Goodput,
		ThrottleEpoch: c.epoch,
		Capacity:      c.cfg.Capacity,
		HintBudget:    c.cfg.InitialRate,
		MinRate:       c.cfg.MinRate,
		WantMembers:   now.Sub(c.statusAt) < listWanted && now.Sub(c.listAt) >= listEvery,
	}
	if c.seq == 1 {
		// A member's first report: what it will want is not known yet,
		// its loader may not even have started. It claims a full share,
		// which its next report corrects if it wants less: a joiner gets
		// its share at once, not a refresh after its first writes.
		r.Demand = max(r.Demand, c.cfg.MaxRate)
	}
	if load.Throttles > c.thrBase {
		r.Throttles = load.Throttles - c.thrBase
	}
	if c.budget > 0 {
		// After Redis lost its state the fleet restarts from what its
		// members knew, not from scratch.
		r.HintBudget, r.HintKnown, r.HintWeight = c.budget, true, c.weightSum
	}
	if c.m != nil {
		c.m.demand.Set(load.Demand)
	}
	return r, true
}

// grantedLocked applies a grant that a refresh sent at sent got at now,
// with the member list if listed. Requires that c.mu is held.
func (c *Client) grantedLocked(g Grant, listed bool, sent, now time.Time) {
	if g.Epoch != c.epoch {
		// Throttles are counted afresh under each lease epoch, so that
		// those seen before a cut cannot cut again.
		c.epoch = g.Epoch
		c.thrBase = c.local.Load(now).Throttles
	}
	c.lease, c.budget, c.members, c.weightSum = g.Lease, g.Budget, g.Members, g.Weight
	if c.budgetAvg == 0 {
		c.budgetAvg = g.Budget
	} else {
		c.budgetAvg += (g.Budget - c.budgetAvg) * budgetAvgWeight
	}
	// From when the call was sent: the lease cannot outlive what the
	// fleet meant, however long the answer took, nor this member's
	// membership, which the server dates from when it ran the script,
	// later, in whole milliseconds (rounded down) and on its own clock
	// (which a slewing NTP may run 0.05% apart from this one): hence the
	// margin.
	c.leaseUntil = sent.Add(c.cfg.LeaseTTL - c.cfg.LeaseTTL/100 - time.Millisecond)
	c.lastOK = now
	if listed {
		c.list, c.listAt, c.listNow = g.List, now, g.Now
	}
	if c.failing {
		c.log.Info("fleet refresh succeeded again", "failing_for", now.Sub(c.failingSince).Round(time.Millisecond).String(),
			"errors", c.errors)
	}
	c.failing = false
	_ = c.local.SetCeiling(max(g.Lease, math.SmallestNonzeroFloat64), c.leaseUntil)
	c.becomeLocked(ModeLeased, "lease", now)
	c.setMetricsLocked()
}

// failedLocked steps down the ladder after a refresh failed with err at
// now. Requires that c.mu is held.
func (c *Client) failedLocked(err error, now time.Time) {
	c.errors++
	c.lastErr = err.Error()
	if c.m != nil {
		c.m.errors.Inc()
	}
	if !c.failing {
		c.failing, c.failingSince = true, now
		c.log.Warn("fleet refresh failed: keeping the lease until it expires, then a safe share, then the sidecar's own limit",
			"err", err, "lease_until", c.leaseUntil)
	} else {
		c.errLog.Do(func() {
			c.log.Warn("fleet refresh still failing", "err", err, "errors", c.errors, "mode", c.mode.String())
		})
	}
	c.stepDownLocked(now)
	c.setMetricsLocked()
}

// stepDownLocked picks the rung of the ladder for now, with no answer
// from the fleet since lastOK. Requires that c.mu is held.
func (c *Client) stepDownLocked(now time.Time) {
	switch {
	case c.mode == ModeLeased && now.Before(c.leaseUntil):
		// The lease holds; the limiter has it as its ceiling already.
	case c.budget > 0 && now.Before(c.leaseUntil.Add(c.cfg.SafeFor)):
		if c.mode != ModeSafeShare {
			_ = c.local.SetCeiling(max(c.safeShareLocked(), math.SmallestNonzeroFloat64), c.leaseUntil.Add(c.cfg.SafeFor))
			c.becomeLocked(ModeSafeShare, "lease expired", now)
		}
	default:
		if c.mode != ModeLocal {
			c.local.ClearCeiling()
			reason := "safe share expired"
			if c.budget == 0 {
				reason = "no answer from the fleet yet"
			}
			c.becomeLocked(ModeLocal, reason, now)
		}
	}
}

// safeShareLocked is this member's weighted share of the last budget:
// the last budget divided by the last member count, when weights are
// equal. The budget is the average of the last few seen: a learned budget
// moves by a tenth around the store's capacity, and members that lost
// Redis just before and just after a cut would otherwise hold shares a
// cut apart for as long as it is away. Requires that c.mu is held.
func (c *Client) safeShareLocked() float64 {
	if c.weightSum <= 0 {
		return c.budgetAvg
	}
	return c.budgetAvg * min(1, c.cfg.Weight/c.weightSum)
}

// becomeLocked moves to mode to at now, logging and counting the change
// once. Requires that c.mu is held.
func (c *Client) becomeLocked(to Mode, reason string, now time.Time) {
	if c.mode == to {
		return
	}
	if c.mode == ModeLeft {
		panic("BUG: fleet: transition out of " + ModeLeft.String())
	}
	from := c.mode
	c.mode = to
	c.transitions++
	lvl := slog.LevelInfo
	if to == ModeSafeShare || to == ModeLocal {
		lvl = slog.LevelWarn
	}
	c.log.Log(context.Background(), lvl, "fleet mode changed", "from", from.String(), "to", to.String(), "reason", reason,
		"lease", c.lease, "budget", c.budget, "members", c.members)
	c.setModeMetricLocked()
	select {
	case c.kick <- struct{}{}:
	default: // a wake-up is pending already
	}
}

func (c *Client) setModeMetricLocked() {
	if c.m == nil {
		return
	}
	for m := range numModes {
		v := 0.0
		if m == c.mode {
			v = 1
		}
		c.m.mode.WithLabelValues(m.String()).Set(v)
	}
}

func (c *Client) setMetricsLocked() {
	if c.m == nil {
		return
	}
	// The ceiling in force, not the last lease granted: a sidecar on its
	// own limit with the lease of an hour ago on its dashboard looks held
	// to a rate it no longer keeps.
	lease := 0.0
	switch c.mode {
	case ModeLeased:
		lease = c.lease
	case ModeSafeShare:
		lease = c.safeShareLocked()
	}
	c.m.lease.Set(lease)
	c.m.budget.Set(c.budget)
	c.m.members.Set(float64(c.members))
	deg := 0.0
	if c.failing {
		deg = 1
	}
	c.m.degraded.Set(deg)
}

// Leave removes this sidecar from the fleet, with its own deadline, and
// ends the Client: the others get its share at their next refresh rather
// than after its membership expires. The limiter keeps its ceiling until
// it lapses. Idempotent.
func (c *Client) Leave() {
	c.mu.Lock()
	if c.mode == ModeLeft {
		c.mu.Unlock()
		return
	}
	c.becomeLocked(ModeLeft, "stopping", time.Now())
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	if err := leave(ctx, c.rdb, c.cfg.Resource, c.cfg.Member); err != nil {
		c.log.Warn("leaving the fleet failed: the others get this sidecar's share when its membership expires",
			"err", err, "expires_in", c.params.MemberTTL)
	}
}

// Status is a Client's state, for /v1/status.
type Status struct {
	Resource   string
	Member     string
	Mode       string
	Degraded   bool // the last refresh failed
	Lease      float64
	LeaseUntil time.Time
	Budget     float64
	Capacity   float64 // configured; 0: learned
	Demand     float64
	Weight     float64
	Members    int
	LastOK     time.Time
	LastError  string
	Errors     uint64
	// List is the fleet's members as last fetched (at most listEvery
	// old while the status is read), nil before.
	List []MemberStatus
}

// MemberStatus is one member in Status.
type MemberStatus struct {
	ID     string
	Weight float64
	Demand float64
	Lease  float64
	Age    time.Duration // since it joined
}

// Status returns the Client's state at now. Reading it asks the next
// refreshes to fetch the member list. Safe for concurrent use.
func (c *Client) Status(now time.Time) Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statusAt = now
	s := Status{
		Resource: c.cfg.Resource, Member: c.cfg.Member, Mode: c.mode.String(), Degraded: c.failing,
		Lease: c.lease, LeaseUntil: c.leaseUntil, Budget: c.budget, Capacity: c.cfg.Capacity,
		Demand: c.demand, Weight: c.cfg.Weight, Members: c.members, LastOK: c.lastOK,
		LastError: c.lastErr, Errors: c.errors,
	}
	for _, m := range c.list {
		s.List = append(s.List, MemberStatus{
			ID: m.ID, Weight: m.Weight, Demand: m.Demand, Lease: m.Lease,
			Age: c.listNow.Sub(m.Joined) + now.Sub(c.listAt),
		})
	}
	return s
}

// Mode returns the Client's mode. Safe for concurrent use.
func (c *Client) Mode() Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}
