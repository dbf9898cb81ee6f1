package fleet

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/internal/redistest"
)

// testParams are the protocol's defaults for a one-second refresh.
var testParams = Params{MemberTTL: 3 * time.Second, Period: time.Second, KeyTTL: 10 * time.Minute, Beta: defaultBeta, Recover: defaultRecover}

// backend is a server the scripts run on.
type backend struct {
	rdb *redis.Client
	// mini is the simulated server, whose clock the test sets; nil for a
	// real redis-server, whose clock runs.
	mini *miniredis.Miniredis
	now  *time.Time // mini's clock
}

// advance moves a simulated server's clock; tests that need it skip the
// real server.
func (b backend) advance(d time.Duration) {
	*b.now = b.now.Add(d)
	b.mini.SetTime(*b.now)
}

var miniEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newMini(t *testing.T) backend {
	t.Helper()
	m := miniredis.RunT(t)
	now := miniEpoch
	m.SetTime(now)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2})
	t.Cleanup(func() { rdb.Close() })
	return backend{rdb: rdb, mini: m, now: &now}
}

func newReal(t *testing.T) backend {
	t.Helper()
	s := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return backend{rdb: rdb}
}

// onBoth runs f against miniredis and against a real redis-server.
func onBoth(t *testing.T, f func(t *testing.T, b backend)) {
	t.Run("miniredis", func(t *testing.T) { f(t, newMini(t)) })
	t.Run("redis-server", func(t *testing.T) { f(t, newReal(t)) })
}

// reporter sends one member's reports with growing sequence numbers.
type reporter struct {
	t        *testing.T
	b        backend
	resource string
	r        Report
}

func newReporter(t *testing.T, b backend, id string, demand, weight, capacity float64) *reporter {
	return &reporter{t: t, b: b, resource: "test:res", r: Report{
		Member: id, Demand: demand, Weight: weight, Capacity: capacity, HintBudget: 100, MinRate: 1,
	}}
}

func (p *reporter) send() Grant {
	p.t.Helper()
	p.r.Seq++
	return p.again()
}

// again repeats the last report as it was (a retried call).
func (p *reporter) again() Grant {
	p.t.Helper()
	g, err := update(context.Background(), p.b.rdb, p.resource, testParams, p.r)
	if err != nil {
		p.t.Fatalf("update %s: %v", p.r.Member, err)
	}
	return g
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*max(1, math.Abs(a), math.Abs(b)) }

// TestScriptAllocatesAsAllocate: the script's leases are Allocate's, for a
// configured capacity and random demands and weights, as members join one
// by one.
func TestScriptAllocatesAsAllocate(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		r := rand.New(rand.NewPCG(5, 6))
		const capacity = 1000
		var claims []Claim
		var reps []*reporter
		for i := range 12 {
			c := Claim{ID: fmt.Sprintf("m%02d", i), Demand: math.Round(r.Float64() * 300), Weight: 1}
			if i%3 == 0 {
				c.Demand = 1e9 // greedy: the sidecar's cap on "unlimited"
			}
			if i%4 == 1 {
				c.Weight = 2.5
			}
			claims = append(claims, c)
			p := newReporter(t, b, c.ID, c.Demand, c.Weight, capacity)
			reps = append(reps, p)
			g := p.send()
			want := Allocate(capacity, claims)
			if !near(g.Lease, want[i]) || g.Members != i+1 || g.Budget != capacity {
				t.Fatalf("%s joins: lease %v, %d members, budget %v; want %v, %d, %v", c.ID, g.Lease, g.Members, g.Budget, want[i], i+1, capacity)
			}
		}
		reps[0].r.WantMembers = true
		g := reps[0].send()
		want := Allocate(capacity, claims)
		if len(g.List) != len(claims) {
			t.Fatalf("member list has %d entries, want %d", len(g.List), len(claims))
		}
		sum := 0.0
		for _, m := range g.List {
			var i int
			fmt.Sscanf(m.ID, "m%02d", &i)
			if !near(m.Lease, want[i]) || m.Weight != claims[i].Weight || m.Demand != claims[i].Demand {
				t.Errorf("%s listed with lease %v, weight %v, demand %v; want %v, %v, %v", m.ID, m.Lease, m.Weight, m.Demand, want[i], claims[i].Weight, claims[i].Demand)
			}
			sum += m.Lease
		}
		if sum > capacity*(1+1e-9) {
			t.Errorf("leases sum to %v > %v", sum, capacity)
		}
	})
}

