package limiter

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"weak"
)

// DefaultScopeRetireAfter is ScopesConfig.RetireAfter when 0: a scope's
// limiter that has seen no throttle for this long, and whose rate has
// climbed back to where the store last throttled it, goes away.
const DefaultScopeRetireAfter = 30 * time.Second

// ScopesConfig configures a Scopes.
type ScopesConfig struct {
	// Limiter is the Config of every scope's Controller, but for its
	// InitialRate, which is the rate given to Throttle (clamped to
	// [MinRate, MaxRate]). It must be valid (see Config.Validate).
	Limiter Config
	// Max bounds the number of scopes with a limiter; at Max, a new one
	// evicts the least recently used. It must be >= 1.
	Max int
	// RetireAfter: see DefaultScopeRetireAfter; 0 means that.
	RetireAfter time.Duration
}

// Scopes is a bounded set of per-scope Controllers, for a store that
// throttles parts of itself (a table, a bucket prefix, an index) rather
// than everything at once. Each write passes its scopes' limiters, if
// they have one, and the store's; a scoped throttle cuts only its scope's.
//
// A scope costs nothing until it is throttled: it has no limiter, Get
// returns nil and Active is 0, which a caller reads without a lock to
// skip scopes altogether. Throttle creates the scope's limiter at its
// first throttle, starting from the limits the caller says the scope saw
// (the store's, say: an upper bound), cut by that throttle; its own
// windows then measure what the scope's part of the store takes, and
// later throttles cut it to that. Tick steps every scope's limiter and
// retires those with nobody waiting that have been clean for RetireAfter
// and are back at or past their last throttle point (they no longer
// constrain anything), or that nobody used for RetireAfter.
//
// At most Max scopes have a limiter: a new scope evicts the least
// recently used one (used: returned by Get, or throttled), and Evictions
// counts it. An evicted or retired limiter is dropped, not closed: writes
// waiting in it or holding its permits finish as if it were still there,
// Close included.
//
// Scopes starts no goroutine and is safe for concurrent use.
type Scopes struct {
	mu sync.Mutex

	cfg    ScopesConfig
	m      map[string]*scopeEntry
	lru    scopeEntry // sentinel of the list: lru.next is the most recently used
	active atomic.Int32

	evictions uint64
	evictedAt time.Time // the latest eviction
	retired   uint64
	closed    bool // Close was called: every limiter, old or new, is closed
	// dropped are the limiters evicted or retired, for Close to close
	// too: a write may queue in one after it went, having had it from Get
	// just before, so whether one has writes waiting when it goes does
	// not tell. Weak: one that nobody holds any more is collected, and
	// Tick forgets it.
	dropped []weak.Pointer[Controller]
}

type scopeEntry struct {
	name        string
	c           *Controller
	since       time.Time
	prev, next  *scopeEntry
	throttledAt time.Time // latest Throttle
	usedAt      time.Time // latest Get or Throttle
	reason      string    // its reason
}

// NewScopes returns an empty Scopes, or the error of an invalid cfg.
func NewScopes(cfg ScopesConfig) (*Scopes, error) {
	if cfg.Max < 1 {
		return nil, fmt.Errorf("limiter: ScopesConfig.Max=%d must be >= 1", cfg.Max)
	}
	if cfg.RetireAfter < 0 {
		return nil, fmt.Errorf("limiter: ScopesConfig.RetireAfter=%v must be >= 0", cfg.RetireAfter)
	}
	if err := cfg.Limiter.Validate(); err != nil {
		return nil, err
	}
	if cfg.RetireAfter == 0 {
		cfg.RetireAfter = DefaultScopeRetireAfter
	}
	cfg.Limiter = cfg.Limiter.withDefaults()
	s := &Scopes{cfg: cfg, m: make(map[string]*scopeEntry)}
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	return s, nil
}

// Active returns the number of scopes with a limiter. It takes no lock:
// 0 lets a caller skip Get for every scope of a write.
func (s *Scopes) Active() int { return int(s.active.Load()) }

// Get returns scope's limiter, nil when it has none (never throttled,
// retired or evicted), and marks it used.
func (s *Scopes) Get(scope string) *Controller {
	if s.active.Load() == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[scope]
	if e == nil {
		return nil
	}
	s.touchLocked(e)
	return e.c
}

// Throttle reports a throttle smp of scope by an attempt that held no
// permit of its limiter (the scope had none when the attempt was
// admitted). A scope without a limiter gets one at rate (units/s) and
// conc slots, both clamped to the configured bounds (the store's limits
// when it was throttled, say, which the scope's writes had), and starts
// as if smp had cut it (seedThrottle): the rate at decreaseFactor of rate,
// rate its throttle point, startup over, a Retry-After counted toward a
// pause (or pausing it, if long); its slots are left as they are, since
// its empty windows say nothing of them. Its later throttles, reported
// through its permits, cut it from what it measured. A scope that has a
// limiter already is only marked used. An attempt that holds a permit of
// the scope's limiter reports through the permit instead. It returns the
// scope's limiter.
func (s *Scopes) Throttle(scope string, rate float64, conc int, smp Sample) *Controller {
	return s.throttle(scope, rate, conc, latencySeed{}, smp)
}

