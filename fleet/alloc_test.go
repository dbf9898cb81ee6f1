package fleet

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestAllocate(t *testing.T) {
	inf := math.Inf(1)
	f := func(name string, budget float64, claims []Claim, want []float64) {
		t.Helper()
		got := Allocate(budget, claims)
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				t.Errorf("%s: leases %v, want %v", name, got, want)
				return
			}
		}
	}
	f("equal greedy", 300, []Claim{{"a", inf, 1}, {"b", inf, 1}, {"c", inf, 1}}, []float64{100, 100, 100})
	f("one wants less: the rest share what it leaves", 300,
		[]Claim{{"a", 40, 1}, {"b", inf, 1}, {"c", inf, 1}}, []float64{40, 130, 130})
	f("weights", 400, []Claim{{"a", inf, 1}, {"b", inf, 3}}, []float64{100, 300})
	f("weighted, the heavy one wants less", 400,
		[]Claim{{"a", inf, 1}, {"b", 200, 3}}, []float64{200, 200})
	f("everyone wants less: demands, and the rest spread by weight", 1000,
		[]Claim{{"a", 10, 1}, {"b", 20, 3}}, []float64{10 + 242.5, 20 + 727.5})
	f("cascade", 100, []Claim{{"a", 10, 1}, {"b", 25, 1}, {"c", 50, 1}, {"d", 50, 1}},
		[]float64{10, 25, 32.5, 32.5})
	f("no budget", 0, []Claim{{"a", 10, 1}}, []float64{0})
	f("bad weights get nothing", 100, []Claim{{"a", inf, 0}, {"b", inf, -1}, {"c", inf, math.NaN()}, {"d", inf, 1}},
		[]float64{0, 0, 0, 100})
	f("bad demands count as 0", 100, []Claim{{"a", -5, 1}, {"b", math.NaN(), 1}, {"c", inf, 1}}, []float64{0, 0, 100})
	f("an idle member gets the spare", 100, []Claim{{"a", 0, 1}}, []float64{100})
	if got := Allocate(100, nil); len(got) != 0 {
		t.Errorf("no claims: %v", got)
	}
}

// randomClaims is a fleet of n members with random demands (some greedy)
// and weights.
func randomClaims(r *rand.Rand, n int) []Claim {
	cs := make([]Claim, n)
	for i := range cs {
		d := r.Float64() * 200
		switch r.IntN(4) {
		case 0:
			d = math.Inf(1)
		case 1:
			d = math.Round(d) // ties
		}
		w := 1.0
		if r.IntN(3) == 0 {
			w = 0.25 + r.Float64()*4
		}
		cs[i] = Claim{ID: fmt.Sprintf("m%03d", i), Demand: d, Weight: w}
	}
	return cs
}

// TestAllocateProperties checks, on random fleets, what weighted max-min
// fairness means: the leases fit the budget, and all of it is given out;
// if anybody is short of its demand, nobody gets more than its demand,
// and a member short of its demand gets at least as much per unit of
// weight as any other member (nobody could gain without taking from
// someone who has less per weight); if nobody is short, everybody gets
// its demand and the rest by weight; and the result does not depend on
// the claims' order.
func TestAllocateProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		n := 1 + r.IntN(40)
		cs := randomClaims(r, n)
		budget := r.Float64() * 3000
		leases := Allocate(budget, cs)
		const eps = 1e-9
		sum, wsum, dsum := 0.0, 0.0, 0.0
		short := false
		for i, l := range leases {
			sum += l
			wsum += cs[i].Weight
			dsum += cs[i].Demand
			if l < -eps {
				t.Fatalf("iter %d: lease %v of %+v negative", iter, l, cs[i])
			}
			if l < cs[i].Demand-eps {
				short = true
			}
		}
		if sum > budget*(1+eps)+eps {
			t.Fatalf("iter %d: leases sum to %v > budget %v", iter, sum, budget)
		}
		if sum < budget*(1-1e-9)-eps {
			t.Fatalf("iter %d: %v of %v is not given out", iter, budget-sum, budget)
		}
		for i, l := range leases {
			switch {
			case short && l > cs[i].Demand+eps:
				t.Fatalf("iter %d: %s gets %v > its demand %v while another is short", iter, cs[i].ID, l, cs[i].Demand)
			case !short && math.Abs(l-cs[i].Demand-(budget-dsum)*cs[i].Weight/wsum) > 1e-6*max(1, l):
				t.Fatalf("iter %d: nobody short, %s gets %v, want its demand %v and its part of the rest", iter, cs[i].ID, l, cs[i].Demand)
			}
		}
		for i, li := range leases {
			if !short || li >= cs[i].Demand-eps {
				continue
			}
			for j, lj := range leases {
				if li/cs[i].Weight < lj/cs[j].Weight*(1-1e-9)-eps {
					t.Fatalf("iter %d: %s is short with %v per weight, %s has %v", iter, cs[i].ID, li/cs[i].Weight, cs[j].ID, lj/cs[j].Weight)
				}
			}
		}
		// Order does not matter, bit for bit.
		perm := r.Perm(n)
		shuffled := make([]Claim, n)
		for k, p := range perm {
			shuffled[k] = cs[p]
		}
		again := Allocate(budget, shuffled)
		for k, p := range perm {
			if again[k] != leases[p] {
				t.Fatalf("iter %d: lease of %s is %v in one order, %v in another", iter, cs[p].ID, leases[p], again[k])
			}
		}
	}
}

// TestAllocateScales: scaling every weight changes nothing; equal weights
// among greedy members give equal leases.
func TestAllocateScales(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		cs := randomClaims(r, 1+r.IntN(20))
		scaled := slices.Clone(cs)
		for i := range scaled {
			scaled[i].Weight *= 8
		}
		a, b := Allocate(500, cs), Allocate(500, scaled)
		for i := range a {
			if math.Abs(a[i]-b[i]) > 1e-9*max(1, a[i]) {
				t.Fatalf("scaling weights moved %s from %v to %v", cs[i].ID, a[i], b[i])
			}
		}
	}
}