// TestScriptIdempotent: a retried call (same member, same seq) changes
// nothing and cannot cut the budget twice; nor can a newer report that
// repeats throttles of an epoch already cut; a late older report cannot
// overwrite a newer one.
func TestScriptIdempotent(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		a := newReporter(t, b, "a", 1e9, 1, 0)
		g0 := a.send()
		if g0.Budget != 100 || g0.Lease != 100 || !g0.Applied {
			t.Fatalf("first report: %+v, want the member's start of 100 as budget and lease", g0)
		}
		a.r.Goodput = 90
		a.r.ThrottleEpoch, a.r.Throttles = g0.Epoch, 1
		g1 := a.send()
		if want := 90 * defaultBeta; !near(g1.Budget, want) || g1.Epoch == g0.Epoch || g1.Throttles != 1 {
			t.Fatalf("throttle under the current epoch: budget %v epoch %q throttles %d; want %v, a new epoch, 1", g1.Budget, g1.Epoch, g1.Throttles, want)
		}
		g2 := a.again()
		if g2.Applied || g2.Budget != g1.Budget || g2.Epoch != g1.Epoch || g2.Throttles != 1 {
			t.Fatalf("retried call: %+v, want nothing applied and the budget and epoch of %+v", g2, g1)
		}
		g3 := a.send() // a new report repeating the old epoch's count
		if g3.Budget != g1.Budget || g3.Epoch != g1.Epoch || g3.Throttles != 1 {
			t.Fatalf("old epoch's throttles again: %+v, want no cut", g3)
		}
		a.r.Demand = 50
		g4 := a.send()
		a.r.Seq -= 2 // an older report arriving late
		a.r.Demand = 7
		if g := a.again(); g.Applied || g.Demand != 50 {
			t.Fatalf("late older report: applied %v, demand %v; want ignored, 50", g.Applied, g.Demand)
		}
		_ = g4
	})
}

// TestScriptLeave: a member that leaves gives its share back at once.
func TestScriptLeave(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		a, c := newReporter(t, b, "a", 1e9, 1, 600), newReporter(t, b, "c", 1e9, 1, 600)
		a.send()
		if g := c.send(); g.Lease != 300 || g.Members != 2 {
			t.Fatalf("two greedy members: %+v, want 300 each", g)
		}
		if err := leave(context.Background(), b.rdb, a.resource, "a"); err != nil {
			t.Fatal(err)
		}
		if g := c.send(); g.Lease != 600 || g.Members != 1 {
			t.Fatalf("after a left: %+v, want c alone with 600", g)
		}
		if err := leave(context.Background(), b.rdb, a.resource, "a"); err != nil {
			t.Fatalf("leaving twice: %v", err)
		}
	})
}

// TestScriptNoScript: after the server forgets its scripts (a restart,
// SCRIPT FLUSH) the call still succeeds: EVALSHA, then EVAL on NOSCRIPT.
func TestScriptNoScript(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		a := newReporter(t, b, "a", 1e9, 1, 100)
		a.send()
		if err := b.rdb.ScriptFlush(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		if g := a.send(); g.Lease != 100 {
			t.Fatalf("after SCRIPT FLUSH: %+v", g)
		}
		if ok, err := updateScript.Exists(context.Background(), b.rdb).Result(); err != nil || !ok[0] {
			t.Errorf("script not cached again after EVAL: %v %v", ok, err)
		}
	})
}

// TestScriptKeys: both keys carry the resource as hash tag and expire if
// nobody reports.
func TestScriptKeys(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		newReporter(t, b, "a", 1, 1, 0).send()
		m, s := Keys("test:res")
		if m != "sluice:fleet:{test:res}:members" || s != "sluice:fleet:{test:res}:state" {
			t.Errorf("keys %q %q", m, s)
		}
		for _, k := range []string{m, s} {
			ttl, err := b.rdb.PTTL(context.Background(), k).Result()
			if err != nil || ttl <= 0 || ttl > testParams.KeyTTL {
				t.Errorf("%s: TTL %v %v, want in (0, %v]", k, ttl, err, testParams.KeyTTL)
			}
		}
	})
}