// ThrottleFrom is Throttle with the limits of store, the limiter of the
// store the scope is part of (which the attempt passed): the rate it
// sends at (its ceiling, if that is lower than its limit: what the scope's
// writes had), its slots, and what it has learned of the store's latency,
// which holds for each of its parts. A scope's limiter that had to learn
// again that the store's latency grows with its load would cut its slots
// on that latency, and lose a fifth of the goodput for a window or two, as
// the store's did before it.
func (s *Scopes) ThrottleFrom(scope string, store *Controller, smp Sample) *Controller {
	store.mu.Lock()
	rate, conc, lat := store.sendRateLocked(store.cfg.Now()), store.concLimit(), store.latencySeedLocked()
	store.mu.Unlock()
	return s.throttle(scope, rate, conc, lat, smp)
}

func (s *Scopes) throttle(scope string, rate float64, conc int, lat latencySeed, smp Sample) *Controller {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[scope]
	if e == nil {
		e = s.addLocked(scope, rate, conc)
		e.c.seedThrottle(smp, lat)
	}
	s.touchLocked(e)
	e.throttledAt, e.reason = s.cfg.Limiter.Now(), smp.Reason
	return e.c
}

// latencySeed is what a limiter has learned of its store's latency (see
// updateLatencyLocked and adoptLatencyLocked); the zero value is nothing.
type latencySeed struct {
	base, recent, mean, floor time.Duration
	load                      bool
}

// latencySeedLocked returns what c has learned of its store's latency.
// Requires that c.mu is held.
func (c *Controller) latencySeedLocked() latencySeed {
	return latencySeed{base: c.latBase, recent: c.latRecent, mean: c.latMean, floor: c.latFloor, load: c.latLoad}
}

// seedThrottle applies smp to a new limiter as the cut that ended its
// startup, from its current rate, and leaves concurrency alone (see
// Scopes.Throttle); the limiter starts from lat's knowledge of the
// store's latency.
func (c *Controller) seedThrottle(smp Sample, lat latencySeed) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	c.latBase, c.latRecent, c.latMean, c.latFloor, c.latLoad = lat.base, lat.recent, lat.mean, lat.floor, lat.load
	// The throttle was the store's answer: the scope's limiter does not
	// start cold (at most coldMax in flight, a burst of as many), which
	// would hold a scope that had the store's slots to two writes until
	// one of its own came back.
	c.answered = true
	c.samples[Congested]++
	c.lastThrottle, c.lastReason = now, smp.Reason
	c.applyCutLocked(cutDecision{share: 1, rate: rateEndStartup, rateBase: c.rate.v}, smp.Reason, smp.RetryAfter, now)
	if smp.RetryAfter > 0 {
		c.raStreak++
	}
	if smp.RetryAfter >= longRetryAfter {
		c.pauseLocked(smp.RetryAfter, smp.Reason, now)
	}
}

// addLocked makes scope's limiter, evicting the least recently used one
// at Max. Requires that s.mu is held.
func (s *Scopes) addLocked(scope string, rate float64, conc int) *scopeEntry {
	if len(s.m) >= s.cfg.Max {
		s.dropped = append(s.dropped, weak.Make(s.lru.prev.c))
		s.removeLocked(s.lru.prev)
		s.evictions++
		s.evictedAt = s.cfg.Limiter.Now()
	}
	cfg := s.cfg.Limiter
	if math.IsNaN(rate) {
		rate = cfg.MinRate // min and max pass NaN through: no rate known, the least
	}
	cfg.InitialRate = min(max(rate, cfg.MinRate), cfg.MaxRate)
	// The store's slots, not the default few: a scope that is throttled
	// now and then must not lose the concurrency its writes had.
	cfg.InitialConcurrency = min(max(conc, 1), cfg.MaxConcurrency)
	cfg.Logger = cfg.Logger.With("scope", scope)
	c, err := New(cfg)
	if err != nil {
		// cfg was validated in NewScopes and the rate clamped into it.
		panic("BUG: a scope's limiter config: " + err.Error())
	}
	if s.closed {
		c.Close() // a scope throttled during shutdown: its writes get ErrClosed too
	}
	e := &scopeEntry{name: scope, c: c, since: cfg.Now()}
	s.m[scope] = e
	e.prev, e.next = &s.lru, s.lru.next
	e.next.prev = e
	s.lru.next = e
	s.active.Store(int32(len(s.m)))
	return e
}

