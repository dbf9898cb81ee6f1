package fleet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/limiter"
)

// fakeLocal is a sidecar's limiter as the Client sees it.
type fakeLocal struct {
	mu        sync.Mutex
	load      limiter.Load
	ceil      float64
	until     time.Time
	cleared   bool
	ceilCalls int
}

func (f *fakeLocal) SetCeiling(rate float64, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ceil, f.until, f.cleared = rate, until, false
	f.ceilCalls++
	return nil
}

func (f *fakeLocal) ClearCeiling() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ceil, f.until, f.cleared = 0, time.Time{}, true
}

func (f *fakeLocal) Load(time.Time) limiter.Load {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.load
}

func (f *fakeLocal) set(l limiter.Load) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.load = l
}

// ceiling returns the ceiling in force at now (0: none).
func (f *fakeLocal) ceiling(now time.Time) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ceil > 0 && now.Before(f.until) {
		return f.ceil
	}
	return 0
}

// net is an in-bubble Redis that a test can make unreachable (refused)
// or hang (SIGSTOP-like: connections stay open, nothing is answered).
type simNet struct {
	m       *miniredis.Miniredis
	refused atomic.Bool
	hung    atomic.Bool
	dials   atomic.Int64
}

func newSimNet(t *testing.T) *simNet {
	// Served over net.Pipe (Dial), inside the bubble, on its clock.
	m := miniredis.NewMiniRedis()
	m.ClockTTL(true)
	t.Cleanup(m.Close)
	return &simNet{m: m}
}

// hangConn drops what is written while the network hangs, so reads wait
// for their deadline.
type hangConn struct {
	net.Conn
	n *simNet
}

func (c hangConn) Write(p []byte) (int, error) {
	if c.n.hung.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (n *simNet) client(t *testing.T, timeout time.Duration) *redis.Client {
	opts, err := RedisOptions("redis://127.0.0.1:6379", "", timeout)
	if err != nil {
		t.Fatal(err)
	}
	opts.Dialer = func(ctx context.Context, _, _ string) (net.Conn, error) {
		n.dials.Add(1)
		if n.refused.Load() {
			return nil, errors.New("connect: connection refused")
		}
		c, err := n.m.Dial()
		if err != nil {
			return nil, err
		}
		return hangConn{c, n}, nil
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// member is one Client with its fake limiter.
type member struct {
	c     *Client
	local *fakeLocal
	rdb   *redis.Client
}

func newMember(t *testing.T, n *simNet, id string, mod func(*Config)) member {
	t.Helper()
	cfg := Config{Resource: "test:fleet", Member: id, InitialRate: 50, MinRate: 1, Capacity: 900, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	local := &fakeLocal{load: limiter.Load{Demand: 1e6}}
	rdb := n.client(t, cfg.withDefaults().Timeout)
	c, err := New(cfg, rdb, local)
	if err != nil {
		t.Fatal(err)
	}
	return member{c, local, rdb}
}

// runAll runs the members' loops until the returned stop is called.
func runAll(ms ...member) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { m.c.Run(ctx) })
	}
	return func() { cancel(); wg.Wait() }
}

// TestClientShares: members get their weighted share of a configured
// capacity as their limiter's ceiling within a refresh of joining; one
// that leaves gives its share back at the others' next refresh.
func TestClientShares(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		a := newMember(t, n, "a", nil)
		b := newMember(t, n, "b", nil)
		c := newMember(t, n, "c", func(cfg *Config) { cfg.Weight = 2 })
		stopA := runAll(a)
		stopBC := runAll(b, c)
		time.Sleep(1500 * time.Millisecond)
		now := time.Now()
		for _, x := range []struct {
			m    member
			want float64
		}{{a, 225}, {b, 225}, {c, 450}} {
			if got := x.m.local.ceiling(now); got != x.want {
				t.Errorf("%s: ceiling %v, want %v", x.m.c.Member(), got, x.want)
			}
			if x.m.c.Mode() != ModeLeased {
				t.Errorf("%s: mode %v", x.m.c.Member(), x.m.c.Mode())
			}
		}
		stopA()
		if a.c.Mode() != ModeLeft {
			t.Errorf("a after stop: mode %v, want left", a.c.Mode())
		}
		time.Sleep(1200 * time.Millisecond)
		now = time.Now()
		if b.local.ceiling(now) != 300 || c.local.ceiling(now) != 600 {
			t.Errorf("after a left: ceilings %v and %v, want 300 and 600", b.local.ceiling(now), c.local.ceiling(now))
		}
		stopBC()
	})
}

