// Package storesim simulates a write-throttling store (S3, Elasticsearch,
// DynamoDB, VictoriaMetrics or a generic quota API) for sluice's proxy tests,
// its benchmarks and `sluice demo`.
//
// The model: the store serves work at a capacity, in Unit per second, that
// follows a Schedule. Admission is a token bucket refilled at the current
// capacity with a small burst allowance (Config.Burst seconds of capacity).
// A request whose cost fits is accepted and answered after a service latency
// that grows as the recent accepted rate nears capacity, as in a simple
// queue: BaseLatency × 1/(1−ρ), clamped to BaseLatency × MaxLatencyFactor,
// where ρ is the accepted rate over the last second divided by capacity. A
// request that does not fit is rejected in the throttling style of the
// configured Style, and the rejection itself costs the store RejectCost of
// the request's cost. Elasticsearch-style bulk requests are admitted item by
// item: the items above capacity are rejected with per-item 429s inside a 200
// response. An optional concurrency limit (VictoriaMetrics
// -maxConcurrentInserts) makes requests wait up to MaxQueueDuration for a
// slot, then rejects them.
//
// Store is the deterministic core: every method takes the time explicitly
// and does no I/O. Server wraps it in an http.Handler that reads the clock
// from Config.Now and sleeps for the service latency, so it serves real
// clients on loopback and, under testing/synctest, in-process clients on
// virtual time (see Server.Transport).
package storesim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Unit is what the store's capacity counts.
type Unit uint8

const (
	// Requests: every write request costs 1.
	Requests Unit = iota
	// Bytes: a write costs its body length in bytes.
	Bytes
	// Items: a write costs the number of items it carries (bulk actions for
	// Elasticsearch, non-empty lines otherwise).
	Items
)

func (u Unit) String() string {
	switch u {
	case Requests:
		return "requests"
	case Bytes:
		return "bytes"
	case Items:
		return "items"
	}
	return fmt.Sprintf("Unit(%d)", uint8(u))
}

// Outage makes the store misbehave on purpose, for stall and timeout tests.
type Outage uint8

const (
	// Healthy serves according to the capacity schedule.
	Healthy Outage = iota
	// Refuse throttles every write in the configured Style, whatever the
	// capacity: the store accepts nothing.
	Refuse
	// Hang never answers a write: the request is held until the client gives
	// up (its context ends) or the server is closed.
	Hang
	// Fail answers every write with a 500 internal error.
	Fail
)