// TestScriptExpiresDeadMembers: a member that stops reporting is dropped
// after MemberTTL and its share goes to the others.
func TestScriptExpiresDeadMembers(t *testing.T) {
	b := newMini(t)
	a, c := newReporter(t, b, "a", 1e9, 1, 600), newReporter(t, b, "c", 1e9, 1, 600)
	a.send()
	c.send()
	for range 2 {
		b.advance(time.Second)
		if g := c.send(); g.Members != 2 || g.Lease != 300 {
			t.Fatalf("a silent for less than its TTL: %+v, want still 2 members", g)
		}
	}
	b.advance(1500 * time.Millisecond)
	if g := c.send(); g.Members != 1 || g.Lease != 600 {
		t.Fatalf("a silent past its TTL: %+v, want c alone", g)
	}
}

// TestScriptHandsOutAtExpiry: a dead member's share goes to the first
// member that calls after its membership ended, even when the allocation
// is a moment old and would otherwise be reused: its lease has lapsed,
// and its share idles no longer than that.
func TestScriptHandsOutAtExpiry(t *testing.T) {
	b := newMini(t)
	a, c, d := newReporter(t, b, "a", 1e9, 1, 900), newReporter(t, b, "c", 1e9, 1, 900), newReporter(t, b, "d", 1e9, 1, 900)
	a.send()
	c.send()
	d.send()
	b.advance(testParams.MemberTTL - 100*time.Millisecond)
	for _, p := range []*reporter{c, d} {
		if g := p.send(); g.Members != 3 || g.Lease != 300 {
			t.Fatalf("before a's expiry: %+v, want 3 members at 300", g)
		}
	}
	b.advance(200 * time.Millisecond) // past a's expiry, within a quarter period of the last allocation
	if g := c.send(); g.Members != 2 || g.Lease != 450 {
		t.Fatalf("at once after a's expiry: %+v, want 2 members at 450", g)
	}
}

// TestScriptServerPause: a server that was stopped (no call from anyone
// for longer than a member TTL) does not drop the members, which could not
// reach it: the first to come back does not take the whole budget.
func TestScriptServerPause(t *testing.T) {
	b := newMini(t)
	a, c := newReporter(t, b, "a", 1e9, 1, 600), newReporter(t, b, "c", 1e9, 1, 600)
	a.send()
	c.send()
	b.advance(20 * time.Second)
	if g := c.send(); g.Members != 2 || g.Lease != 300 {
		t.Fatalf("after a 20s pause: %+v, want both members kept", g)
	}
	var g Grant
	for range 4 {
		b.advance(time.Second)
		g = c.send()
	}
	if g.Members != 1 {
		t.Fatalf("a still silent a TTL after the pause: %+v, want dropped", g)
	}
}

// TestScriptRelearn: after the server lost its state, members that report
// the budget they knew restart from it, and the members known then keep a
// share reserved until they are back: no storm, no member with it all.
func TestScriptRelearn(t *testing.T) {
	b := newMini(t)
	var reps []*reporter
	for i := range 4 {
		p := newReporter(t, b, fmt.Sprintf("m%d", i), 1e9, 1, 0)
		p.r.HintKnown, p.r.HintBudget, p.r.HintWeight = true, 800, 4
		reps = append(reps, p)
	}
	b.mini.FlushAll()
	if g := reps[0].send(); g.Budget != 800 || g.Lease != 200 {
		t.Fatalf("first member back: %+v, want the known budget 800 and a quarter of it", g)
	}
	for _, p := range reps[1:] {
		p.send()
	}
	if g := reps[0].send(); g.Lease != 200 || g.Members != 4 {
		t.Fatalf("all back: %+v", g)
	}
	// A member that stops reporting leaves its share to the others; the
	// reservation ended with a member TTL.
	var g Grant
	for range 5 {
		b.advance(time.Second)
		for _, p := range reps[1:3] {
			p.send()
		}
		g = reps[0].send()
	}
	if g.Members != 3 || !near(g.Lease, g.Budget/3) {
		t.Fatalf("m3 gone: %+v, want a third of the budget", g)
	}
}