// TestClientKilledMember: a member killed without leaving (SIGKILL) keeps
// its share until its lease has surely lapsed, and no longer than that and
// a refresh: at no moment do the leases in force sum to more than the
// capacity, and a refresh after the lapse the others have it all.
func TestClientKilledMember(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		a, b, c := newMember(t, n, "a", nil), newMember(t, n, "b", nil), newMember(t, n, "c", nil)
		stopBC := runAll(b, c)
		defer stopBC()
		stopA := runAll(a)
		time.Sleep(2500 * time.Millisecond)
		for _, m := range []member{a, b, c} {
			if got := m.local.ceiling(time.Now()); got != 300 {
				t.Fatalf("%s: ceiling %v, want 300", m.c.Member(), got)
			}
		}
		a.rdb.Close() // its goodbye fails: as if killed
		stopA()
		a.local.mu.Lock()
		aUntil := a.local.until
		a.local.mu.Unlock()
		// The others' next refresh after the lapse, jittered, gives them
		// a's share (the membership ends 1% of a lease and a millisecond
		// or two after the lease).
		handedBy := aUntil.Add(DefaultRefresh*11/10 + 50*time.Millisecond)
		for end := handedBy.Add(time.Second); time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
			now := time.Now()
			sum := a.local.ceiling(now) + b.local.ceiling(now) + c.local.ceiling(now)
			if sum > 900 {
				t.Fatalf("%v after a's lease ends: leases in force sum to %v > 900", now.Sub(aUntil), sum)
			}
			if now.After(handedBy) && (b.local.ceiling(now) != 450 || c.local.ceiling(now) != 450) {
				t.Fatalf("%v after a's lease ends: ceilings %v and %v, want 450 each", now.Sub(aUntil), b.local.ceiling(now), c.local.ceiling(now))
			}
		}
	})
}

// TestClientLadder: Redis hangs (SIGSTOP): the lease holds until it
// expires, then the safe share, then the limiter alone; never unlimited
// before that, never a stop, and no moment between two rungs without a
// ceiling: each rung starts when the one before runs out, not at the next
// failed refresh. When Redis answers again, a lease at once.
func TestClientLadder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		reg := prometheus.NewRegistry()
		metrics := NewMetrics(reg)
		a := newMember(t, n, "a", func(cfg *Config) { cfg.Metrics = metrics })
		b := newMember(t, n, "b", nil)
		stop := runAll(a, b)
		defer stop()
		time.Sleep(2500 * time.Millisecond)
		if got := a.local.ceiling(time.Now()); got != 450 {
			t.Fatalf("leased: ceiling %v, want 450", got)
		}
		n.hung.Store(true)
		leaseUntil := a.c.Status(time.Now()).LeaseUntil
		safeUntil := leaseUntil.Add(DefaultSafeFor)
		for time.Now().Before(safeUntil.Add(-100 * time.Millisecond)) {
			time.Sleep(100 * time.Millisecond)
			now := time.Now()
			want := ModeLeased
			if !now.Before(leaseUntil) {
				want = ModeSafeShare
			}
			if got := a.local.ceiling(now); got != 450 || a.c.Mode() != want {
				t.Fatalf("%v past the lease's end: ceiling %v, mode %v; want %v at 450", now.Sub(leaseUntil), got, a.c.Mode(), want)
			}
		}
		if testutil.ToFloat64(metrics.degraded) != 1 {
			t.Error("degraded metric not set while Redis hangs")
		}
		if got := testutil.ToFloat64(metrics.lease); got != 450 {
			t.Errorf("safe share: lease metric %v, want the share in force, 450", got)
		}
		time.Sleep(time.Until(safeUntil))
		synctest.Wait() // the lapse due at this instant

		if a.c.Mode() != ModeLocal || !a.local.cleared {
			t.Fatalf("safe share expired: mode %v, cleared %v; want the limiter alone", a.c.Mode(), a.local.cleared)
		}
		if got := testutil.ToFloat64(metrics.lease); got != 0 {
			t.Errorf("on its own limit: lease metric %v, want 0", got)
		}
		st := a.c.Status(time.Now())
		if !st.Degraded || st.Errors == 0 || st.LastError == "" {
			t.Errorf("status while degraded: %+v", st)
		}
		n.hung.Store(false)
		time.Sleep(1500 * time.Millisecond)
		if a.c.Mode() != ModeLeased || a.local.ceiling(time.Now()) == 0 {
			t.Fatalf("Redis back: mode %v, ceiling %v; want a lease", a.c.Mode(), a.local.ceiling(time.Now()))
		}
		if testutil.ToFloat64(metrics.degraded) != 0 || testutil.ToFloat64(metrics.lease) == 0 {
			t.Error("metrics still say degraded, or no lease")
		}
		if problems, err := testutil.CollectAndLint(reg); err != nil || len(problems) > 0 {
			t.Errorf("metrics lint: %v %v", problems, err)
		}
	})
}

// TestClientRefused: a Redis that refuses connections from the start
// leaves the sidecar to its own limit; it joins as soon as Redis is up.
func TestClientRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		n.refused.Store(true)
		a := newMember(t, n, "a", nil)
		stop := runAll(a)
		defer stop()
		time.Sleep(3 * time.Second)
		if a.c.Mode() != ModeLocal || a.local.ceilCalls != 0 {
			t.Fatalf("Redis refusing from the start: mode %v, %d ceilings; want local, none", a.c.Mode(), a.local.ceilCalls)
		}
		// go-redis fails fast after failed dials until a probe of its own
		// (every second) connects again.
		n.refused.Store(false)
		time.Sleep(2500 * time.Millisecond)
		if a.c.Mode() != ModeLeased || a.local.ceiling(time.Now()) != 900 {
			t.Fatalf("Redis up: mode %v, ceiling %v", a.c.Mode(), a.local.ceiling(time.Now()))
		}
	})
}

