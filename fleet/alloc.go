package fleet

import (
	"cmp"
	"math"
	"slices"
)

// Claim is one member's part in an allocation: how much it wants (Demand,
// in units/s) and how large its share is relative to the others' (Weight).
type Claim struct {
	ID     string
	Demand float64
	Weight float64
}

// Allocate divides budget (units/s) among claims by weighted max-min
// fairness (water-filling) and returns each claim's lease, in the order of
// claims.
//
// A claim that wants less than its weighted share of what is left gets its
// demand; what it leaves is shared by the others in proportion to their
// weights, and so on until the budget or the demands run out. So the leases
// never sum to more than budget, and claims that want more than they get
// all get the same lease per unit of weight. A demand of +Inf wants
// whatever it can get. When every claim gets its demand and budget is left
// over, the rest is spread over all claims by weight, so that a member
// whose load rises finds room at once instead of a refresh later: no claim
// is short, so nobody loses by it.
//
// Claims with a weight that is not a positive finite number get nothing,
// and a demand that is negative or NaN counts as 0. The result depends only
// on the set of claims, not on their order: ties are broken by ID. The
// Redis script (update.lua) computes the same function, step for step, so
// that a test can compare the two.
func Allocate(budget float64, claims []Claim) []float64 {
	leases := make([]float64, len(claims))
	if !(budget > 0) {
		return leases
	}
	idx := make([]int, 0, len(claims))
	for i, c := range claims {
		if validWeight(c.Weight) {
			idx = append(idx, i)
		}
	}
	// Smallest demand per unit of weight first: once one claim's demand
	// exceeds its share of what is left, so do all that follow.
	slices.SortFunc(idx, func(a, b int) int {
		ca, cb := claims[a], claims[b]
		if c := cmp.Compare(demandOf(ca)/ca.Weight, demandOf(cb)/cb.Weight); c != 0 {
			return c
		}
		return cmp.Compare(ca.ID, cb.ID)
	})
	wsum := 0.0 // summed in that order too, so the result is the same for any order of claims
	for _, i := range idx {
		wsum += claims[i].Weight
	}
	remaining := budget
	for _, i := range idx {
		c := claims[i]
		share := remaining * c.Weight / wsum
		l := min(demandOf(c), share, remaining)
		l = max(l, 0)
		leases[i] = l
		remaining -= l
		wsum -= c.Weight
	}
	// Left over only if no claim was short: spread it.
	if remaining > 0 {
		total := 0.0
		for _, i := range idx {
			total += claims[i].Weight
		}
		for _, i := range idx {
			leases[i] += remaining * claims[i].Weight / total
		}
	}
	return leases
}

func validWeight(w float64) bool { return w > 0 && !math.IsInf(w, 1) }

// demandOf is c's demand as Allocate reads it: never negative or NaN.
func demandOf(c Claim) float64 {
	if !(c.Demand > 0) {
		return 0
	}
	return c.Demand
}
