package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// scenario is one comparison setup.
type scenario struct {
	name     string
	style    storesim.Style
	profile  string  // sluice's classify profile
	capacity float64 // C, requests/s
	phase    time.Duration
	writers  int // per loader
	// settle is excluded from the start of each flat phase when computing
	// the steady-phase throttle ratio.
	settle time.Duration

	store storesim.Config // latency model etc.; Schedule, Style and Observe are set per run

	fleetSize     int
	fleetCapacity float64 // requests/s shared by the fleet
	fleetDuration time.Duration
	fleetJoinAt   time.Duration // the last instance starts then
	fleetJainFrom time.Duration // Jain's index over [fleetJainFrom, fleetDuration)
}

// scenarioStore is the simulated store of both runs: an S3-like store
// whose latency grows with its load, with the jitter and network delay
// that keep clients sending at one virtual instant from arriving as one.
var scenarioStore = storesim.Config{
	BaseLatency:      10 * time.Millisecond,
	MaxLatencyFactor: 10,
	Burst:            100 * time.Millisecond,
	RejectCost:       0.05,
	LatencyJitter:    0.2,
	NetworkDelay:     2 * time.Millisecond,
	Seed:             1,
}

// fullScenario is the documented run of BENCHMARKS.md.
var fullScenario = scenario{
	name:          "full",
	style:         storesim.StyleS3,
	profile:       "s3",
	capacity:      200,
	phase:         30 * time.Second,
	writers:       64,
	settle:        5 * time.Second,
	store:         scenarioStore,
	fleetSize:     8,
	fleetCapacity: 800,
	fleetDuration: 60 * time.Second,
	fleetJoinAt:   30 * time.Second,
	fleetJainFrom: 45 * time.Second,
}

// shortScenario is the reduced run of plain `go test`.
var shortScenario = scenario{
	name:          "short",
	style:         storesim.StyleS3,
	profile:       "s3",
	capacity:      100,
	phase:         10 * time.Second,
	writers:       64,
	settle:        5 * time.Second,
	store:         scenarioStore,
	fleetSize:     8,
	fleetCapacity: 400,
	fleetDuration: 24 * time.Second,
	fleetJoinAt:   12 * time.Second,
	fleetJainFrom: 18 * time.Second,
}

// Phase indexes of the schedule.
const (
	phaseC = iota
	phaseHalf
	phaseDouble
	phaseRampDown
	phaseRampUp
	numPhases
)

// schedule is C, C/2, 2C, then a ramp from 2C down to C and back up to 2C.
func (s scenario) schedule() *storesim.Phases {
	c := s.capacity
	return storesim.MustPhases(
		storesim.Steady("C", s.phase, c),
		storesim.Steady("C/2", s.phase, c/2),
		storesim.Steady("2C", s.phase, 2*c),
		storesim.Ramp("ramp 2C→C", s.phase/2, 2*c, c),
		storesim.Ramp("ramp C→2C", s.phase/2, c, 2*c),
	)
}

func (s scenario) payload() *writeReq {
	return &writeReq{method: "PUT", url: "http://store.sim/bench/object", body: []byte(strings.Repeat("x", 1024)), cost: 1}
}

// instance is one contender instance in a run.
type instance struct {
	id      string
	startAt time.Duration
}

// runStore runs instances of c against one store with schedule sched for
// d, each driven by s.writers greedy writers, and returns the recording.
// It uses the time package only, so under synctest it runs on virtual time.
func (s scenario) runStore(ctx context.Context, c contender, sched storesim.Schedule, d time.Duration, insts []instance) (*run, error) {
	start := time.Now()
	rec := newRecorder(start, d)
	cfg := s.store
	cfg.Style, cfg.Unit, cfg.Schedule, cfg.Observe = s.style, storesim.Requests, sched, rec.observe
	store, err := storesim.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	profile, err := classify.ParseProfile(s.profile)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithDeadline(ctx, start.Add(d))
	defer cancel()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		clients  []client
		firstErr error
	)
	for _, in := range insts {
		wg.Go(func() {
			if !sleepCtx(ctx, in.startAt) {
				return
			}
			// The static contender's operator divides the store's
			// capacity among the instances they run.
			share := sched.Capacity(0) / float64(len(insts))
			cl, err := c.new(env{id: in.id, rt: store.Transport(), style: s.style, profile: profile, capacity: share})
			mu.Lock()
			if err != nil {
				firstErr = fmt.Errorf("bench: %s instance %s: %w", c.name, in.id, err)
				mu.Unlock()
				cancel()
				return
			}
			clients = append(clients, cl)
			mu.Unlock()
			if lr, ok := cl.(limitReporter); ok && in.startAt == 0 && len(insts) == 1 {
				wg.Go(func() { rec.traceLimit(ctx, lr) })
			}
			var writers sync.WaitGroup
			for range s.writers {
				writers.Go(func() {
					w := s.payload()
					for ctx.Err() == nil {
						t0 := time.Now()
						ok := cl.write(ctx, w)
						if ctx.Err() != nil {
							return // cut off by the end of the run: not a loader outcome
						}
						rec.wrote(in.id, time.Since(t0), ok)
					}
				})
			}
			writers.Wait()
		})
	}
	wg.Wait()
	for _, cl := range clients {
		cl.close()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	r := rec.finish(sched)
	r.stats = store.StatsNow()
	return r, nil
}

// single runs one instance of c through the whole schedule.
func (s scenario) single(ctx context.Context, c contender) (*run, error) {
	sched := s.schedule()
	return s.runStore(ctx, c, sched, sched.Total(), []instance{{id: "solo"}})
}

// fleet runs s.fleetSize instances of c on one store of constant capacity;
// the last one joins at s.fleetJoinAt.
func (s scenario) fleet(ctx context.Context, c contender) (*run, error) {
	insts := make([]instance, s.fleetSize)
	for i := range insts {
		insts[i].id = fmt.Sprintf("i%d", i)
	}
	insts[len(insts)-1].startAt = s.fleetJoinAt
	return s.runStore(ctx, c, storesim.Constant(s.fleetCapacity), s.fleetDuration, insts)
}
