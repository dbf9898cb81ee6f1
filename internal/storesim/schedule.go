package storesim

import (
	"fmt"
	"math"
	"time"
)

// A Schedule gives the store's capacity, in the store's Unit per second, at
// elapsed time t since the schedule started. Implementations must be pure
// functions of t and safe for concurrent use.
type Schedule interface {
	Capacity(t time.Duration) float64
}

// ScheduleFunc adapts a function to the Schedule interface.
type ScheduleFunc func(t time.Duration) float64

// Capacity returns f(t).
func (f ScheduleFunc) Capacity(t time.Duration) float64 { return f(t) }

// Constant returns a Schedule whose capacity is c at all times.
func Constant(c float64) Schedule {
	return ScheduleFunc(func(time.Duration) float64 { return c })
}

// A Phase is one segment of a piecewise-linear schedule: capacity goes
// linearly from From to To over Duration (From == To is a flat step).
type Phase struct {
	Name     string
	Duration time.Duration
	From, To float64
}

// Steady returns a flat phase at capacity c.
func Steady(name string, d time.Duration, c float64) Phase {
	return Phase{Name: name, Duration: d, From: c, To: c}
}

// Ramp returns a phase whose capacity moves linearly from `from` to `to`.
func Ramp(name string, d time.Duration, from, to float64) Phase {
	return Phase{Name: name, Duration: d, From: from, To: to}
}

// Phases is a piecewise-linear Schedule made of consecutive phases. Before
// the first phase it holds the first phase's From; after the last phase it
// holds the last phase's To. The zero value is not usable: build it with
// NewPhases.
type Phases struct {
	phases []Phase
	starts []time.Duration // starts[i] is when phases[i] begins
	total  time.Duration
}

// NewPhases validates and returns a piecewise-linear schedule. Every phase
// needs a positive duration and non-negative capacities.
func NewPhases(ps ...Phase) (*Phases, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("storesim: NewPhases needs at least one phase")
	}
	s := &Phases{phases: append([]Phase(nil), ps...), starts: make([]time.Duration, len(ps))}
	for i, p := range ps {
		if p.Duration <= 0 {
			return nil, fmt.Errorf("storesim: phase %d (%q) has duration %v, want > 0", i, p.Name, p.Duration)
		}
		if p.From < 0 || p.To < 0 || math.IsNaN(p.From) || math.IsNaN(p.To) {
			return nil, fmt.Errorf("storesim: phase %d (%q) has capacity %v→%v, want ≥ 0", i, p.Name, p.From, p.To)
		}
		s.starts[i] = s.total
		s.total += p.Duration
	}
	return s, nil
}

// MustPhases is NewPhases for fixed, known-good schedules; it panics on error.
func MustPhases(ps ...Phase) *Phases {
	s, err := NewPhases(ps...)
	if err != nil {
		panic(err)
	}
	return s
}

// Capacity implements Schedule.
func (s *Phases) Capacity(t time.Duration) float64 {
	i := s.Index(t)
	p := s.phases[i]
	if t < s.starts[i] {
		return p.From
	}
	into := t - s.starts[i]
	if into >= p.Duration {
		return p.To
	}
	return p.From + (p.To-p.From)*float64(into)/float64(p.Duration)
}

// Index returns the index of the phase that contains t, clamped to the first
// and last phase.
func (s *Phases) Index(t time.Duration) int {
	for i := len(s.starts) - 1; i > 0; i-- {
		if t >= s.starts[i] {
			return i
		}
	}
	return 0
}

// Len returns the number of phases.
func (s *Phases) Len() int { return len(s.phases) }

// Phase returns phase i and the elapsed time at which it starts.
func (s *Phases) Phase(i int) (Phase, time.Duration) { return s.phases[i], s.starts[i] }

// Total returns the summed duration of all phases.
func (s *Phases) Total() time.Duration { return s.total }

// Sine returns a Schedule oscillating around mean with the given amplitude
// and period: mean + amplitude·sin(2πt/period), floored at zero.
func Sine(mean, amplitude float64, period time.Duration) Schedule {
	return ScheduleFunc(func(t time.Duration) float64 {
		if period <= 0 {
			return mean
		}
		return math.Max(0, mean+amplitude*math.Sin(2*math.Pi*float64(t)/float64(period)))
	})
}
