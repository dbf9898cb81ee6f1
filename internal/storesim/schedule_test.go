package storesim

import (
	"math"
	"testing"
	"time"
)

func TestPhasesCapacity(t *testing.T) {
	s := MustPhases(
		Steady("steady", 10*time.Second, 100),
		Steady("half", 10*time.Second, 50),
		Ramp("ramp", 10*time.Second, 50, 150),
	)
	f := func(at time.Duration, want float64, wantIdx int) {
		t.Helper()
		if got := s.Capacity(at); math.Abs(got-want) > 1e-9 {
			t.Errorf("Capacity(%v) = %v, want %v", at, got, want)
		}
		if got := s.Index(at); got != wantIdx {
			t.Errorf("Index(%v) = %d, want %d", at, got, wantIdx)
		}
	}
	f(-time.Second, 100, 0) // before the start: first phase
	f(0, 100, 0)
	f(9999*time.Millisecond, 100, 0)
	f(10*time.Second, 50, 1) // a step is immediate
	f(20*time.Second, 50, 2)
	f(25*time.Second, 100, 2) // halfway up the ramp
	f(30*time.Second, 150, 2) // after the end: last To
	f(time.Hour, 150, 2)
	if got, want := s.Total(), 30*time.Second; got != want {
		t.Errorf("Total() = %v, want %v", got, want)
	}
	if p, start := s.Phase(2); p.Name != "ramp" || start != 20*time.Second {
		t.Errorf("Phase(2) = %+v at %v, want ramp at 20s", p, start)
	}
}

func TestNewPhasesErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   []Phase
	}{
		{"none", nil},
		{"zero duration", []Phase{Steady("a", 0, 1)}},
		{"negative capacity", []Phase{Steady("a", time.Second, -1)}},
		{"NaN", []Phase{Ramp("a", time.Second, 1, math.NaN())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewPhases(tc.ps...); err == nil {
				t.Fatalf("NewPhases(%v) succeeded, want an error", tc.ps)
			}
		})
	}
}

func TestSine(t *testing.T) {
	s := Sine(100, 50, 4*time.Second)
	f := func(at time.Duration, want float64) {
		t.Helper()
		if got := s.Capacity(at); math.Abs(got-want) > 1e-9 {
			t.Errorf("Capacity(%v) = %v, want %v", at, got, want)
		}
	}
	f(0, 100)
	f(time.Second, 150)
	f(3*time.Second, 50)
	if got := Sine(10, 50, time.Second).Capacity(750 * time.Millisecond); got != 0 {
		t.Errorf("Sine below zero = %v, want floored at 0", got)
	}
}