func (o Outage) String() string {
	switch o {
	case Healthy:
		return "healthy"
	case Refuse:
		return "refuse"
	case Hang:
		return "hang"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("Outage(%d)", uint8(o))
}

// Config describes a simulated store. Zero durations and factors take the
// documented defaults.
type Config struct {
	// Style is how the store throttles (status code, headers, body).
	Style Style
	// Unit is what Schedule's capacity counts.
	Unit Unit
	// Schedule is the capacity in Unit per second over time. Required.
	Schedule Schedule
	// Burst is the burst allowance, in seconds of the current capacity.
	// Default 100ms.
	Burst time.Duration
	// BaseLatency is the service latency of an accepted write on an idle
	// store. Default 10ms.
	BaseLatency time.Duration
	// MaxLatencyFactor clamps the queueing factor 1/(1−ρ). Default 10.
	MaxLatencyFactor float64
	// LatencyJitter spreads every latency uniformly by ± this fraction
	// (0.2: ±20%), as real service times vary. Default 0; at most 1.
	LatencyJitter float64
	// NetworkDelay, if positive, delays each write's arrival at the store by
	// a uniformly random time in [0, NetworkDelay), so that clients that
	// send at the same instant arrive in a random order.
	NetworkDelay time.Duration
	// Seed seeds the jitter's random source (PCG); the same seed gives the
	// same sequence of draws.
	Seed uint64
	// RejectLatency is how long a rejection takes. Default BaseLatency/2.
	RejectLatency time.Duration
	// RejectCost is the share of a rejected request's cost that the store
	// still spends on it (parsing, answering). Default 0.05; negative means 0.
	RejectCost float64
	// RetryAfter, if positive, is sent as Retry-After on every StyleGeneric
	// throttle; otherwise the store sends the time until the request would
	// fit, rounded up to whole seconds (at least 1), as quota APIs do.
	RetryAfter time.Duration
	// MaxConcurrency caps concurrent writes (VictoriaMetrics
	// -maxConcurrentInserts); 0 means no cap.
	MaxConcurrency int
	// MaxQueueDuration is how long a write waits for a concurrency slot
	// before it is rejected (VictoriaMetrics -insert.maxQueueDuration).
	// Default 1s.
	MaxQueueDuration time.Duration
	// Now is the clock the Server reads; default time.Now. Under
	// testing/synctest time.Now is virtual.
	Now func() time.Time
	// Observe, if set, is called once per write after its admission decision,
	// without locks held, from the request's goroutine. It must be safe for
	// concurrent use.
	Observe func(Event)
}

func (c *Config) setDefaults() {
	if c.Burst <= 0 {
		c.Burst = 100 * time.Millisecond
	}
	if c.BaseLatency <= 0 {
		c.BaseLatency = 10 * time.Millisecond
	}
	if c.MaxLatencyFactor < 1 {
		c.MaxLatencyFactor = 10
	}
	if c.RejectLatency <= 0 {
		c.RejectLatency = c.BaseLatency / 2
	}
	if c.RejectCost == 0 {
		c.RejectCost = 0.05
	} else if c.RejectCost < 0 {
		c.RejectCost = 0
	}
	if c.MaxQueueDuration <= 0 {
		c.MaxQueueDuration = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if c.Schedule == nil {
		return fmt.Errorf("storesim: Config.Schedule is nil")
	}
	if c.Style > StyleVictoriaMetrics {
		return fmt.Errorf("storesim: unknown style %d", c.Style)
	}
	if c.Unit > Items {
		return fmt.Errorf("storesim: unknown unit %d", c.Unit)
	}
	if c.LatencyJitter < 0 || c.LatencyJitter > 1 || math.IsNaN(c.LatencyJitter) {
		return fmt.Errorf("storesim: LatencyJitter %v, want in [0, 1]", c.LatencyJitter)
	}
	if c.MaxConcurrency < 0 {
		return fmt.Errorf("storesim: MaxConcurrency %d, want ≥ 0", c.MaxConcurrency)
	}
	return nil
}

// Request is one write as the store's admission sees it.
type Request struct {
	// Cost in Unit; 0 is treated as 1 for Requests.
	Cost float64
	// Items carried (≥ 1). Only per-item styles (Elasticsearch) admit part
	// of a request; each item then costs Cost/Items.
	Items int
}

// Decision is the store's answer to one write.
type Decision struct {
	// AcceptedItems of the request's Items were stored; the rest were
	// throttled. For all-or-nothing styles it is 0 or Items.
	AcceptedItems int
	// AcceptedCost is the cost of the accepted items.
	AcceptedCost float64
	// Refused is set when the whole request was throttled.
	Refused bool
	// Latency is how long the store takes to answer.
	Latency time.Duration
	// RetryAfter is the time until the request would fit (rounded up to a
	// whole second, at least 1s) or Config.RetryAfter; set on throttles.
	RetryAfter time.Duration
	// Capacity is the capacity at the time of the decision, in Unit/s.
	Capacity float64
	// Utilisation is ρ, the recent accepted rate over capacity (≤ 1).
	Utilisation float64
}

// Throttled reports whether any part of the request was rejected.
func (d Decision) Throttled(items int) bool { return d.Refused || d.AcceptedItems < items }

// Event reports one write to Config.Observe.
type Event struct {
	Time   time.Time
	Client string // the request's ClientHeader, "" if absent
	Cost   float64
	Items  int
	// AcceptedItems and AcceptedCost are what the store kept.
	AcceptedItems int
	AcceptedCost  float64
	// Throttled is set when any item was rejected, for whatever reason
	// (capacity, concurrency limit, Refuse outage).
	Throttled bool
	// Failed is set for Fail-outage 500s and hung writes the client gave up on.
	Failed bool
	// Capacity at the time of the write, in Unit/s.
	Capacity float64
}

// Stats are cumulative counters since the store started. Write counters
// exclude admin requests.
type Stats struct {
	Attempts           int64   `json:"attempts"`            // write requests received
	Accepted           int64   `json:"accepted"`            // fully accepted
	Partial            int64   `json:"partial"`             // some items accepted, some throttled
	Throttled          int64   `json:"throttled"`           // any item throttled (includes Partial and ConcurrencyLimited)
	Failed             int64   `json:"failed"`              // Fail-outage errors and abandoned hung writes
	ConcurrencyLimited int64   `json:"concurrency_limited"` // rejected after waiting MaxQueueDuration for a slot
	Items              int64   `json:"items"`
	AcceptedItems      int64   `json:"accepted_items"`
	RejectedItems      int64   `json:"rejected_items"`
	AcceptedCost       float64 `json:"accepted_cost"`
	RejectedCost       float64 `json:"rejected_cost"`
	Admin              int64   `json:"admin"` // admin/cleanup calls (never throttled)
	InFlight           int     `json:"in_flight"`
	Capacity           float64 `json:"capacity"` // current, in Unit/s
	Unit               string  `json:"unit"`
	Outage             string  `json:"outage"`
}

// Store is the deterministic admission model. All methods are safe for
// concurrent use; time is always a parameter.
type Store struct {
	mu sync.Mutex

	cfg        Config
	sched      Schedule
	schedStart time.Time

	tokens   float64 // may go negative: big requests and rejections put the store in debt
	tokensAt time.Time
	load     float64 // accepted cost, exponentially decayed with time constant loadTau
	loadAt   time.Time
	outage   Outage
	stats    Stats
	rnd      *rand.Rand
}

// loadTau is the time constant of the utilisation estimate.
const loadTau = time.Second

// NewStore returns a store whose schedule starts at start, with a full burst.
func NewStore(cfg Config, start time.Time) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, sched: cfg.Schedule, schedStart: start, tokensAt: start, loadAt: start,
		rnd: rand.New(rand.NewPCG(cfg.Seed, 0x73746f726573696d))}
	s.tokens = s.burstLocked(start)
	return s, nil
}