// TestScriptRelearnNewcomerFirst is TestScriptRelearn when the first to
// call after the state was lost is a sidecar that knows no budget (one
// started while Redis was away): the old members that come back with the
// budget they knew re-seed it all the same. Without that, the first of
// them took half the budget while the others still ran on their safe
// shares, and the budget went on doubling from 800 each period.
func TestScriptRelearnNewcomerFirst(t *testing.T) {
	b := newMini(t)
	fresh := newReporter(t, b, "new", 1e9, 1, 0) // HintBudget 100, not known
	var old []*reporter
	for i := range 4 {
		p := newReporter(t, b, fmt.Sprintf("m%d", i), 1e9, 1, 0)
		p.r.HintKnown, p.r.HintBudget, p.r.HintWeight = true, 800, 4
		old = append(old, p)
	}
	fresh.send()
	if g := old[0].send(); g.Budget != 800 || g.Lease > 200 {
		t.Fatalf("first old member back: %+v, want the known budget 800 and at most a quarter of it", g)
	}
	for _, p := range old[1:] {
		p.send()
	}
	var g Grant
	for range 3 {
		b.advance(time.Second)
		fresh.send()
		for _, p := range old {
			g = p.send()
		}
	}
	if g.Budget > 1.1*800 {
		t.Errorf("3 s after the re-seed: budget %v, want near the 800 the fleet knew, not doubled again", g.Budget)
	}
}

// TestScriptServerClockStepsBack: the server's clock steps back (a
// failover to a replica whose clock is behind, an NTP step). The fleet's
// clock does not: a member that dies after the step is dropped after its
// TTL, and a throttle cuts a learned budget past the cooldown, where both
// used to wait for as long as the step, every stored time lying in the
// server's future.
func TestScriptServerClockStepsBack(t *testing.T) {
	b := newMini(t)
	a, d := newReporter(t, b, "a", 1e9, 1, 600), newReporter(t, b, "d", 1e9, 1, 600)
	a.send()
	d.send()
	b.advance(time.Second)
	a.send()
	d.send()
	b.advance(-time.Hour) // the server's clock steps back; d dies now
	var g Grant
	for range 10 {
		b.advance(time.Second)
		g = a.send()
	}
	if g.Members != 1 || g.Lease != 600 {
		t.Errorf("10 s after d's last report (server clock stepped back 1h): %d members, a's lease %v; want d dropped after its TTL, a at 600", g.Members, g.Lease)
	}

	// A learned budget: a throttle past the cooldown cuts it. (What
	// passed while the clock stepped back is not known: the cooldown runs
	// on from the first call after the step.)
	b2 := newMini(t)
	l := newReporter(t, b2, "l", 1e9, 1, 0)
	g = l.send()
	b2.advance(3 * time.Second)
	l.r.Goodput, l.r.ThrottleEpoch, l.r.Throttles = g.Budget, g.Epoch, 1
	g = l.send() // a first cut: cut_at is now
	b2.advance(-time.Hour)
	for range 3 { // past the cooldown of two periods, on a server clock an hour behind
		b2.advance(time.Second)
		g = l.send()
	}
	l.r.Goodput, l.r.ThrottleEpoch, l.r.Throttles = g.Budget/2, g.Epoch, 5
	b2.advance(time.Second)
	if g1 := l.send(); g1.Budget >= g.Budget {
		t.Errorf("a throttle under the current epoch, 4 s after the server's clock stepped back, did not cut the budget (%v)", g1.Budget)
	}
}