// touchLocked makes e the most recently used. Requires that s.mu is held.
func (s *Scopes) touchLocked(e *scopeEntry) {
	e.usedAt = s.cfg.Limiter.Now()
	if s.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = &s.lru, s.lru.next
	e.next.prev = e
	s.lru.next = e
}

// removeLocked drops e. Requires that s.mu is held.
func (s *Scopes) removeLocked(e *scopeEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(s.m, e.name)
	s.active.Store(int32(len(s.m)))
}

// Overflowing reports whether a limiter was evicted less than RetireAfter
// before now: more scopes were throttled lately than Max. A scope's
// limiter then may go before any later write of its scope takes from it
// (every object its own scope, under hashed key prefixes, say), and learns
// nothing; the caller had better count such throttles store-wide too.
func (s *Scopes) Overflowing(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.evictedAt.IsZero() && now.Sub(s.evictedAt) < s.cfg.RetireAfter
}

// Tick steps every scope's limiter (Controller.Tick) and retires the
// scopes that no longer constrain anything (see Scopes). Call it from the
// loop that ticks the store's limiter.
func (s *Scopes) Tick(now time.Time) {
	s.mu.Lock()
	entries := make([]*scopeEntry, 0, len(s.m))
	for _, e := range s.m {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	for _, e := range entries {
		e.c.Tick(now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped = slices.DeleteFunc(s.dropped, func(c weak.Pointer[Controller]) bool { return c.Value() == nil })
	for _, e := range entries {
		if s.m[e.name] != e || now.Sub(e.throttledAt) < s.cfg.RetireAfter {
			continue
		}
		snap := e.c.Snapshot()
		recovered := snap.Rate >= snap.LastMaxRate && now.Sub(snap.LastThrottle) >= s.cfg.RetireAfter
		unused := now.Sub(e.usedAt) >= s.cfg.RetireAfter && snap.InFlight == 0
		if (recovered || unused) && snap.Queued == 0 && !now.Before(snap.PausedUntil) {
			s.dropped = append(s.dropped, weak.Make(e.c))
			s.removeLocked(e)
			s.retired++
		}
	}
}

// ScopeStatus is one scope's limiter as Status shows it.
type ScopeStatus struct {
	Scope string
	// Since is when the scope got its limiter (its first throttle since it
	// last had none).
	Since time.Time
	// Snapshot is the limiter's; its LastThrottle and LastReason are the
	// scope's latest throttle, the one that made the limiter included.
	Snapshot
}

// ScopesStats counts what happened to the set.
type ScopesStats struct {
	Active    int    // scopes with a limiter now
	Max       int    // ScopesConfig.Max
	Evictions uint64 // limiters dropped for a new scope at Max
	Retired   uint64 // limiters dropped by Tick: clean and recovered
}

// Status returns every scope's limiter, the most recently used first, and
// the set's counts.
func (s *Scopes) Status() ([]ScopeStatus, ScopesStats) {
	// The entries' fields are copied under s.mu (Throttle writes them);
	// the limiters' snapshots are taken after, each under its own lock.
	type entryCopy struct {
		name, reason       string
		since, throttledAt time.Time
		c                  *Controller
	}
	s.mu.Lock()
	entries := make([]entryCopy, 0, len(s.m))
	for e := s.lru.next; e != &s.lru; e = e.next {
		entries = append(entries, entryCopy{e.name, e.reason, e.since, e.throttledAt, e.c})
	}
	st := ScopesStats{Active: len(s.m), Max: s.cfg.Max, Evictions: s.evictions, Retired: s.retired}
	s.mu.Unlock()
	out := make([]ScopeStatus, len(entries))
	for i, e := range entries {
		out[i] = ScopeStatus{Scope: e.name, Since: e.since, Snapshot: e.c.Snapshot()}
		if out[i].LastThrottle.Before(e.throttledAt) {
			out[i].LastThrottle, out[i].LastReason = e.throttledAt, e.reason
		}
	}
	return out, st
}

// Close closes every scope's limiter (Controller.Close: its waiters get
// ErrClosed, as the store's do at shutdown), those evicted or retired
// that a write may still wait in included, and every limiter a later
// Throttle makes.
func (s *Scopes) Close() {
	s.mu.Lock()
	s.closed = true
	cs := make([]*Controller, 0, len(s.m)+len(s.dropped))
	for _, e := range s.m {
		cs = append(cs, e.c)
	}
	for _, d := range s.dropped {
		if c := d.Value(); c != nil {
			cs = append(cs, c)
		}
	}
	s.dropped = nil
	s.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// Names returns the scopes with a limiter, sorted.
func (s *Scopes) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.m))
	for name := range s.m {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