// Config returns the store's configuration with defaults applied.
func (s *Store) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// SetSchedule replaces the capacity schedule; the new schedule's time zero
// is now.
func (s *Store) SetSchedule(now time.Time, sched Schedule) {
	if sched == nil {
		panic("storesim: SetSchedule(nil)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refillLocked(now)
	s.sched, s.schedStart = sched, now
	s.tokens = math.Min(s.tokens, s.burstLocked(now))
}

// SetCapacity makes the capacity c Unit/s from now on.
func (s *Store) SetCapacity(now time.Time, c float64) { s.SetSchedule(now, Constant(c)) }

// SetOutage switches the store's outage mode; Healthy restores normal service.
func (s *Store) SetOutage(o Outage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = o
}

// Outage returns the current outage mode.
func (s *Store) Outage() Outage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outage
}

// Capacity returns the capacity at now, in Unit/s.
func (s *Store) Capacity(now time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.capacityLocked(now)
}

// Stats returns the counters and current capacity at now.
func (s *Store) Stats(now time.Time) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Capacity = s.capacityLocked(now)
	st.Unit = s.cfg.Unit.String()
	st.Outage = s.outage.String()
	return st
}

// Admit decides one write arriving at now and charges the store for it.
// It does not count the write as in flight; the Server does that.
func (s *Store) Admit(now time.Time, r Request) Decision {
	r = s.normalise(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refillLocked(now)
	capacity := s.capacityLocked(now)
	d := Decision{Capacity: capacity, Utilisation: s.utilisationLocked(now, capacity)}
	s.stats.Attempts++
	s.stats.Items += int64(r.Items)

	switch s.outage {
	case Refuse:
		s.rejectLocked(r.Cost, r.Items)
		d.Refused = true
		d.Latency = s.jitterLocked(s.cfg.RejectLatency)
		d.RetryAfter = s.retryAfterLocked(r.Cost, capacity)
		return d
	case Fail, Hang:
		s.stats.Failed++
		d.Latency = s.cfg.RejectLatency
		return d
	}

	perItem := r.Cost / float64(r.Items)
	n := r.Items
	if capacity <= 0 {
		n = 0 // a store with no capacity takes nothing, debt or not
	} else if s.tokens < r.Cost {
		burst := s.burstLocked(now)
		switch {
		case s.cfg.Style.partial():
			// Admit the items that fit; a single item bigger than the
			// burst gets in on a full bucket, putting the store in debt.
			n = 0
			if s.tokens > 0 && perItem > 0 {
				n = min(r.Items, int(s.tokens/perItem))
			}
			if n == 0 && s.tokens >= math.Min(perItem, burst) {
				n = 1
			}
		case s.tokens < math.Min(r.Cost, burst):
			// All or nothing; a request bigger than the burst gets in
			// on a full bucket, putting the store in debt.
			n = 0
		}
	}
	accepted := perItem * float64(n)
	s.tokens -= accepted
	s.load += accepted
	d.AcceptedItems, d.AcceptedCost = n, accepted
	s.stats.AcceptedItems += int64(n)
	s.stats.AcceptedCost += accepted
	if n < r.Items {
		s.rejectLocked(r.Cost-accepted, r.Items-n)
		d.RetryAfter = s.retryAfterLocked(r.Cost-accepted, capacity)
	}
	switch {
	case n == r.Items:
		s.stats.Accepted++
	case n > 0:
		s.stats.Partial++
	default:
		d.Refused = true
	}
	if n == 0 {
		d.Latency = s.jitterLocked(s.cfg.RejectLatency)
		return d
	}
	factor := 1 / (1 - math.Min(d.Utilisation, 0.999999))
	d.Latency = s.jitterLocked(time.Duration(float64(s.cfg.BaseLatency) * math.Min(factor, s.cfg.MaxLatencyFactor)))
	return d
}

// jitterLocked spreads d by ±LatencyJitter. Requires s.mu held.
func (s *Store) jitterLocked(d time.Duration) time.Duration {
	if s.cfg.LatencyJitter == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + s.cfg.LatencyJitter*(2*s.rnd.Float64()-1)))
}