// TestClientRelearnsAfterFlush: a fleet that learned its budget and then
// lost Redis's state (FLUSHALL, a restart) resumes from the budget its
// members knew: no restart from the initial rate, no storm.
func TestClientRelearnsAfterFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		learn := func(cfg *Config) { cfg.Capacity = 0 }
		a, b := newMember(t, n, "a", learn), newMember(t, n, "b", learn)
		stop := runAll(a, b)
		defer stop()
		time.Sleep(4500 * time.Millisecond) // 100 → 200 → 400 → 800 → 1600
		before := a.c.Status(time.Now()).Budget
		if before < 800 {
			t.Fatalf("budget %v after 4 clean periods from 100, want >= 800", before)
		}
		// The fleet wants no more than it has from here.
		a.local.set(limiter.Load{Demand: before / 2})
		b.local.set(limiter.Load{Demand: before / 2})
		time.Sleep(1200 * time.Millisecond)
		before = a.c.Status(time.Now()).Budget
		n.m.FlushAll()
		time.Sleep(2300 * time.Millisecond) // two refreshes: both back, and a saw b back
		after := a.c.Status(time.Now())
		if after.Budget != before || after.Members != 2 {
			t.Fatalf("after FLUSHALL: budget %v, %d members; want %v and 2", after.Budget, after.Members, before)
		}
	})
}

// TestClientThrottles: throttles the limiter saw cut the learned budget
// once; the same count reported again does not cut again; the next epoch
// counts afresh.
func TestClientThrottles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		a := newMember(t, n, "a", func(cfg *Config) { cfg.Capacity = 0 })
		stop := runAll(a)
		defer stop()
		time.Sleep(2500 * time.Millisecond)
		budget := a.c.Status(time.Now()).Budget
		a.local.set(limiter.Load{Demand: 1e6, Goodput: budget, Throttles: 3})
		time.Sleep(1100 * time.Millisecond)
		cut := a.c.Status(time.Now()).Budget
		if want := budget * defaultBeta; cut != want {
			t.Fatalf("after throttles: budget %v, want %v", cut, want)
		}
		// Nothing new: the count stays 3 for many refreshes.
		time.Sleep(1100 * time.Millisecond)
		if got := a.c.Status(time.Now()).Budget; got < cut {
			t.Fatalf("the same throttles cut again: %v < %v", got, cut)
		}
		// Past the cooldown, a new throttle under the new epoch.
		time.Sleep(time.Second)
		a.local.set(limiter.Load{Demand: 1e6, Goodput: cut, Throttles: 4})
		time.Sleep(1100 * time.Millisecond)
		if got := a.c.Status(time.Now()).Budget; got >= cut {
			t.Fatalf("a new throttle under the new epoch after the cooldown: budget %v, want below %v", got, cut)
		}
	})
}

// TestClientStatusLists: reading the status asks for the member list,
// fetched at the next refresh.
func TestClientStatusLists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newSimNet(t)
		a, b := newMember(t, n, "a", nil), newMember(t, n, "b", func(cfg *Config) { cfg.Weight = 3 })
		stop := runAll(a, b)
		defer stop()
		time.Sleep(1500 * time.Millisecond)
		if st := a.c.Status(time.Now()); st.List != nil {
			t.Fatalf("list before anyone asked: %+v", st.List)
		}
		time.Sleep(1100 * time.Millisecond)
		st := a.c.Status(time.Now())
		if len(st.List) != 2 {
			t.Fatalf("list: %+v", st.List)
		}
		for _, m := range st.List {
			if m.ID == "b" && (m.Weight != 3 || m.Lease != 675 || m.Age < time.Second) {
				t.Errorf("b listed as %+v", m)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Resource: "r", InitialRate: 1, MinRate: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"resource":    func(c *Config) { c.Resource = "" },
		"member":      func(c *Config) { c.Member = "a b" },
		"weight":      func(c *Config) { c.Weight = -1 },
		"tiny weight": func(c *Config) { c.Weight = 1e-7 },
		"huge weight": func(c *Config) { c.Weight = 1e300 },
		"capacity":    func(c *Config) { c.Capacity = -5 },
		"min rate":    func(c *Config) { c.MinRate = 0 },
		"refresh":     func(c *Config) { c.Refresh = time.Millisecond },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMemberID(t *testing.T) {
	a, b := MemberID(), MemberID()
	if a == b || ValidResource(a) != nil || !strings.Contains(a, "-") {
		t.Errorf("MemberID() = %q, %q", a, b)
	}
}

func TestNewRedisRedacts(t *testing.T) {
	_, err := NewRedis("redis://user:hunter2@host:6379/notanumber", "", time.Second)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want one without the password", err)
	}
	_, err = NewRedis("redis://u:hunter2@ho st:6379", "", time.Second)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want one without the password", err)
	}
}