// TestScriptLearnsBudget follows an unknown capacity: members bring their
// start, the budget doubles each clean period while they want more, a
// throttle cuts it once however many members report one under the same
// epoch, not again within the cooldown, and clean periods bring it back
// along the curve, cautiously near the level of the cut.
func TestScriptLearnsBudget(t *testing.T) {
	b := newMini(t)
	a, c := newReporter(t, b, "a", 1e9, 1, 0), newReporter(t, b, "c", 1e9, 1, 0)
	a.send()
	if g := c.send(); g.Budget != 200 {
		t.Fatalf("two members of start 100: budget %v, want 200", g.Budget)
	}
	b.advance(time.Second)
	if g := a.send(); g.Budget != 400 {
		t.Fatalf("a clean period later: budget %v, want 400", g.Budget)
	}
	b.advance(500 * time.Millisecond)
	if g := c.send(); g.Budget != 400 {
		t.Fatalf("half a period later: budget %v, want still 400", g.Budget)
	}
	b.advance(600 * time.Millisecond)
	if g := a.send(); g.Budget != 800 {
		t.Fatalf("another clean period: budget %v, want 800", g.Budget)
	}
	// The store took 250/s of each; both saw throttles under the current
	// epoch and report them.
	a.r.Goodput, c.r.Goodput = 250, 250
	c.send()
	g := a.send()
	a.r.ThrottleEpoch, a.r.Throttles = g.Epoch, 3
	c.r.ThrottleEpoch, c.r.Throttles = g.Epoch, 2
	g = a.send()
	cut := g.Budget
	if want := 500 * defaultBeta; !near(cut, want) {
		t.Fatalf("throttles: budget %v, want %v (beta of what the fleet took)", cut, want)
	}
	if g := c.send(); g.Budget != cut || g.Throttles != 5 {
		t.Fatalf("the second member's throttles of the same epoch: %+v, want no second cut", g)
	}
	// Throttles under the new epoch within the cooldown: no cut.
	b.advance(time.Second)
	c.r.ThrottleEpoch, c.r.Throttles = g.Epoch, 1
	if g := c.send(); g.Budget != cut {
		t.Fatalf("within the cooldown: budget %v, want %v", g.Budget, cut)
	}
	// Clean periods: the curve climbs back toward 800, the budget of the
	// first cut (the goodput lagged its doubling), slowly near it, then
	// past it.
	prev := cut
	for i := range 14 {
		b.advance(time.Second)
		g := a.send()
		if g.Budget < prev {
			t.Fatalf("period %d: budget fell from %v to %v", i, prev, g.Budget)
		}
		if i == 0 && !(g.Budget > cut && g.Budget < 800) {
			t.Errorf("period %d: budget %v, want between the cut %v and the last level 800", i, g.Budget, cut)
		}
		prev = g.Budget
	}
	if prev <= 800 {
		t.Errorf("after 14 clean periods: budget %v, want past the last level 800", prev)
	}
	// A fleet that wants less than its budget does not grow it.
	a.r.Demand, c.r.Demand = 10, 10
	c.send()
	b.advance(time.Second)
	g = a.send()
	b.advance(time.Second)
	if g2 := a.send(); g2.Budget != g.Budget {
		t.Errorf("demand below the budget: it grew from %v to %v", g.Budget, g2.Budget)
	}
}

// TestScriptConfiguredCapacity: the budget is the capacity, whatever the
// throttles; they are still counted.
func TestScriptConfiguredCapacity(t *testing.T) {
	b := newMini(t)
	a := newReporter(t, b, "a", 1e9, 1, 500)
	g := a.send()
	a.r.ThrottleEpoch, a.r.Throttles = g.Epoch, 4
	b.advance(time.Second)
	if g := a.send(); g.Budget != 500 || g.Throttles != 4 {
		t.Fatalf("throttled at a configured capacity: %+v", g)
	}
}

// TestScriptRisingDemandKeepsLease: when every member gets its demand the
// rest of the budget is spread as "spare"; a member whose demand then
// rises, reporting within a quarter period of the last allocation (no
// recompute), must not be leased more than the budget, nor more than the
// others' leases in force leave.
func TestScriptRisingDemandKeepsLease(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		a, c := newReporter(t, b, "a", 10, 1, 900), newReporter(t, b, "c", 10, 1, 900)
		a.send()
		gc := c.send() // c joins: a fresh allocation, nobody short: 10 + 440 each
		if !near(gc.Lease, 450) {
			t.Fatalf("c's lease %v, want 450", gc.Lease)
		}
		a.r.Demand = 1e6 // a's loader starts
		ga := a.send()
		if ga.Lease+gc.Lease > 900*(1+1e-9) {
			t.Fatalf("a's demand rose: a leased %v while c holds %v: %v > capacity 900", ga.Lease, gc.Lease, ga.Lease+gc.Lease)
		}
	})
}