// networkDelay draws a write's arrival delay.
func (s *Store) networkDelay() time.Duration {
	if s.cfg.NetworkDelay <= 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(s.rnd.Int64N(int64(s.cfg.NetworkDelay)))
}

// RejectConcurrency records a write rejected by the concurrency limit.
func (s *Store) RejectConcurrency(now time.Time, r Request) Decision {
	r = s.normalise(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refillLocked(now)
	capacity := s.capacityLocked(now)
	s.stats.Attempts++
	s.stats.Items += int64(r.Items)
	s.stats.ConcurrencyLimited++
	s.rejectLocked(r.Cost, r.Items)
	return Decision{Refused: true, Capacity: capacity, Utilisation: s.utilisationLocked(now, capacity),
		Latency: 0, RetryAfter: s.retryAfterLocked(r.Cost, capacity)}
}

// CountAdmin records an admin or cleanup call.
func (s *Store) CountAdmin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Admin++
}

// addInFlight tracks writes being served, for Stats.InFlight.
func (s *Store) addInFlight(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.InFlight += delta
}

func (s *Store) normalise(r Request) Request {
	if r.Items < 1 {
		r.Items = 1
	}
	if r.Cost <= 0 && s.cfg.Unit == Requests {
		r.Cost = 1
	}
	if r.Cost < 0 {
		r.Cost = 0
	}
	return r
}

// rejectLocked charges a rejection. Requires s.mu held.
func (s *Store) rejectLocked(cost float64, items int) {
	s.stats.Throttled++
	s.stats.RejectedItems += int64(items)
	s.stats.RejectedCost += cost
	s.tokens -= s.cfg.RejectCost * cost
	// The debt is bounded by one second of capacity so that a rejection
	// storm degrades the store without stopping it for ever.
	if floor := -s.capacityLocked(s.tokensAt); s.tokens < floor {
		s.tokens = floor
	}
}

// retryAfterLocked is the time until cost would fit. Requires s.mu held.
func (s *Store) retryAfterLocked(cost, capacity float64) time.Duration {
	if s.cfg.RetryAfter > 0 {
		return s.cfg.RetryAfter
	}
	if capacity <= 0 || s.outage == Refuse {
		return time.Second
	}
	need := math.Min(cost, capacity*s.cfg.Burst.Seconds()) - s.tokens
	secs := math.Max(1, math.Ceil(need/capacity))
	return time.Duration(secs) * time.Second
}

// capacityLocked requires s.mu held.
func (s *Store) capacityLocked(now time.Time) float64 {
	return math.Max(0, s.sched.Capacity(now.Sub(s.schedStart)))
}

// burstLocked requires s.mu held.
func (s *Store) burstLocked(now time.Time) float64 {
	return s.capacityLocked(now) * s.cfg.Burst.Seconds()
}

// refillLocked adds the tokens earned since the last refill, integrating the
// schedule with the trapezoidal rule. Requires s.mu held.
func (s *Store) refillLocked(now time.Time) {
	if !now.After(s.tokensAt) {
		return
	}
	dt := now.Sub(s.tokensAt).Seconds()
	earned := dt * (s.capacityLocked(s.tokensAt) + s.capacityLocked(now)) / 2
	s.tokens = math.Min(s.tokens+earned, s.burstLocked(now))
	s.tokensAt = now
}

// utilisationLocked decays the load to now and returns ρ. Requires s.mu held.
func (s *Store) utilisationLocked(now time.Time, capacity float64) float64 {
	if now.After(s.loadAt) {
		s.load *= math.Exp(-float64(now.Sub(s.loadAt)) / float64(loadTau))
		s.loadAt = now
	}
	if capacity <= 0 {
		return 1
	}
	return math.Min(1, s.load/loadTau.Seconds()/capacity)
}