// TestScriptKnownBudgetNotAdded: a fleet's state is lost (FLUSHALL)
// and the first member to call is a new sidecar, which knows no budget;
// the old members then come back with the budget they knew (HintKnown).
// The fleet's budget must not become the sum of those: each member's
// known budget is the whole fleet's, not its own start.
func TestScriptKnownBudgetNotAdded(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		fresh := newReporter(t, b, "new", 1e9, 1, 0) // HintBudget 100, not known
		fresh.send()
		var g Grant
		for i, id := range []string{"m0", "m1", "m2", "m3"} {
			p := newReporter(t, b, id, 1e9, 1, 0)
			p.r.HintKnown, p.r.HintBudget, p.r.HintWeight = true, 800, 4
			g = p.send()
			if g.Budget > 800+100 {
				t.Fatalf("old member %d back: fleet budget %v, more than the 800 the fleet knew and the newcomer's 100", i, g.Budget)
			}
		}
		// Re-seeded with the budget the members knew, not learned again
		// from the newcomer's start.
		if g.Budget < 800 {
			t.Errorf("old members back: fleet budget %v, want the 800 they knew", g.Budget)
		}
	})
}

func TestValidResource(t *testing.T) {
	for _, ok := range []string{"dynamodb:orders", "s3:bucket/prefix", "generic:127.0.0.1:8080", "a"} {
		if err := ValidResource(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a{b}", "a b", "é", string(make([]byte, 201))} {
		if err := ValidResource(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzParseGrant: whatever a server answers, parseGrant returns a grant or
// an error, never panics, and a grant's numbers are finite.
func FuzzParseGrant(f *testing.F) {
	f.Add("100.000000\n200.000000\n2\n2.000000\ng1.2:0\n1700000000000\n5.000000\n1\n0")
	f.Add("1\n2\n3\n4\ne\n5\n6\n1\n7\nm\n1\n2\n3\n4\n5")
	f.Add("")
	f.Fuzz(func(t *testing.T, reply string) {
		g, err := parseGrant(strings.Split(reply, "\n"))
		if err != nil {
			return
		}
		for _, v := range []float64{g.Lease, g.Budget, g.Weight, g.Demand} {
			if !finite(v) {
				t.Errorf("grant %+v has a non-finite number", g)
			}
		}
	})
}

// TestScriptRisingDemandKeepsLeaseAgain: the lease a report that raised a
// member's demand was held to stands until the members are read again,
// for that report retried, and for a second report of the member's that
// reaches the server before the next allocation (a call that timed out
// in a stalled server, run there just before the next one).
func TestScriptRisingDemandKeepsLeaseAgain(t *testing.T) {
	onBoth(t, func(t *testing.T, b backend) {
		a, c := newReporter(t, b, "a", 10, 1, 900), newReporter(t, b, "c", 10, 1, 900)
		a.send()
		gc := c.send() // 10 + 440 each
		a.r.Demand = 1e6
		if g := a.send(); g.Lease+gc.Lease > 900*(1+1e-9) {
			t.Fatalf("a's demand rose: a leased %v while c holds %v", g.Lease, gc.Lease)
		}
		if g := a.again(); g.Applied || g.Lease+gc.Lease > 900*(1+1e-9) {
			t.Fatalf("that report retried: a leased %v (applied %v) while c holds %v", g.Lease, g.Applied, gc.Lease)
		}
		a.r.WantMembers = true
		g := a.send()
		if g.Lease+gc.Lease > 900*(1+1e-9) {
			t.Fatalf("a's next report before an allocation: a leased %v while c holds %v", g.Lease, gc.Lease)
		}
		for _, m := range g.List {
			if m.ID == "a" && m.Lease != g.Lease {
				t.Errorf("a listed with lease %v, granted %v", m.Lease, g.Lease)
			}
		}
		if b.mini != nil {
			// At the next allocation a gets what the budget leaves c.
			b.advance(300 * time.Millisecond)
			if g := a.send(); !near(g.Lease, 890) {
				t.Errorf("after an allocation: a leased %v, want 890", g.Lease)
			}
		}
	})
}
