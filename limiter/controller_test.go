package limiter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a manual clock for tests that never wait.
type fakeClock struct{ now time.Time }

func (f *fakeClock) Now() time.Time          { return f.now }
func (f *fakeClock) advance(d time.Duration) { f.now = f.now.Add(d) }
func (f *fakeClock) tick(c *Controller)      { c.Tick(f.now) }
func approx(got, want float64) bool          { return math.Abs(got-want) <= 1e-9*max(1, math.Abs(want)) }
func ms(n int) time.Duration                 { return time.Duration(n) * time.Millisecond }
func success(lat time.Duration) Sample       { return Sample{Outcome: Success, Latency: lat} }
func congested(reason string) Sample         { return Sample{Outcome: Congested, Reason: reason} }
func congestedRA(ra time.Duration) Sample {
	return Sample{Outcome: Congested, RetryAfter: ra, Reason: "status_429"}
}
func congestedShare(share float64) Sample {
	return Sample{Outcome: Congested, Share: share, Reason: "es_item_429"}
}
func baseConfig(clk *fakeClock, rate float64) Config {
	return Config{
		InitialRate: rate, MinRate: 1, MaxRate: 1e6,
		InitialConcurrency: 1000, MaxConcurrency: 1000,
		Burst: 1e6, Now: clk.Now,
	}
}

// newFake returns a controller on a fake clock; mod adjusts baseConfig.
func newFake(t *testing.T, rate float64, mod func(*Config)) (*Controller, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := baseConfig(clk, rate)
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, clk
}

// take acquires n permits without waiting, failing the test if it can't.
func take(t *testing.T, c *Controller, n int) []*Permit {
	t.Helper()
	ps := make([]*Permit, n)
	for i := range ps {
		p, err := c.TryAcquire(1)
		if err != nil {
			t.Fatalf("TryAcquire #%d: %v (snapshot %+v)", i, err, c.Snapshot())
		}
		ps[i] = p
	}
	return ps
}

func doneAll(ps []*Permit, s Sample) {
	for _, p := range ps {
		p.Done(s)
	}
}

// blockedWindow runs one window in which the rate limit is the bottleneck:
// requests are sent one at a time as soon as the limit allows, each
// succeeding at once with latency lat, and at the window's end one finds
// the bucket empty; then it ticks.
func blockedWindow(t *testing.T, c *Controller, clk *fakeClock, lat time.Duration) {
	t.Helper()
	batchWindow(t, c, clk, 1, lat)
}

// batchWindow is blockedWindow with batch requests in flight at a time.
func batchWindow(t *testing.T, c *Controller, clk *fakeClock, batch int, lat time.Duration) {
	t.Helper()
	end := clk.now.Add(DefaultWindow)
	for {
		if d := c.RetryWait(float64(batch)); d > 0 {
			if !clk.now.Add(d).Before(end) {
				break
			}
			clk.advance(d)
		}
		doneAll(take(t, c, batch), success(lat))
	}
	clk.now = end
	for n := 0; ; n++ { // at the end, send until the rate holds a request back
		var ps []*Permit
		for len(ps) < batch {
			p, err := c.TryAcquire(1)
			if errors.Is(err, ErrNoCapacity) {
				break
			}
			if err != nil {
				t.Fatalf("TryAcquire: %v", err)
			}
			ps = append(ps, p)
		}
		doneAll(ps, success(lat))
		if len(ps) < batch {
			break
		}
		if n > 1e5 {
			t.Fatal("rate never blocked")
		}
	}
	if s := c.Snapshot(); s.Concurrency <= batch-1 {
		t.Fatalf("concurrency %d blocked a batch of %d", s.Concurrency, batch)
	}
	clk.tick(c)
}

// paced sends n requests one at a time, one every gap, each accepted at
// once with a 1ms latency.
func paced(t *testing.T, c *Controller, clk *fakeClock, n int, gap time.Duration) {
	t.Helper()
	for range n {
		clk.advance(gap)
		take(t, c, 1)[0].Done(success(ms(1)))
	}
}

// oneSlotWindow is 500ms of back-to-back writes of 2ms at concurrency 1, a
// second write always waiting on the limit (VictoriaMetrics with one insert
// slot and a loader that keeps it busy); it does not tick.
func oneSlotWindow(t *testing.T, c *Controller, clk *fakeClock) {
	t.Helper()
	for range 250 {
		p := take(t, c, 1)[0]
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("second TryAcquire at concurrency 1: %v, want ErrNoCapacity", err)
		}
		clk.advance(ms(2))
		p.Done(success(ms(2)))
	}
}

func TestOutcomeString(t *testing.T) {
	f := func(o Outcome, want string) {
		t.Helper()
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", o, got, want)
		}
	}
	f(Success, "success")
	f(Congested, "congested")
	f(Failed, "failed")
	f(Neutral, "neutral")
	f(Unreachable, "unreachable")
	f(Outcome(9), "Outcome(9)")
}

func TestConfigValidate(t *testing.T) {
	valid := Config{InitialRate: 10, MinRate: 1, MaxRate: 100, MaxConcurrency: 8}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	f := func(name string, mod func(*Config), field string) {
		t.Helper()
		cfg := valid
		mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "Config."+field) || !strings.HasPrefix(err.Error(), "limiter: ") {
			t.Errorf("%s: Validate() = %v, want an error naming Config.%s", name, err, field)
		}
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted an invalid config", name)
		}
	}
	f("zero MinRate", func(c *Config) { c.MinRate = 0 }, "MinRate")
	f("NaN MinRate", func(c *Config) { c.MinRate = math.NaN() }, "MinRate")
	f("MaxRate below MinRate", func(c *Config) { c.MaxRate = 0.5 }, "MaxRate")
	f("infinite MaxRate", func(c *Config) { c.MaxRate = math.Inf(1) }, "MaxRate")
	f("InitialRate above MaxRate", func(c *Config) { c.InitialRate = 101 }, "InitialRate")
	f("InitialRate below MinRate", func(c *Config) { c.InitialRate = 0.5 }, "InitialRate")
	f("zero MaxConcurrency", func(c *Config) { c.MaxConcurrency = 0 }, "MaxConcurrency")
	f("InitialConcurrency above max", func(c *Config) { c.InitialConcurrency = 9 }, "InitialConcurrency")
	f("negative InitialConcurrency", func(c *Config) { c.InitialConcurrency = -1 }, "InitialConcurrency")
	f("negative MaxRetryAfter", func(c *Config) { c.MaxRetryAfter = -1 }, "MaxRetryAfter")
	f("tiny Window", func(c *Config) { c.Window = time.Microsecond }, "Window")
	f("negative QueueMax", func(c *Config) { c.QueueMax = -1 }, "QueueMax")
	f("negative Burst", func(c *Config) { c.Burst = -1 }, "Burst")
	f("LatencyTolerance 1", func(c *Config) { c.LatencyTolerance = 1 }, "LatencyTolerance")
	f("negative ProbeMin", func(c *Config) { c.ProbeMin = -1 }, "ProbeMin")
	f("tiny ProbeMax", func(c *Config) { c.ProbeMax = time.Microsecond }, "ProbeMax")
	f("ProbeMax below ProbeMin", func(c *Config) { c.ProbeMin, c.ProbeMax = time.Second, ms(500) }, "ProbeMax")
	f("ProbeMin above the default ProbeMax", func(c *Config) { c.ProbeMin = time.Minute }, "ProbeMax")

	c, err := New(Config{InitialRate: 10, MinRate: 1, MaxRate: 100, MaxConcurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Snapshot()
	if s.Concurrency != 2 || s.Rate != 10 || s.Burst != 1 || s.Phase != PhaseStartup {
		t.Errorf("defaults: snapshot %+v, want concurrency 2 (capped default), rate 10, burst 1, startup", s)
	}
}

func TestDecreaseOncePerWindow(t *testing.T) {
	c, clk := newFake(t, 100, nil)
	ps := take(t, c, 20)
	clk.advance(ms(100))
	doneAll(ps[:10], success(ms(10)))
	ps[10].Done(congested("status_429"))
	// 10 units accepted in 100ms: goodput 100/s, so the cut is 0.9×100.
	if s := c.Snapshot(); !approx(s.Rate, 90) || s.Decreases != 1 {
		t.Fatalf("after the first 429: rate %v decreases %d, want 90 and 1", s.Rate, s.Decreases)
	}
	// The rest of the burst was sent before the cut: it counts once.
	doneAll(ps[11:], congested("status_429"))
	if s := c.Snapshot(); !approx(s.Rate, 90) || s.Decreases != 1 {
		t.Fatalf("after the burst of 429s: rate %v decreases %d, want 90 and 1", s.Rate, s.Decreases)
	}
	// Sent after the cut but within the window: still no second cut. (The
	// cut emptied the bucket: wait for two tokens at 90/s.)
	clk.advance(ms(50))
	qs := take(t, c, 2)
	clk.advance(ms(150))
	qs[0].Done(congested("status_429"))
	if s := c.Snapshot(); s.Decreases != 1 {
		t.Fatalf("429 within the window: decreases %d, want 1", s.Decreases)
	}
	// A window after the cut: cut again, to 0.9 × 10 units / 600ms.
	clk.advance(DefaultWindow)
	qs[1].Done(congested("status_429"))
	if s := c.Snapshot(); s.Decreases != 2 || !approx(s.Rate, 0.9*10/0.8) {
		t.Fatalf("429 a window later: rate %v decreases %d, want %v and 2", s.Rate, s.Decreases, 0.9*10/0.8)
	}
}

func TestCutPullsLimitToGoodput(t *testing.T) {
	// The limit is 10000/s but the loader only sent 50 in a second: a
	// throttle brings the limit to 0.9×50, not 0.9×10000.
	c, clk := newFake(t, 10000, nil)
	ps := take(t, c, 51)
	clk.advance(time.Second)
	doneAll(ps[:50], success(ms(5)))
	ps[50].Done(congested("s3_slowdown"))
	s := c.Snapshot()
	if !approx(s.Rate, 45) || !approx(s.LastMaxRate, 50) {
		t.Errorf("rate %v last max %v, want 45 and 50", s.Rate, s.LastMaxRate)
	}
	if s.LastReason != "s3_slowdown" || !s.LastThrottle.Equal(clk.now) {
		t.Errorf("last throttle %v %q, want now and s3_slowdown", s.LastThrottle, s.LastReason)
	}
	// Concurrency is cut to the most the store took in flight (50: the 51st
	// was refused), not from the limit (1000).
	if s.Concurrency != 50 {
		t.Errorf("concurrency %d, want 50", s.Concurrency)
	}
}

func TestCutTooFewSamplesScalesLimit(t *testing.T) {
	// With fewer than minSamples samples the goodput is not trusted: the
	// first request of a run being throttled must not drop to MinRate.
	c, _ := newFake(t, 100, nil)
	take(t, c, 1)[0].Done(congested("status_429"))
	if s := c.Snapshot(); !approx(s.Rate, 90) {
		t.Errorf("rate %v, want 90", s.Rate)
	}
}

func TestShareScalesCut(t *testing.T) {
	f := func(share, wantRate float64) {
		t.Helper()
		c, clk := newFake(t, 100, nil)
		ps := take(t, c, 200)
		clk.advance(time.Second)
		doneAll(ps[:199], success(ms(5))) // goodput 199/s > limit: the cut is of the limit
		ps[199].Done(congestedShare(share))
		if s := c.Snapshot(); !approx(s.Rate, wantRate) {
			t.Errorf("share %v: rate %v, want %v", share, s.Rate, wantRate)
		}
	}
	f(1, 90)
	f(0.5, 95)
	f(0.1, 99)
	f(0, 90)   // unknown share counts as all
	f(1.5, 90) // out of range counts as all
	f(math.NaN(), 90)
}

func TestGrowthOnlyWhenBottlenecked(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		var buf bytes.Buffer
		c, clk := newFake(t, 10, func(cfg *Config) {
			cfg.Burst, cfg.InitialConcurrency = 1, 4
			cfg.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		})
		// The loader sends less than the limit: no growth.
		take(t, c, 1)[0].Done(success(0))
		clk.advance(DefaultWindow)
		clk.tick(c)
		if s := c.Snapshot(); s.Rate != 10 || s.Increases != 0 {
			t.Fatalf("not bottlenecked: rate %v increases %d, want 10 and 0", s.Rate, s.Increases)
		}
		// It waited on the rate: slow start doubles.
		blockedWindow(t, c, clk, 0)
		if s := c.Snapshot(); s.Rate != 20 || s.Increases != 1 || s.Phase != PhaseStartup {
			t.Fatalf("bottlenecked: rate %v increases %d phase %s, want 20, 1, startup", s.Rate, s.Increases, s.Phase)
		}
		// Unused slots are trimmed at the same Tick, which would hide a
		// growth from the limit itself: read the log.
		grew := false
		for _, l := range strings.Split(buf.String(), "\n") {
			grew = grew || strings.Contains(l, "limit=concurrency") && strings.Contains(l, "_growth")
		}
		if s := c.Snapshot(); s.Concurrency > 4 || grew {
			t.Fatalf("concurrency grew though it was not the bottleneck: %+v\n%s", s, buf.String())
		}
	})
	t.Run("concurrency", func(t *testing.T) {
		c, clk := newFake(t, 10, func(cfg *Config) { cfg.InitialConcurrency = 3 })
		ps := take(t, c, 3)
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("4th TryAcquire with 3 slots: %v, want ErrNoCapacity", err)
		}
		doneAll(ps, success(0))
		clk.advance(DefaultWindow)
		clk.tick(c)
		if s := c.Snapshot(); s.Concurrency != 6 || s.Rate != 10 {
			t.Fatalf("concurrency-bottlenecked: concurrency %d rate %v, want 6 and 10", s.Concurrency, s.Rate)
		}
	})
}

func TestNoGrowthOnFailedOrCongested(t *testing.T) {
	f := func(name string, bad Sample) {
		t.Helper()
		c, clk := newFake(t, 10, func(cfg *Config) { cfg.Burst = 1 })
		// A bad sample from a request granted long ago (no fresh cut).
		old := take(t, c, 1)[0]
		clk.advance(DefaultWindow)
		clk.tick(c)
		before := c.Snapshot()
		var ps []*Permit
		for {
			p, err := c.TryAcquire(1)
			if err != nil {
				break
			}
			ps = append(ps, p)
		}
		doneAll(ps, success(ms(1)))
		old.Done(bad)
		after := c.Snapshot()
		clk.advance(DefaultWindow)
		clk.tick(c)
		s := c.Snapshot()
		if s.Rate > after.Rate || s.Concurrency > after.Concurrency || s.Increases != before.Increases {
			t.Errorf("%s: limits grew in a window with that sample: %+v -> %+v", name, after, s)
		}
		// The next clean bottlenecked window grows again.
		blockedWindow(t, c, clk, ms(1))
		if s2 := c.Snapshot(); s2.Rate <= s.Rate {
			t.Errorf("%s: no growth in the next clean window: %v -> %v", name, s.Rate, s2.Rate)
		}
	}
	f("failed", Sample{Outcome: Failed, Reason: "status_500"})
	f("congested", congested("status_429"))
	f("congested partial", congestedShare(0.01))
}

func TestNeutralOnlyReleases(t *testing.T) {
	c, clk := newFake(t, 10, func(cfg *Config) { cfg.InitialConcurrency = 1 })
	p := take(t, c, 1)[0]
	clk.advance(time.Second)
	p.Done(Sample{Outcome: Neutral, Reason: "status_400", RetryAfter: time.Hour})
	s := c.Snapshot()
	if s.InFlight != 0 || s.Rate != 10 || s.Decreases != 0 || s.Phase != PhaseStartup || s.Samples[Neutral] != 1 {
		t.Errorf("after a Neutral sample: %+v", s)
	}
}

func TestClamps(t *testing.T) {
	t.Run("max rate", func(t *testing.T) {
		c, clk := newFake(t, 10, func(cfg *Config) { cfg.Burst = 1; cfg.MaxRate = 15 })
		blockedWindow(t, c, clk, 0)
		blockedWindow(t, c, clk, 0)
		if s := c.Snapshot(); s.Rate != 15 {
			t.Errorf("rate %v, want MaxRate 15", s.Rate)
		}
	})
	t.Run("min rate and concurrency floor", func(t *testing.T) {
		c, clk := newFake(t, 10, func(cfg *Config) { cfg.MinRate = 5; cfg.InitialConcurrency = 1 })
		// Nothing accepted for 2s, then a throttle: goodput 0.
		p := take(t, c, 1)[0]
		clk.advance(2 * time.Second)
		for range 9 {
			p.Done(Sample{Outcome: Failed})
			p = take(t, c, 1)[0]
		}
		p.Done(congested("status_503"))
		if s := c.Snapshot(); s.Rate != 5 || s.Concurrency != 1 {
			t.Errorf("rate %v concurrency %d, want MinRate 5 and 1", s.Rate, s.Concurrency)
		}
	})
	t.Run("max concurrency", func(t *testing.T) {
		c, clk := newFake(t, 10, func(cfg *Config) { cfg.InitialConcurrency = 3; cfg.MaxConcurrency = 5 })
		for range 3 {
			ps := take(t, c, c.Snapshot().Concurrency)
			if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
				t.Fatalf("TryAcquire past the concurrency limit: %v", err)
			}
			doneAll(ps, success(0))
			clk.advance(DefaultWindow)
			clk.tick(c)
		}
		if s := c.Snapshot(); s.Concurrency != 5 {
			t.Errorf("concurrency %d, want MaxConcurrency 5", s.Concurrency)
		}
	})
	t.Run("no concurrency limit", func(t *testing.T) {
		// math.MaxInt slots is a valid Config: no limit on concurrency.
		c, _ := newFake(t, 10, func(cfg *Config) { cfg.InitialConcurrency = math.MaxInt; cfg.MaxConcurrency = math.MaxInt })
		if _, err := c.TryAcquire(1); err != nil {
			t.Errorf("TryAcquire with math.MaxInt slots: %v", err)
		}
		if s := c.Snapshot(); s.Concurrency != math.MaxInt {
			t.Errorf("concurrency %d, want math.MaxInt", s.Concurrency)
		}
	})
}

func TestLatencyEarlySignal(t *testing.T) {
	c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 8; cfg.MaxConcurrency = 1000 })
	lat := ms(10)
	store := func(int) time.Duration { return lat }
	for range 3 {
		littleWindow(t, c, clk, store)
	}
	// Each doubling brought goodput in proportion (the store serves any
	// number at once): kept.
	s := c.Snapshot()
	if s.LatencyBaseline != ms(10) || s.LatencyRecent != ms(10) || s.LatencyElevated || s.Concurrency != 64 {
		t.Fatalf("after 3 good windows: %+v, want baseline=recent=10ms and concurrency doubled each window (64)", s)
	}
	// Latency jumps tenfold: growth stops at once. (The last doubling,
	// judged by this window, brought nothing: it is taken back.)
	lat = ms(100)
	littleWindow(t, c, clk, store)
	s = c.Snapshot()
	if !s.LatencyElevated || s.Concurrency != 32 || s.LatencyBaseline != ms(10) || s.Decreases != 0 {
		t.Fatalf("first slow window: %+v, want elevated, concurrency back at 32 and held, baseline kept", s)
	}
	// Latency back to normal: the fast EWMA comes down within a few
	// windows, then growth resumes.
	lat = ms(10)
	for i := 0; c.Snapshot().LatencyElevated; i++ {
		if i == 6 {
			t.Fatalf("latency still elevated after 6 good windows: %+v", c.Snapshot())
		}
		littleWindow(t, c, clk, store)
		if s2 := c.Snapshot(); s2.Concurrency != 32 && s2.LatencyElevated {
			t.Fatalf("grew while latency was elevated: %+v", s2)
		}
	}
	littleWindow(t, c, clk, store)
	if s2 := c.Snapshot(); s2.Concurrency <= 32 || s2.Decreases != 0 {
		t.Fatalf("latency recovered: %+v, want growth and no cut", s2)
	}
}

func TestLatencySlightlyHighCutsGently(t *testing.T) {
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 10; cfg.InitialConcurrency = 64 })
	batchWindow(t, c, clk, 10, ms(100))
	// 170ms: past 1.5×100ms+1ms, but not far.
	for range 3 {
		batchWindow(t, c, clk, 10, ms(170))
	}
	if s := c.Snapshot(); s.Concurrency != 9 || s.Decreases != 1 {
		t.Fatalf("%+v, want concurrency 0.9×10 = 9 after one gentle cut", s)
	}
}

// littleWindow runs one window against a store that serves any number of
// requests at once with latency lat(n) for n in flight: batches of as many
// requests as the concurrency limit allows, each batch taking lat(n), so
// that the goodput is concurrency/latency (Little's law). The rate never
// binds.
func littleWindow(t *testing.T, c *Controller, clk *fakeClock, lat func(n int) time.Duration) {
	t.Helper()
	end := clk.now.Add(DefaultWindow)
	for clk.now.Before(end) {
		n := c.Snapshot().Concurrency
		ps := take(t, c, n)
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) { // the slots are the bottleneck
			t.Fatalf("TryAcquire past %d slots: %v", n, err)
		}
		d := lat(n)
		clk.advance(d)
		doneAll(ps, success(d))
	}
	clk.tick(c)
}

func TestLatencyCutCheckedByGoodput(t *testing.T) {
	newStore := func(t *testing.T) (*Controller, *fakeClock) {
		t.Helper()
		c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 10; cfg.MaxConcurrency = 10 })
		for range 3 {
			littleWindow(t, c, clk, func(int) time.Duration { return ms(10) })
		}
		if s := c.Snapshot(); s.LatencyBaseline != ms(10) || s.Concurrency != 10 {
			t.Fatalf("after 3 windows at 10ms: %+v", s)
		}
		return c, clk
	}
	t.Run("queue of ours", func(t *testing.T) {
		// Above 4 in flight the store queues our requests: latency grows
		// with what we send, goodput does not. The latency cut stands.
		c, clk := newStore(t)
		queue := func(n int) time.Duration { return ms(10) * time.Duration(max(n, 4)) / 4 }
		for range 3 {
			littleWindow(t, c, clk, queue)
		}
		s := c.Snapshot()
		if s.Concurrency >= 10 || s.Decreases != 1 || s.LatencyBaseline != ms(10) {
			t.Fatalf("after a latency cut that kept the goodput: %+v, want it kept and the baseline too", s)
		}
		for range 8 {
			littleWindow(t, c, clk, queue)
		}
		// Concurrency stays about where the queue is within the tolerance
		// (1.5×10ms+1ms: 6 in flight, 15ms), probing a slot or two above
		// it and cut back; the baseline is never adopted.
		if s := c.Snapshot(); s.Concurrency < 4 || s.Concurrency > 8 || s.LatencyBaseline != ms(10) {
			t.Fatalf("after 8 more windows: %+v, want concurrency 4 to 8 and the baseline kept", s)
		}
	})
	t.Run("the store's own latency", func(t *testing.T) {
		// The store got slower for everyone (bigger documents, a busy
		// disk): 50ms whatever we send. Cutting concurrency costs goodput
		// in proportion, so the cut is undone and 50ms is the baseline.
		c, clk := newStore(t)
		slow := func(int) time.Duration { return ms(50) }
		for range 2 {
			littleWindow(t, c, clk, slow)
		}
		if s := c.Snapshot(); s.Concurrency != 5 || s.Decreases != 1 {
			t.Fatalf("after two slow windows: %+v, want one latency cut, by half (latency far past the tolerance)", s)
		}
		littleWindow(t, c, clk, slow)
		s := c.Snapshot()
		if s.Concurrency != 10 || s.LatencyElevated || s.LatencyBaseline < ms(45) {
			t.Fatalf("after the goodput fell with the cut: %+v, want concurrency 10 again and latency no longer elevated", s)
		}
		// From now on the latency follows the store's load without cuts.
		for _, d := range []time.Duration{ms(200), ms(200), ms(200), ms(20), ms(20)} {
			littleWindow(t, c, clk, func(int) time.Duration { return d })
			if s := c.Snapshot(); s.Concurrency != 10 || s.Decreases != 1 {
				t.Fatalf("latency %v: %+v, want no more latency cuts", d, s)
			}
		}
	})
}

func TestLittlesLawFloor(t *testing.T) {
	// 200 req/s at 100ms latency needs 20 slots; with headroom 25. The
	// rate is the bottleneck (batches of 4 go out as fast as it lets
	// them), the slots are not.
	c, clk := newFake(t, 200, func(cfg *Config) { cfg.InitialConcurrency = 5; cfg.Burst = 4 })
	batchWindow(t, c, clk, 4, ms(100))
	// The rate, the bottleneck in startup, doubled to 400/s: 40 slots, 50
	// with headroom.
	if s := c.Snapshot(); s.Rate != 400 || s.Concurrency != 50 {
		t.Errorf("rate %v concurrency %d, want 400 and ceil(400 × 0.1 × 1.25) = 50", s.Rate, s.Concurrency)
	}
}

func TestUnusedConcurrencyTrimmed(t *testing.T) {
	// 64 slots, but the loader keeps at most 2 requests in flight: the
	// limit comes down to what is used, so that a stall of the store cannot
	// pile 64 requests up in it. When the loader needs more, it fills the
	// slots it has and they grow again.
	c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 64 })
	for range 3 {
		for range 20 {
			ps := take(t, c, 2)
			clk.advance(ms(10))
			doneAll(ps, success(ms(10)))
		}
		clk.advance(DefaultWindow - 20*ms(10))
		clk.tick(c)
	}
	if s := c.Snapshot(); s.Concurrency != 2 || s.Decreases != 0 {
		t.Fatalf("after 3 windows with 2 in flight: %+v, want concurrency trimmed to 2 (no decrease: nothing went wrong)", s)
	}
	for range 3 {
		littleWindow(t, c, clk, func(int) time.Duration { return ms(10) })
	}
	if s := c.Snapshot(); s.Concurrency != 16 {
		t.Fatalf("a loader that fills its slots for 3 windows: %+v, want them doubled each window (16)", s)
	}
}

func TestConcurrencyGrowthWithoutGainTakenBack(t *testing.T) {
	// The store serves 4 at a time and queues the rest (VictoriaMetrics'
	// -maxConcurrentInserts): more slots bring no goodput, only a queue in
	// the store that its next stall would turn into refusals. A growth
	// that brought nothing is taken back, and remembered.
	c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 4; cfg.MaxConcurrency = 64 })
	queue := func(n int) time.Duration { return ms(10) * time.Duration(max(n, 4)) / 4 }
	littleWindow(t, c, clk, queue) // 4 slots bound: doubled to 8
	if s := c.Snapshot(); s.Concurrency != 8 {
		t.Fatalf("after a window bound by 4 slots: %+v, want 8", s)
	}
	littleWindow(t, c, clk, queue) // 8 in flight, the same goodput: back to 4
	s := c.Snapshot()
	if s.Concurrency != 4 || s.Decreases != 0 || s.Phase != PhaseStartup {
		t.Fatalf("after a window at 8 slots with the goodput of 4: %+v, want 4 again (not a congestion cut)", s)
	}
	// Later growth is cautious: it does not double straight back.
	littleWindow(t, c, clk, queue)
	if s := c.Snapshot(); s.Concurrency >= 8 {
		t.Fatalf("next window: %+v, want growth far below a doubling", s)
	}
}

func TestRetryAfterPause(t *testing.T) {
	f := func(name string, maxRA, ra, wantPause time.Duration) {
		t.Helper()
		c, clk := newFake(t, 100, func(cfg *Config) { cfg.MaxRetryAfter = maxRA })
		ps := take(t, c, 20)
		ps[0].Done(congestedRA(ra))
		doneAll(ps[2:], success(ms(1)))
		s := c.Snapshot()
		if wantPause == 0 {
			if s.Phase == PhasePaused || !s.PausedUntil.IsZero() || s.Pauses != 0 {
				t.Errorf("%s: paused: %+v", name, s)
			}
			clk.advance(ms(20)) // a token at the cut rate, 90/s
			if _, err := c.TryAcquire(1); err != nil {
				t.Errorf("%s: TryAcquire: %v", name, err)
			}
			return
		}
		if s.Phase != PhasePaused || !s.PausedUntil.Equal(clk.now.Add(wantPause)) {
			t.Errorf("%s: phase %s until %v, want paused until now+%v", name, s.Phase, s.PausedUntil, wantPause)
		}
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Errorf("%s: TryAcquire while paused: %v, want ErrNoCapacity", name, err)
		}
		if got := c.RetryWait(1); got < wantPause {
			t.Errorf("%s: RetryWait %v, want at least the pause %v", name, got, wantPause)
		}
		// A shorter Retry-After does not shorten the pause.
		ps[1].Done(congestedRA(2 * time.Second))
		if s := c.Snapshot(); !s.PausedUntil.Equal(clk.now.Add(wantPause)) {
			t.Errorf("%s: pause shortened to %v", name, s.PausedUntil)
		}
		clk.advance(wantPause - 1)
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Errorf("%s: TryAcquire 1ns before the end: %v, want ErrNoCapacity", name, err)
		}
		clk.advance(time.Second)
		if _, err := c.TryAcquire(1); err != nil {
			t.Errorf("%s: TryAcquire after the pause: %v", name, err)
		}
		// One throttle is too few samples for a throttle point: the rate
		// still has none and doubles per window, startup growth, though
		// startup rounds ended with the pause.
		if s := c.Snapshot(); s.Phase != PhaseStartup || s.LastMaxRate != 0 || !c.throttled {
			t.Errorf("%s: after the pause: %+v (throttled %v), want startup without a throttle point, rounds over", name, s, c.throttled)
		}
	}
	f("long", 0, 15*time.Second, 15*time.Second)
	f("at the threshold", 0, longRetryAfter, longRetryAfter)
	f("capped", 0, time.Hour, DefaultMaxRetryAfter)
	f("capped by config", 3*time.Second, 10*time.Second, 3*time.Second)
	f("a quota's 2s", 0, 2*time.Second, 0) // nginx limit_req with Retry-After: 2
	f("just below the threshold", 0, longRetryAfter-time.Second, 0)
	f("short single", 0, time.Second, 0)
	f("sub-second single", 0, ms(300), 0)
}

func TestPauseJudgesEachWriteByWhenItWasSent(t *testing.T) {
	// The controller's hold is a pause, and it ends by the clock, never
	// by a probe's answer; what a write's answer may change depends on the
	// cut epoch it was granted in (Permit.epoch), never on whose answer
	// arrives first. Writes sent before the pause answer late, in any
	// order, around and after it.
	c, clk := newFake(t, 100, nil)
	paced(t, c, clk, 50, ms(10)) // enough samples for a goodput
	old := take(t, c, 6)         // in flight when the store asks for the pause
	clk.advance(ms(10))
	old[0].Done(congestedRA(15 * time.Second))
	paused := c.Snapshot()
	if paused.Phase != PhasePaused || paused.Decreases != 1 || paused.Pauses != 1 {
		t.Fatalf("after a 15s Retry-After: %+v, want paused with one cut", paused)
	}
	until := paused.PausedUntil

	// A write sent before the pause succeeds during it and releases its
	// slot: the pause neither ends nor lets a write through.
	clk.advance(time.Second)
	old[1].Done(success(ms(1)))
	if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
		t.Errorf("TryAcquire after an old write's success during the pause: %v, want ErrNoCapacity", err)
	}
	if s := c.Snapshot(); s.Phase != PhasePaused || !s.PausedUntil.Equal(until) {
		t.Errorf("after an old write's success during the pause: %+v, want paused until %v", s, until)
	}

	// After the pause, only the rate admits writes, whatever old writes
	// released meanwhile: one token's worth, then none.
	clk.now = until
	old[2].Done(Sample{Outcome: Neutral})
	if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
		t.Errorf("TryAcquire as the pause ends, the bucket empty: %v, want ErrNoCapacity", err)
	}
	clk.advance(durationCeil(1 / paused.Rate))
	fresh := take(t, c, 1)[0]
	if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
		t.Errorf("second TryAcquire one token after the pause: %v, want ErrNoCapacity", err)
	}

	// Throttles of writes sent before the pause, with short Retry-Afters,
	// answered after it: they neither cut again nor pause again, however
	// many (the streak counts only writes sent after the last cut).
	for _, p := range old[3:] {
		p.Done(congestedRA(2 * time.Second))
	}
	if s := c.Snapshot(); s.Phase == PhasePaused || s.Decreases != 1 || s.Pauses != 1 || s.Rate != paused.Rate {
		t.Errorf("after %d throttles of writes sent before the pause: %+v, want no cut or pause since it", len(old[3:]), s)
	}

	// The write sent after the pause is judged by its own answer: its
	// throttle cuts.
	fresh.Done(congestedRA(2 * time.Second))
	if s := c.Snapshot(); s.Decreases != 2 || s.Rate >= paused.Rate || s.Phase == PhasePaused {
		t.Errorf("after a throttle of a write sent after the pause: %+v, want a second cut and no pause", s)
	}
}

func TestQuotaRetryAfterAmidSuccessesDoesNotPause(t *testing.T) {
	// A quota store answers "Retry-After: 1" (or 2, as an nginx gateway
	// does) to each rejected request among many accepted ones: cut the
	// rate, never idle.
	for _, ra := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second} {
		c, clk := newFake(t, 1000, nil)
		sent := 0
		for i := range 1000 { // a request every 10ms, every tenth sent refused
			clk.advance(ms(10))
			if i%50 == 0 {
				clk.tick(c)
			}
			p, err := c.TryAcquire(1)
			if err != nil {
				continue // the limit caught up with the loader
			}
			sent++
			if sent%10 == 0 {
				p.Done(congestedRA(ra))
			} else {
				p.Done(success(ms(5)))
			}
			if s := c.Snapshot(); s.Phase == PhasePaused {
				t.Fatalf("Retry-After %v: paused by a quota Retry-After: %+v", ra, s)
			}
		}
		if s := c.Snapshot(); s.Pauses != 0 || s.Decreases < 10 || s.Rate >= 1000 {
			t.Errorf("Retry-After %v: after 10s of quota 429s: %+v, want no pause and cuts", ra, s)
		}
	}
}

func TestRetryAfterHoldsTheProbe(t *testing.T) {
	// After a throttle that came with a Retry-After (a quota: each refused
	// write waits that long), the rate climbs back to the throttle point
	// but probes past it only quotaHold Retry-Afters after the cut. Without
	// a Retry-After it probes as soon as the curve says.
	f := func(ra time.Duration) (held time.Duration) {
		t.Helper()
		c, clk := newFake(t, 10, func(cfg *Config) { cfg.Burst = 1 })
		for range 3 {
			blockedWindow(t, c, clk, 0)
		}
		for range 8 {
			clk.advance(ms(25))
			take(t, c, 1)[0].Done(success(0))
		}
		clk.advance(ms(25))
		take(t, c, 1)[0].Done(Sample{Outcome: Congested, RetryAfter: ra, Reason: "status_429"})
		cut := clk.now
		last := c.Snapshot().LastMaxRate
		clk.advance(DefaultWindow)
		clk.tick(c) // the window of the throttle
		for clk.now.Sub(cut) < 10*time.Second {
			blockedWindow(t, c, clk, 0)
			if s := c.Snapshot(); s.Rate > last*1.01 {
				return clk.now.Sub(cut)
			}
		}
		t.Fatalf("Retry-After %v: no probe past %v within 10s: %+v", ra, last, c.Snapshot())
		return 0
	}
	without, with := f(0), f(2*time.Second)
	t.Logf("first probe past the throttle point: %v after the cut without Retry-After, %v with 2s", without, with)
	if with < quotaHold*2*time.Second || with <= without {
		t.Errorf("probe past the throttle point %v after the cut with Retry-After 2s, %v without: want at least %v with", with, without, quotaHold*2*time.Second)
	}
}

func TestQuotaRefusalBelowThrottlePoint(t *testing.T) {
	// A quota with a burst allowance (nginx limit_req burst=10): the
	// goodput measured when it first refused us included what the burst
	// took, so the throttle point is too high and climbing back to it
	// runs into the quota again. Refused below its throttle point, the
	// controller aims lower than where it was refused; and throttles that
	// keep coming after a cut by a Retry-After cut again within the window.
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
	paced(t, c, clk, 25, ms(20)) // 500ms at 50/s, all accepted
	clk.advance(ms(20))
	take(t, c, 1)[0].Done(congestedRA(2 * time.Second))
	first := c.Snapshot()
	// Climb back toward the throttle point, then be refused below it.
	clk.advance(DefaultWindow)
	clk.tick(c)
	for range 3 {
		blockedWindow(t, c, clk, ms(1))
	}
	before := c.Snapshot()
	if before.Rate > first.LastMaxRate {
		t.Fatalf("probed past the throttle point during the hold: %+v (throttle point %v)", before, first.LastMaxRate)
	}
	clk.advance(ms(30))
	take(t, c, 1)[0].Done(congestedRA(2 * time.Second))
	s := c.Snapshot()
	if s.LastMaxRate >= before.Rate || s.LastMaxRate >= first.LastMaxRate {
		t.Fatalf("refused at %v below the throttle point %v: %+v, want a throttle point below where it was refused", before.Rate, first.LastMaxRate, s)
	}
	// Two of three requests sent a round trip after that cut refused: cut
	// again at once.
	for i := range 3 {
		clk.advance(ms(110)) // a token at the cut rate
		p := take(t, c, 1)[0]
		if i == 0 {
			p.Done(success(ms(1)))
		} else {
			p.Done(congestedRA(2 * time.Second))
		}
	}
	if s2 := c.Snapshot(); s2.Decreases != s.Decreases+1 || s2.Rate >= s.Rate {
		t.Fatalf("throttles kept coming after a quota's cut: %+v, want a second cut from %+v", s2, s)
	}
}

func TestRetryAfterStreakPauses(t *testing.T) {
	// Short Retry-Afters that keep coming after a cut (the cut did not
	// help) pause all sends.
	c, clk := newFake(t, 100, nil)
	first := take(t, c, 1)
	first[0].Done(congestedRA(time.Second)) // cut; streak 1
	for i := range pauseStreak - 1 {        // sent after the cut, within the window
		if s := c.Snapshot(); s.Phase == PhasePaused {
			t.Fatalf("paused after %d consecutive Retry-Afters", i+1)
		}
		clk.advance(ms(100)) // a token even after the cuts the throttles make
		take(t, c, 1)[0].Done(congestedRA(time.Second))
	}
	if s := c.Snapshot(); s.Phase != PhasePaused || !s.PausedUntil.Equal(clk.now.Add(time.Second)) {
		t.Fatalf("after %d consecutive post-cut Retry-Afters: %+v, want paused 1s", pauseStreak, s)
	}

	// A success in between resets the streak.
	c, clk = newFake(t, 100, nil)
	take(t, c, 1)[0].Done(congestedRA(time.Second))
	for i := range 2 * pauseStreak {
		clk.advance(ms(100))
		if i%2 == 0 {
			take(t, c, 1)[0].Done(success(ms(1)))
		} else {
			take(t, c, 1)[0].Done(congestedRA(time.Second))
		}
	}
	if s := c.Snapshot(); s.Pauses != 0 {
		t.Fatalf("interleaved successes still paused: %+v", s)
	}
}

func TestStartupEndsAtFirstThrottle(t *testing.T) {
	c, clk := newFake(t, 10, func(cfg *Config) { cfg.Burst = 1 })
	for _, want := range []float64{20, 40, 80} {
		blockedWindow(t, c, clk, 0)
		if s := c.Snapshot(); s.Rate != want || s.Phase != PhaseStartup {
			t.Fatalf("startup: rate %v phase %s, want %v startup", s.Rate, s.Phase, want)
		}
	}
	// Enough samples for a goodput the cut can trust: 8 at 40/s.
	for range 8 {
		clk.advance(ms(25))
		take(t, c, 1)[0].Done(success(0))
	}
	clk.advance(ms(25))
	take(t, c, 1)[0].Done(congested("status_429"))
	s := c.Snapshot()
	if s.Phase != PhaseRecovering || !approx(s.Rate, 0.9*s.LastMaxRate) {
		t.Fatalf("after the first throttle: %+v, want recovering at 0.9×last max", s)
	}
	if s.LastMaxRate <= 0 || s.LastMaxRate > 80 {
		t.Fatalf("last max %v, want what the store took, at most the rate (80)", s.LastMaxRate)
	}
	// Growth is now cautious near the last throttle point: far below ×2.
	clk.advance(DefaultWindow)
	clk.tick(c) // closes the window with the throttle: no growth
	if s1 := c.Snapshot(); s1.Rate != s.Rate {
		t.Fatalf("grew in the window of the throttle: %v -> %v", s.Rate, s1.Rate)
	}
	blockedWindow(t, c, clk, 0)
	s2 := c.Snapshot()
	if s2.Rate <= s.Rate || s2.Rate > s.LastMaxRate {
		t.Fatalf("first probe window: %v -> %v, want a rise that stays below the last max %v", s.Rate, s2.Rate, s.LastMaxRate)
	}
	for range 4 {
		blockedWindow(t, c, clk, 0)
	}
	if s3 := c.Snapshot(); s3.Phase != PhaseSteady || s3.Rate <= s.LastMaxRate {
		t.Fatalf("after 2.5s of probing: %+v, want steady above %v", s3, s.LastMaxRate)
	}
}

func TestEarlyThrottleKeepsStartup(t *testing.T) {
	// A store that is still warming up throttles the very first requests
	// (VictoriaMetrics' first insert takes longer than its queue allows):
	// too little evidence for a throttle point. The limit is scaled, and
	// startup goes on doubling.
	c, clk := newFake(t, 50, func(cfg *Config) { cfg.Burst = 1 })
	take(t, c, 1)[0].Done(congested("victoriametrics_insert_limit"))
	s := c.Snapshot()
	if !approx(s.Rate, 45) || s.LastMaxRate != 0 || s.Phase != PhaseStartup {
		t.Fatalf("after an early throttle: %+v, want rate 45, no throttle point, startup", s)
	}
	clk.advance(DefaultWindow)
	clk.tick(c) // the window of the throttle: no growth
	blockedWindow(t, c, clk, ms(1))
	if s := c.Snapshot(); !approx(s.Rate, 90) || s.Phase != PhaseStartup {
		t.Fatalf("next clean window: %+v, want the startup doubling to 90", s)
	}
}

func TestStartupRounds(t *testing.T) {
	// In startup the rate doubles after every startupRound successes of
	// requests sent at the current rate while callers waited on it, without
	// waiting for the window to close.
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
	sent := 0
	for range 100 { // 100 requests, each as soon as the limit allows
		for {
			p, err := c.TryAcquire(1)
			if err == nil {
				p.Done(success(ms(1)))
				sent++
				break
			}
			clk.advance(ms(1))
		}
	}
	s := c.Snapshot()
	// Rounds of 8 at 100, 200, 400, ... /s: 100 requests take under 200ms
	// instead of a second at 100/s.
	if s.Rate < 1600 || s.Phase != PhaseStartup || s.Increases < 4 {
		t.Fatalf("after %d requests in %v: %+v, want the rate doubled at least 4 times", sent, clk.now.Sub(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)), s)
	}
	if el := clk.now.Sub(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)); el > ms(250) {
		t.Fatalf("100 requests took %v, want well under the second they take at 100/s", el)
	}

	// A round that saw a throttle grows no more, however many successes
	// follow. The first throttle, too early to trust, scales the rate and
	// starts a round; the second, in that round and within the Window, cuts
	// nothing but spoils the round.
	c, clk = newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
	take(t, c, 1)[0].Done(congested("status_429"))
	clk.advance(ms(20))
	take(t, c, 1)[0].Done(congested("status_429"))
	s = c.Snapshot()
	if s.Decreases != 1 || s.Phase != PhaseStartup {
		t.Fatalf("after two early throttles: %+v, want one cut, startup", s)
	}
	for range 4 * startupRound { // each as soon as the limit allows
		for {
			clk.advance(ms(1))
			if p, err := c.TryAcquire(1); err == nil {
				p.Done(success(ms(1)))
				break
			}
		}
	}
	if s2 := c.Snapshot(); s2.Rate != s.Rate {
		t.Fatalf("%d successes after a throttle in the same round: rate %v -> %v, want no growth", 4*startupRound, s.Rate, s2.Rate)
	}
}

func TestSpikeCutsConcurrencyOnly(t *testing.T) {
	// VictoriaMetrics with -maxConcurrentInserts=1: requests normally go
	// one at a time; when the store stalls, those that pile up behind the
	// stalled one are refused. That is a concurrency event: concurrency
	// goes to the usual in-flight count, and the rate, which did not cause
	// it, keeps its limit and its startup.
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.InitialConcurrency = 4; cfg.Burst = 1 })
	paced(t, c, clk, 40, ms(10)) // 400ms of one request at a time, 1ms each
	clk.advance(ms(10))
	stalled := take(t, c, 1)[0]
	clk.advance(ms(10))
	queued := take(t, c, 1)[0] // the second in flight
	clk.advance(ms(10))
	queued.Done(congested("victoriametrics_insert_limit"))
	s := c.Snapshot()
	if s.Concurrency != 1 || s.Rate != 100 || s.Phase != PhaseStartup || s.LastMaxRate != 0 {
		t.Fatalf("after a throttle at 2 in flight where 1 is usual: %+v, want concurrency 1, rate and startup untouched", s)
	}
	stalled.Done(success(ms(30)))

	// A throttle at the usual in-flight count is the rate's.
	c, clk = newFake(t, 100, func(cfg *Config) { cfg.InitialConcurrency = 64; cfg.Burst = 1 })
	for range 40 { // the rate is the bottleneck: a second request waits
		clk.advance(ms(10))
		ps := take(t, c, 1)
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("second TryAcquire: %v, want ErrNoCapacity", err)
		}
		doneAll(ps, success(ms(1)))
	}
	clk.advance(ms(10))
	before := c.Snapshot()
	take(t, c, 1)[0].Done(congested("status_429"))
	if s := c.Snapshot(); s.Concurrency != before.Concurrency || s.Rate >= before.Rate || s.Phase != PhaseRecovering {
		t.Fatalf("after a throttle at 1 in flight: %+v, want the rate cut from %v, startup over, concurrency kept at %d", s, before.Rate, before.Concurrency)
	}
}

func TestQuotaKeepsTheSlots(t *testing.T) {
	// Two slots, callers waiting on them, the rate far above what is
	// sent. A store's refusal then cuts the slots (they were the
	// bottleneck); a quota's, which comes with a Retry-After, cuts the
	// rate only: one slot would carry 1 ÷ latency, below the quota when
	// the store is slow.
	for _, tc := range []struct {
		sample   Sample
		wantConc int
	}{
		{congested("status_503"), 1},
		{congestedRA(2 * time.Second), 2},
	} {
		c, clk := newFake(t, 1000, func(cfg *Config) { cfg.InitialConcurrency = 2 })
		for range 60 { // 600ms: two in flight at a time, a third waits
			ps := take(t, c, 2)
			if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
				t.Fatalf("third TryAcquire: %v, want ErrNoCapacity", err)
			}
			clk.advance(ms(10))
			doneAll(ps, success(ms(10)))
		}
		before := c.Snapshot()
		if before.Concurrency != 2 {
			t.Fatalf("after a window blocked on two slots: %+v, want concurrency 2", before)
		}
		clk.advance(ms(1))
		take(t, c, 1)[0].Done(tc.sample)
		s := c.Snapshot()
		if s.Rate >= before.Rate || s.Concurrency != tc.wantConc {
			t.Errorf("throttle %+v at 1 in flight: rate %v, concurrency %d; want the rate cut from %v and concurrency %d", tc.sample, s.Rate, s.Concurrency, before.Rate, tc.wantConc)
		}
	}
}

func TestRecutWhenThrottlesContinue(t *testing.T) {
	// A quota store whose burst hid its rate: after the first cut, most
	// requests sent at the new rate are still refused. Within the window
	// the rate is cut again, from the share the store took, instead of
	// sending into the quota until the window ends.
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
	paced(t, c, clk, 20, ms(20)) // 400ms at 50/s, all accepted
	clk.advance(ms(20))
	take(t, c, 1)[0].Done(congested("status_429"))
	first := c.Snapshot()
	if first.Decreases != 1 {
		t.Fatalf("first throttle: %+v", first)
	}
	// Sent after the cut: one accepted, two refused.
	for i := range 3 {
		clk.advance(ms(40))
		p := take(t, c, 1)[0]
		if i == 0 {
			p.Done(success(ms(1)))
		} else {
			p.Done(congested("status_429"))
		}
	}
	s := c.Snapshot()
	if s.Decreases != 2 || s.Rate >= first.Rate*0.9*0.6 {
		t.Fatalf("after 2 of 3 requests sent after the cut were refused: %+v, want a second cut to about 0.9×max(1/3, 0.5) of %v (the share taken, at least 0.5)", s, first.Rate)
	}
	// A few refusals among many accepted after a cut are no reason to cut
	// again.
	c, clk = newFake(t, 1000, func(cfg *Config) { cfg.Burst = 1 })
	for range 40 { // 200/s
		clk.advance(ms(5))
		take(t, c, 1)[0].Done(success(ms(1)))
	}
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("status_429"))
	for i := range 30 { // 100/s for 300ms, below the cut rate
		clk.advance(ms(10))
		p := take(t, c, 1)[0]
		if i == 10 || i == 29 {
			p.Done(congested("status_429"))
		} else {
			p.Done(success(ms(1)))
		}
	}
	if s := c.Snapshot(); s.Decreases != 1 {
		t.Fatalf("2 refusals among 30 sent after the cut, within the window: %+v, want no second cut", s)
	}
}

func TestProbeCurve(t *testing.T) {
	const k = recoverTime
	p := probe{v: 100, min: 1, max: 1e9}
	p.cut(100, 1, 0)
	if p.v != 90 || (p.k-k).Abs() > time.Microsecond {
		t.Fatalf("after a full cut: v %v k %v, want 90 and %v", p.v, p.k, k)
	}
	f := func(dt time.Duration, want float64) {
		t.Helper()
		p.grow(dt)
		if math.Abs(p.v-want) > 1e-6*want {
			t.Errorf("after t=%v: v %v, want %v", p.t, p.v, want)
		}
	}
	f(k/2, 100*(1-0.1/8)) // concave: cautious near the last max
	f(k/2, 100)           // back at the last max after recoverTime
	f(k, 180)             // then convex, convexSpeedup times as steep: 100·(1+8·0.1·(t/k-1)³)
	f(k, 360)             // the curve would give 740, capped at ×2 per window
	f(k, 720)             // past 2× the last max: slow start's ×2 per window
	f(time.Second, 1440)  // and on
	f(time.Second, 2880)

	p.cut(100, 0.1, 0)
	if p.v != 99 || math.Abs(p.k.Seconds()-k.Seconds()*math.Cbrt(0.1)) > 1e-6 {
		t.Errorf("after a 10%% share cut: v %v k %v, want 99 and %vs", p.v, p.k, k.Seconds()*math.Cbrt(0.1))
	}
	p.cut(100, 1, 95)
	if p.v != 95 {
		t.Errorf("cut with floor 95: v %v", p.v)
	}
	p.cutTo(20, 30)
	if p.v != 20 || p.lastMax != 20 || p.k != 0 {
		t.Errorf("cutTo above base: v %v last max %v k %v, want 20 20 0", p.v, p.lastMax, p.k)
	}
	p = probe{v: 5, min: 1, max: 1e9}
	p.cut(0.1, 1, 0)
	if p.v != 1 || p.lastMax != 1 {
		t.Errorf("cut below min: v %v last max %v, want both clamped to 1", p.v, p.lastMax)
	}
}

func TestRetryWait(t *testing.T) {
	c, clk := newFake(t, 10, func(cfg *Config) { cfg.Burst = 1; cfg.MaxRetryAfter = 2 * time.Second })
	if got := c.RetryWait(1); got != 0 {
		t.Errorf("with a token available: %v, want 0", got)
	}
	take(t, c, 1)[0].Done(success(ms(10)))
	if got := c.RetryWait(1); got != ms(100) {
		t.Errorf("with the bucket empty at 10/s: %v, want 100ms", got)
	}
	if got := c.RetryWait(5); got != ms(500) {
		t.Errorf("for 5 units: %v, want 500ms", got)
	}
	if got := c.RetryWait(1000); got != 2*time.Second {
		t.Errorf("for 1000 units: %v, want MaxRetryAfter 2s", got)
	}
	clk.advance(ms(100))
	take(t, c, 1)[0].Done(congestedRA(time.Minute)) // pause capped at 2s
	if got := c.RetryWait(1); got != 2*time.Second {
		t.Errorf("paused: %v, want 2s", got)
	}
}

func TestRetryWaitSaturates(t *testing.T) {
	// At a rate low enough that the drain time saturates a Duration, adding
	// the rest of a pause, or multiplying the latency by the rounds of a
	// queue, must not wrap into a negative wait: the answer stays within
	// [0, MaxRetryAfter].
	f := func(name string, rate float64, maxRA time.Duration, setup func(c *Controller, clk *fakeClock), cost float64, want time.Duration) {
		t.Helper()
		c, clk := newFake(t, rate, func(cfg *Config) { cfg.MinRate = rate; cfg.MaxRetryAfter = maxRA })
		setup(c, clk)
		if got := c.RetryWait(cost); got != want {
			t.Errorf("%s: RetryWait(%v) = %v, want %v", name, cost, got, want)
		}
	}
	pause := func(c *Controller, clk *fakeClock) {
		take(t, c, 1)[0].Done(Sample{Outcome: Congested, RetryAfter: 20 * time.Second, Reason: "status_503"})
	}
	f("paused, drain saturated", 1e-9, 0, pause, 1e6, DefaultMaxRetryAfter)
	f("paused, drain saturated, configured cap", 1e-9, 45*time.Second, pause, 1e6, 45*time.Second)
	f("paused, cost past any float", 1e-9, 0, pause, math.MaxFloat64, DefaultMaxRetryAfter)
	f("not paused, drain saturated", 1e-9, 0, func(*Controller, *fakeClock) {}, 1e16, DefaultMaxRetryAfter)
	// Two rounds of a latency of two centuries: a spike cut leaves two in
	// flight at a limit of one.
	f("rounds of a huge latency", 100, 0, func(c *Controller, clk *fakeClock) {
		take(t, c, 1)[0].Done(success(200 * 365 * 24 * time.Hour))
		clk.advance(DefaultWindow)
		clk.tick(c)
		ps := take(t, c, 3)
		ps[2].Done(congested("victoriametrics_insert_limit"))
		if s := c.Snapshot(); s.Concurrency != 1 || s.InFlight != 2 {
			t.Fatalf("after a spike at 3 in flight: %+v, want concurrency 1 with 2 in flight", s)
		}
	}, 1, DefaultMaxRetryAfter)
}

func TestDoneIdempotent(t *testing.T) {
	c, _ := newFake(t, 100, func(cfg *Config) { cfg.InitialConcurrency = 1 })
	p := take(t, c, 1)[0]
	p.Done(success(ms(1)))
	p.Done(congested("status_429"))
	s := c.Snapshot()
	if s.InFlight != 0 || s.Decreases != 0 || s.Samples[Success] != 1 || s.Samples[Congested] != 0 {
		t.Errorf("second Done had an effect: %+v", s)
	}
	if p.Cost() != 1 {
		t.Errorf("Cost %v, want 1", p.Cost())
	}
}

func TestBadCost(t *testing.T) {
	c, _ := newFake(t, 100, nil)
	for _, cost := range []float64{-1, math.NaN(), math.Inf(1)} {
		if _, err := c.TryAcquire(cost); err == nil || !strings.Contains(err.Error(), "cost=") {
			t.Errorf("TryAcquire(%v) = %v, want a cost error", cost, err)
		}
		if _, err := c.Acquire(t.Context(), cost); err == nil {
			t.Errorf("Acquire(%v) accepted", cost)
		}
	}
	if _, err := c.TryAcquire(0); err != nil {
		t.Errorf("TryAcquire(0): %v", err)
	}
}

func TestHeartbeat(t *testing.T) {
	c, clk := newFake(t, 100, nil)
	clk.advance(time.Second)
	clk.tick(c)
	if s := c.Snapshot(); !s.Heartbeat.Equal(clk.now) {
		t.Errorf("heartbeat %v, want %v", s.Heartbeat, clk.now)
	}
	c.Tick(clk.now.Add(-time.Hour)) // a clock step back only records the beat
	if s := c.Snapshot(); !s.Heartbeat.Equal(clk.now.Add(-time.Hour)) {
		t.Errorf("heartbeat %v after a step back", s.Heartbeat)
	}
}

func TestTickInterval(t *testing.T) {
	c, _ := newFake(t, 100, nil)
	for range 100 {
		if d := c.TickInterval(); d < ms(450) || d > ms(550) {
			t.Fatalf("TickInterval %v outside Window ±10%%", d)
		}
	}
	// Window ±10% saturates rather than wrapping for a Window near the
	// largest Duration.
	f := func(window time.Duration, jitter float64, want time.Duration) {
		t.Helper()
		c, _ := newFake(t, 100, func(cfg *Config) { cfg.Window = window })
		c.jitter = func() float64 { return jitter }
		if got := c.TickInterval(); got != want {
			t.Errorf("Window %v, jitter %v: TickInterval %v, want %v", window, jitter, got, want)
		}
	}
	f(DefaultWindow, 0, ms(450))
	f(DefaultWindow, 0.5, DefaultWindow)
	f(math.MaxInt64, 0.5, math.MaxInt64)
	f(math.MaxInt64, 0.99, math.MaxInt64)
}

func TestHugeLatencySaturates(t *testing.T) {
	// A latency at the largest Duration goes through the geometric mean's
	// float arithmetic and must come back as that, not wrap negative.
	c, clk := newFake(t, 100, nil)
	take(t, c, 1)[0].Done(success(math.MaxInt64))
	clk.advance(DefaultWindow)
	clk.tick(c)
	if s := c.Snapshot(); s.LatencyRecent != math.MaxInt64 || s.LatencyBaseline != math.MaxInt64 {
		t.Errorf("after a latency of %v: recent %v, baseline %v, want both %v", time.Duration(math.MaxInt64), s.LatencyRecent, s.LatencyBaseline, time.Duration(math.MaxInt64))
	}
}

func TestLogsEachChangeOnceThrottled(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) { testLogThrottle(t, level) })
	}
}

// TestLogEventThrottle: every throttled record (limit changes, pauses, the
// outage's) is logged at info level once per logEvery, the next one with a
// count of those left out, and each left out at debug level.
func TestLogEventThrottle(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			var buf bytes.Buffer
			c, clk := newFake(t, 10, func(cfg *Config) {
				cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
			})
			var st logState
			c.mu.Lock()
			for i := range 3 {
				c.logPauseLocked(clk.now.Add(time.Second), time.Second, "status_429", clk.now)
				c.logEventLocked(&st, clk.now, "event", "n", i)
				clk.advance(time.Second)
			}
			clk.advance(logEvery)
			c.logPauseLocked(clk.now.Add(time.Second), time.Second, "status_429", clk.now)
			c.logEventLocked(&st, clk.now, "event", "n", 3)
			c.mu.Unlock()
			var info, debug, counted int
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				switch {
				case strings.Contains(l, "level=INFO"):
					info++
				case strings.Contains(l, "level=DEBUG"):
					debug++
				}
				if strings.HasSuffix(l, " suppressed=2") {
					counted++
				}
			}
			wantDebug := 0
			if level == slog.LevelDebug {
				wantDebug = 4
			}
			if info != 4 || debug != wantDebug || counted != 2 {
				t.Errorf("%d info lines, %d debug, %d with suppressed=2; want 4, %d, 2:\n%s", info, debug, counted, wantDebug, buf.String())
			}
		})
	}
}

// testLogThrottle: at info level each kind of limit change is logged once
// per logEvery, the next line with a count of those left out; at debug
// level those left out are logged too, at debug level.
func testLogThrottle(t *testing.T, level slog.Level) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
	c, clk := newFake(t, 10, func(cfg *Config) { cfg.Burst = 1; cfg.Logger = logger })
	for range 4 {
		blockedWindow(t, c, clk, 0) // 4 startup doublings within 10s
	}
	clk.advance(ms(10)) // a token
	// A quota's: the probe then stays at the throttle point for
	// quotaHold·4s, past logEvery.
	take(t, c, 1)[0].Done(congestedRA(4 * time.Second))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var growth, cuts int
	for _, l := range lines {
		if !strings.Contains(l, "component=limiter") || !strings.Contains(l, "from=") || !strings.Contains(l, "to=") {
			t.Errorf("log line without component/from/to: %s", l)
		}
		switch {
		case strings.Contains(l, "reason=startup_growth") && strings.Contains(l, "level=INFO"):
			growth++
		case strings.Contains(l, "reason=congestion") && strings.Contains(l, "cause=status_429"):
			cuts++
		}
	}
	if growth != 1 || cuts != 1 {
		t.Errorf("logged %d growth and %d cut lines at info level, want 1 (throttled) and 1 (the rate; concurrency was not involved):\n%s", growth, cuts, buf.String())
	}
	// After the cut the rate climbs back to the throttle point, then
	// probes past it: the first probe growth is logged, those within
	// logEvery of it are counted, and the first after logEvery is logged
	// with their count.
	buf.Reset()
	var first time.Time
	suppressed := 0
	for range 40 {
		from := c.Snapshot().Rate
		blockedWindow(t, c, clk, 0)
		if c.Snapshot().Rate <= from {
			continue
		}
		if first.IsZero() {
			first = clk.now
		} else if clk.now.Sub(first) < logEvery {
			suppressed++
		} else {
			break
		}
	}
	var probes, debug []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(l, "limit=rate") && strings.Contains(l, "reason=probe_growth") {
			if strings.Contains(l, "level=DEBUG") {
				debug = append(debug, l)
			} else {
				probes = append(probes, l)
			}
		}
	}
	if suppressed == 0 || len(probes) != 2 || strings.Contains(probes[0], "suppressed=") ||
		!strings.HasSuffix(probes[1], fmt.Sprintf(" suppressed=%d", suppressed)) {
		t.Errorf("probe growth lines at info level %q, want two, the second with suppressed=%d:\n%s", probes, suppressed, buf.String())
	}
	want := 0
	if level == slog.LevelDebug {
		want = suppressed
	}
	if len(debug) != want {
		t.Errorf("%d probe growth lines at debug level, want %d (at level %v, %d left out of info):\n%s", len(debug), want, level, suppressed, buf.String())
	}
}

func TestLatencyCutJudgedOnlyWhenSlotsBind(t *testing.T) {
	// A latency cut is judged by the goodput of the next window only if
	// the slots bound it: a loader that merely sent less in it says nothing
	// about what the cut cost.
	c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 10; cfg.MaxConcurrency = 10 })
	for range 3 {
		littleWindow(t, c, clk, func(int) time.Duration { return ms(10) })
	}
	queue := func(n int) time.Duration { return ms(10) * time.Duration(max(n, 4)) / 4 }
	for range 2 {
		littleWindow(t, c, clk, queue)
	}
	cut := c.Snapshot()
	if cut.Concurrency >= 10 || cut.Decreases != 1 {
		t.Fatalf("after two windows with a queue of ours: %+v, want a latency cut", cut)
	}
	// The loader sends one request at a time: the goodput falls, though
	// the slots had nothing to do with it.
	end := clk.now.Add(DefaultWindow)
	for clk.now.Before(end) {
		p := take(t, c, 1)[0]
		clk.advance(queue(1))
		p.Done(success(queue(1)))
	}
	clk.tick(c)
	if s := c.Snapshot(); s.Concurrency > cut.Concurrency || s.LatencyBaseline != ms(10) {
		t.Fatalf("after a window the slots did not bind: %+v, want the cut to %d kept and the baseline 10ms kept", s, cut.Concurrency)
	}
}

func TestColdBucketHoldsTwoWrites(t *testing.T) {
	// With the default burst and costs in bytes, the cold bucket holds two
	// writes' worth, not two bytes: two writes overlap before the store
	// first answers, a third waits for that answer.
	c, _ := newFake(t, 1e6, func(cfg *Config) { cfg.Burst = 0; cfg.InitialConcurrency = 8 })
	const size = 10_000 // bytes; 50ms at 1e6 B/s holds five
	a, err := c.TryAcquire(size)
	if err != nil {
		t.Fatalf("first write: %v", err)
	}
	b, err := c.TryAcquire(size)
	if err != nil {
		t.Fatalf("second write before the first answer: %v (%+v), want it admitted", err, c.Snapshot())
	}
	if _, err := c.TryAcquire(size); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("third write before the first answer: %v, want ErrNoCapacity", err)
	}
	if s := c.Snapshot(); s.Burst != 2*size {
		t.Errorf("cold burst %v, want two writes (%v)", s.Burst, 2*size)
	}
	doneAll([]*Permit{a, b}, success(ms(1)))

	// The same through Acquire, the proxy's path.
	c, _ = newFake(t, 1e6, func(cfg *Config) { cfg.Burst = 0; cfg.InitialConcurrency = 8 })
	for i := range 2 {
		// A write admitted at once never looks at ctx; one that waits would
		// wait on the fake clock for ever, so ctx bounds it.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		p, err := c.Acquire(ctx, size)
		cancel()
		if err != nil {
			t.Fatalf("Acquire #%d before the first answer: %v (%+v), want it admitted at once", i+1, err, c.Snapshot())
		}
		defer p.Done(success(ms(1)))
	}
	if s := c.Snapshot(); s.Burst != 2*size {
		t.Errorf("Acquire: cold burst %v, want two writes (%v)", s.Burst, 2*size)
	}
}

func TestFastConvergenceRestartsTheCurve(t *testing.T) {
	// A quota's refusal below its throttle point lowers the point halfway
	// between where it refused and the cut (CUBIC's fast convergence),
	// whatever share was refused, and the curve is timed to the new point.
	f := func(share float64) {
		t.Helper()
		c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
		paced(t, c, clk, 25, ms(20))
		clk.advance(ms(20))
		take(t, c, 1)[0].Done(congestedRA(2 * time.Second))
		clk.advance(DefaultWindow)
		clk.tick(c)
		for range 3 {
			blockedWindow(t, c, clk, ms(1))
		}
		clk.advance(ms(30))
		take(t, c, 1)[0].Done(Sample{Outcome: Congested, Share: share, RetryAfter: 2 * time.Second, Reason: "status_429"})
		s := c.Snapshot()
		if s.Rate >= s.LastMaxRate || s.Phase != PhaseRecovering {
			t.Errorf("share %v: after the refusal below the throttle point: %+v, want the rate below the new point, recovering", share, s)
		}
		// The refusal came at base (the goodput, at most the limit); the
		// cut goes to v, the new point halfway between.
		base := s.Rate / (1 - (1-decreaseFactor)*share)
		if want := (base + s.Rate) / 2; !approx(s.LastMaxRate, want) {
			t.Errorf("share %v: new throttle point %v, want %v, halfway between the refusal at %v and the cut to %v", share, s.LastMaxRate, want, base, s.Rate)
		}
		want := time.Duration(math.Cbrt((1-c.rate.v/c.rate.lastMax)/cubicScale) * float64(time.Second))
		if (c.rate.k - want).Abs() > time.Microsecond {
			t.Errorf("share %v: curve reaches the point after %v, want %v", share, c.rate.k, want)
		}
	}
	f(1)
	f(0.3)
}

func TestStartupFollowsTheSendRate(t *testing.T) {
	// A loader that sends 1000 req/s in pairs (the second of each finds the
	// one-token bucket empty) does not double the limit past a few times
	// what it sends: the rate doubles only when it carried at least half
	// its limit.
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
	for i := range 3000 {
		if p, err := c.TryAcquire(1); err == nil {
			c.TryAcquire(1) // the pair's second waits on the rate
			p.Done(success(ms(1)))
		}
		clk.advance(ms(1))
		if (i+1)%500 == 0 {
			clk.tick(c)
		}
	}
	if s := c.Snapshot(); s.Rate < 1000 || s.Rate > 4000 {
		t.Fatalf("after 3s of 1000 req/s: %+v, want the rate within [1000, 4000]", s)
	}
}

func TestUndoneLatencyCutResumesStartup(t *testing.T) {
	// A latency cut ends startup rounds (a queue of ours); when it is
	// undone (the latency was the store's), startup goes on, and the phase
	// says so.
	c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 10; cfg.MaxConcurrency = 10 })
	for range 3 {
		littleWindow(t, c, clk, func(int) time.Duration { return ms(10) })
	}
	for range 3 {
		littleWindow(t, c, clk, func(int) time.Duration { return ms(50) })
	}
	s := c.Snapshot()
	if s.Decreases != 1 || s.LastMaxRate != 0 || s.Phase != PhaseStartup || c.throttled {
		t.Fatalf("after an undone latency cut: %+v (throttled %v), want startup with no throttle point", s, c.throttled)
	}
}

func TestHugeRetryAfter(t *testing.T) {
	// quotaHold·Retry-After must not overflow into the past.
	c, clk := newFake(t, 100, nil)
	take(t, c, 1)[0].Done(congestedRA(math.MaxInt64 / 2))
	if want := clk.now.Add(DefaultMaxRetryAfter); !c.probeAfter.Equal(want) {
		t.Fatalf("probe held until %v, want now+MaxRetryAfter (%v)", c.probeAfter, want)
	}
}

func TestQuickRefusalAtTwoInFlightIsTheRates(t *testing.T) {
	// A loader that usually has less than one request in flight at a
	// low-latency rate quota: when two overlap and one is refused at once,
	// or with a Retry-After, that is the quota's rate, not a stall.
	f := func(name string, refusal Sample) {
		t.Helper()
		c, clk := newFake(t, 100, nil)
		for range 50 { // 6ms of every 10ms in flight: 0.6 on average
			p := take(t, c, 1)[0]
			clk.advance(ms(6))
			p.Done(success(ms(6)))
			clk.advance(ms(4))
		}
		clk.tick(c)
		before := c.Snapshot()
		if before.Concurrency < 2 || before.LatencyBaseline != ms(6) {
			t.Fatalf("%s: setup: %+v", name, before)
		}
		ps := take(t, c, 2)
		clk.advance(ms(1))
		ps[1].Done(refusal)
		ps[0].Done(success(ms(6)))
		if s := c.Snapshot(); s.Rate >= before.Rate || s.LastMaxRate == 0 {
			t.Errorf("%s: %+v, want the rate cut from %v", name, s, before.Rate)
		}
	}
	f("with Retry-After", congestedRA(time.Second))
	fast := congested("status_429")
	fast.Latency = ms(1)
	f("at once", fast)
}

func TestRecutOnce(t *testing.T) {
	// The cut that ended startup may be followed by one re-cut within its
	// Window; later cuts are once per Window, even when throttles keep
	// coming (on a shared store they say little of one sidecar's rate).
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1 })
	paced(t, c, clk, 20, ms(20))
	clk.advance(ms(20))
	take(t, c, 1)[0].Done(congested("status_429"))
	refuseTwoOfThree := func() {
		t.Helper()
		for i := range 3 {
			clk.advance(ms(60)) // a token at the cut rates
			p := take(t, c, 1)[0]
			if i == 0 {
				p.Done(success(ms(1)))
			} else {
				p.Done(congested("status_429"))
			}
		}
	}
	refuseTwoOfThree()
	recut := c.Snapshot()
	if recut.Decreases != 2 {
		t.Fatalf("throttles after the cut that ended startup: %+v, want a re-cut", recut)
	}
	refuseTwoOfThree() // within the Window of the re-cut
	if s := c.Snapshot(); s.Decreases != 2 || s.Rate != recut.Rate {
		t.Fatalf("throttles after the re-cut, within its Window: %+v, want no third cut", s)
	}
}

func TestStallAfterGrowthFromOneSlot(t *testing.T) {
	// VictoriaMetrics with -maxConcurrentInserts=1 under a loader that
	// always has a write waiting: one write is always in flight, so the
	// usual count is 1, not below it. When concurrency grows to 2, the
	// second write waits behind the first, and is refused when the first
	// stalls. That is the growth's failure, not the rate's: concurrency goes
	// back to 1 and the rate keeps its limit.
	c, clk := newFake(t, 1000, func(cfg *Config) { cfg.InitialConcurrency = 1 })
	oneSlotWindow(t, c, clk)
	clk.tick(c)
	before := c.Snapshot()
	if before.Concurrency != 2 || before.LatencyBaseline != ms(2) {
		t.Fatalf("setup: %+v, want concurrency grown to 2 at a 2ms baseline", before)
	}
	ps := take(t, c, 2)
	clk.advance(ms(12))
	refused := congested("victoriametrics_insert_limit")
	refused.Latency = ms(10) // it waited 10ms for the insert slot
	ps[1].Done(refused)
	ps[0].Done(success(ms(12)))
	s := c.Snapshot()
	if s.Concurrency != 1 || s.Rate != before.Rate {
		t.Fatalf("after a stall at 2 in flight right after growing from 1: %+v, want concurrency 1 and the rate kept at %v", s, before.Rate)
	}

	// A Window after the growth from 1, the same refusal is no longer the
	// growth's: it cuts the rate.
	c, clk = newFake(t, 1000, func(cfg *Config) { cfg.InitialConcurrency = 1 })
	oneSlotWindow(t, c, clk)
	clk.tick(c)
	grown := clk.now
	for clk.now.Before(grown.Add(DefaultWindow)) { // one at a time, as usual
		p := take(t, c, 1)[0]
		clk.advance(ms(2))
		p.Done(success(ms(2)))
	}
	before = c.Snapshot()
	if before.Concurrency != 2 {
		t.Fatalf("setup: %+v, want concurrency 2", before)
	}
	ps = take(t, c, 2)
	clk.advance(ms(12))
	ps[1].Done(refused)
	ps[0].Done(success(ms(12)))
	if s := c.Snapshot(); s.Rate >= before.Rate {
		t.Fatalf("after a stall at 2 in flight a Window after growing from 1: %+v, want the rate cut from %v", s, before.Rate)
	}

	// Long after the growth, with 2 in flight as usual, the same refusal
	// is the rate's: the store took two at a time.
	c, clk = newFake(t, 1000, func(cfg *Config) { cfg.InitialConcurrency = 2; cfg.MaxConcurrency = 2 })
	for range 4 {
		for range 250 {
			ps := take(t, c, 2)
			clk.advance(ms(2))
			doneAll(ps, success(ms(2)))
		}
		clk.tick(c)
	}
	before = c.Snapshot()
	ps = take(t, c, 2)
	clk.advance(ms(12))
	ps[1].Done(refused)
	ps[0].Done(success(ms(12)))
	if s := c.Snapshot(); s.Rate >= before.Rate {
		t.Fatalf("after a stall at the usual 2 in flight: %+v, want the rate cut from %v", s, before.Rate)
	}
}

func TestFailedGrowthHeldOff(t *testing.T) {
	// A store with one slot that refuses a second write whenever the first
	// stalls, and always has a stalled one when there are two: every growth
	// of concurrency to 2 is refused at once. The next growth waits longer
	// after each refusal, so over a minute the store refuses a handful of
	// writes, not one every two seconds.
	c, clk := newFake(t, 1000, func(cfg *Config) { cfg.InitialConcurrency = 1 })
	refused := congested("victoriametrics_insert_limit")
	refused.Latency = ms(10)
	var growths []time.Duration
	start, nextTick := clk.now, clk.now.Add(DefaultWindow)
	for clk.now.Sub(start) < time.Minute {
		if c.Snapshot().Concurrency >= 2 {
			growths = append(growths, clk.now.Sub(start))
			ps := take(t, c, 2)
			clk.advance(ms(12))
			ps[1].Done(refused)
			ps[0].Done(success(ms(12)))
		} else {
			p := take(t, c, 1)[0]
			if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
				t.Fatalf("second TryAcquire at concurrency 1: %v, want ErrNoCapacity", err)
			}
			clk.advance(ms(2))
			p.Done(success(ms(2)))
		}
		if !clk.now.Before(nextTick) {
			clk.tick(c)
			nextTick = clk.now.Add(DefaultWindow)
		}
	}
	if len(growths) < 3 || len(growths) > 7 {
		t.Fatalf("growths to 2 refused at %v: want 3 to 7 in a minute", growths)
	}
	for i := 2; i < len(growths); i++ {
		if gap, prev := growths[i]-growths[i-1], growths[i-1]-growths[i-2]; gap < prev*3/2 {
			t.Errorf("growths to 2 refused at %v: gap %v after %v, want each at least 1.5× the one before", growths, gap, prev)
		}
	}
	if s := c.Snapshot(); s.Rate != 1000 {
		t.Errorf("rate %v, want 1000: the refusals were concurrency's", s.Rate)
	}
}

func TestTakenGrowthEndsTheHold(t *testing.T) {
	// Concurrency reached the refused limit another way (Little's law)
	// during a hold, and the store took it for a Window: the refusals are
	// forgotten and the hold ends with them, so it cannot stop the growth
	// past that limit.
	c, clk := newFake(t, 1000, func(cfg *Config) { cfg.InitialConcurrency = 2 })
	c.mu.Lock()
	c.failedLevel, c.failedGrowth = 2, 3
	c.concHold = clk.now.Add(30 * time.Second)
	c.concGrewFrom, c.concGrewAt = 1, clk.now
	c.mu.Unlock()
	clk.advance(DefaultWindow)
	clk.tick(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failedLevel != 0 || c.failedGrowth != 0 || !c.concHold.IsZero() {
		t.Errorf("after a Window at the refused limit: failed level %d, count %d, hold until %v; want all cleared", c.failedLevel, c.failedGrowth, c.concHold)
	}
}

// eagerSuccesses sends n requests one after the other, each as soon as the
// limits allow (the clock moving 1ms at a time), each succeeding 1ms later.
func eagerSuccesses(t *testing.T, c *Controller, clk *fakeClock, n int) {
	t.Helper()
	for range n {
		for tries := 0; ; tries++ {
			if p, err := c.TryAcquire(1); err == nil {
				clk.advance(ms(1))
				p.Done(success(ms(1)))
				break
			}
			if tries > 1e5 {
				t.Fatalf("no request admitted in %d ms: %+v", tries, c.Snapshot())
			}
			clk.advance(ms(1))
		}
	}
}

// slotRefusal is VictoriaMetrics' insert-limit 503, as the proxy reports it:
// the store says it caps concurrency.
func slotRefusal() Sample {
	s := congested("victoriametrics_insert_limit")
	s.Concurrency = true
	return s
}

func TestConcurrencyCapCountsLaterAttempts(t *testing.T) {
	// A cold store takes one write and refuses the other waiting for its
	// one insert slot. Which of the two it refuses is its choice: here the
	// first one sent, with one in flight when it was granted. A store that
	// says it refused for its slots was refused with both in flight, so,
	// like any refusal of a second write where one was usual (a spike),
	// it cuts concurrency to 1 and leaves the rate and its startup alone.
	// Without Concurrency the refusal counts as sent alone and also scales
	// the rate (TestEarlyThrottleKeepsStartup).
	for _, tc := range []struct {
		name     string
		refusal  Sample
		wantRate float64
	}{
		{"store caps concurrency", slotRefusal(), 50},
		{"no hint", congested("status_503"), 45},
	} {
		c, _ := newFake(t, 50, func(cfg *Config) { cfg.InitialConcurrency = 4; cfg.Burst = 2 })
		ps := take(t, c, 2)
		ps[0].Done(tc.refusal)
		s := c.Snapshot()
		if !approx(s.Rate, tc.wantRate) || s.Concurrency != 1 || s.Phase != PhaseStartup || s.LastMaxRate != 0 {
			t.Errorf("%s: after a refusal of the first of two in flight: %+v, want rate %v, concurrency 1, startup",
				tc.name, s, tc.wantRate)
		}
		ps[1].Done(success(ms(20)))
	}
}

func TestConcurrencyCapShortensStartupRounds(t *testing.T) {
	// Once the store has said it caps concurrency, a startup round of the
	// rate is as many successes as the concurrency limit: at one slot the
	// rate doubles after every success, so a low initial rate no longer
	// idles a store that takes one write at a time. Without the hint it
	// takes startupRound successes.
	for _, tc := range []struct {
		name    string
		refusal Sample
		growth  float64 // of the rate over 5 successes
	}{
		{"store caps concurrency", slotRefusal(), 32},
		{"no hint", congested("status_503"), 1},
	} {
		c, clk := newFake(t, 50, func(cfg *Config) { cfg.InitialConcurrency = 4; cfg.Burst = 2 })
		ps := take(t, c, 2) // two in flight, so that the hint is the slots'
		clk.advance(ms(1))
		ps[1].Done(tc.refusal)
		ps[0].Done(success(ms(1)))
		start := c.Snapshot().Rate
		eagerSuccesses(t, c, clk, 5)
		if s := c.Snapshot(); !approx(s.Rate, start*tc.growth) || s.Phase != PhaseStartup {
			t.Errorf("%s: rate %v, then after 5 successes: %+v, want rate %v in startup", tc.name, start, s, start*tc.growth)
		}
	}
}

func TestConcurrencyCapRoundsFollowTheSlots(t *testing.T) {
	// At a store that caps concurrency, a startup round of the rate is as
	// many successes as the concurrency limit when that is fewer than
	// startupRound: at 6 slots, 12 successes double the rate twice (once
	// without the hint, in one round of startupRound). Three long writes
	// stay in flight throughout, so that the loader uses the slots and
	// they are not trimmed to its use.
	for _, tc := range []struct {
		name    string
		refusal Sample
		growth  float64 // of the rate over 12 successes
	}{
		{"store caps concurrency", slotRefusal(), 4},
		{"no hint", congested("status_503"), 2},
	} {
		c, clk := newFake(t, 50, func(cfg *Config) { cfg.InitialConcurrency = 6; cfg.Burst = 4 })
		held := take(t, c, 3)
		p := take(t, c, 1)[0]
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) { // the rate binds
			t.Fatalf("%s: a fifth request got through a bucket of four: %v", tc.name, err)
		}
		clk.advance(ms(1))
		p.Done(tc.refusal) // below the slots, with the rate binding: a cut of the rate only
		start := c.Snapshot()
		if start.Concurrency != 6 || start.CapsConcurrency != tc.refusal.Concurrency {
			t.Fatalf("%s: after the refusal: %+v, want 6 slots kept", tc.name, start)
		}
		eagerSuccesses(t, c, clk, 12) // beside the three held
		if s := c.Snapshot(); !approx(s.Rate, start.Rate*tc.growth) || s.Phase != PhaseStartup || s.Concurrency != 6 {
			t.Errorf("%s: rate %v, then after 12 successes: %+v, want rate %v in startup at 6 slots", tc.name, start.Rate, s, start.Rate*tc.growth)
		}
		doneAll(held, success(ms(100)))
	}
}

func TestBurstRefusalsNarrowTheSlotCap(t *testing.T) {
	// A store of 16 slots has taken 14 at a time. Concurrency grows to 20,
	// and the burst of six more reaches the store in no particular order:
	// here the attempt sent with 20 in flight is refused first and cuts to
	// the 14 the store took, and those sent with 19, 18 and 17 are refused
	// after it. At a store taken to cap concurrency (concMode) their
	// refusals say its slots are fewer than 17, so the curve climbs back
	// toward 17, not 20, and its first step of a Window stays below 17. At
	// a rate-limited store the counts say nothing of slots and the
	// throttle point stays at 20.
	for _, tc := range []struct {
		name     string
		capsConc bool
		wantMax  float64
	}{
		{"store caps concurrency", true, 17},
		{"rate-limited store", false, 20},
	} {
		c, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 14 })
		end := clk.now.Add(DefaultWindow)
		for clk.now.Before(end) { // 14 in flight, as usual (no spike below 22)
			ps := take(t, c, 14)
			clk.advance(ms(20))
			doneAll(ps, success(ms(20)))
		}
		clk.tick(c)
		c.mu.Lock()
		if tc.capsConc {
			c.concScore = 1 // earlier throttles came at counts the store had not taken
		}
		c.conc.v = 20 // as a growth step does
		c.mu.Unlock()
		ps := take(t, c, 20)
		clk.advance(ms(1))
		for i := 19; i >= 16; i-- {
			ps[i].Done(congested("status_429"))
		}
		clk.advance(ms(19))
		doneAll(ps[:16], success(ms(20)))
		c.mu.Lock()
		lastMax, limit := c.conc.lastMax, c.concLimit()
		c.conc.grow(DefaultWindow)
		next := c.concLimit()
		c.mu.Unlock()
		if lastMax != tc.wantMax || limit != 14 {
			t.Errorf("%s: after the burst's refusals: concurrency %d, throttle point %v; want 14 and %v", tc.name, limit, lastMax, tc.wantMax)
		}
		if tc.capsConc && next >= 17 {
			t.Errorf("%s: a Window's growth from 14 went to %d, want below 17", tc.name, next)
		}
	}
}

func TestCutAgainWhenCapacityFell(t *testing.T) {
	// A store at 200/s halves its capacity. The first throttle cuts the
	// rate to 0.9 of what it took over the last Window (180/s, still
	// twice the new capacity); of what is sent after that, the store
	// takes 100/s and refuses the rest. Within the Window the rate is cut
	// again, to just below what the store took since the first cut, not
	// half a second later from a goodput that still holds the old
	// capacity.
	c, clk := pastStartup(t)
	before := c.Snapshot()
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	first := c.Snapshot()
	if first.Decreases != before.Decreases+1 {
		t.Fatalf("first throttle after the fall: %+v, want a cut", first)
	}
	// Sent at 167/s after the cut, every other attempt is refused: the
	// store takes 83/s, and half of what the first cut left.
	var s Snapshot
	for i := 0; ; i++ {
		clk.advance(ms(6))
		p := take(t, c, 1)[0]
		if i%2 == 0 {
			p.Done(success(ms(1)))
		} else {
			p.Done(congested("s3_slowdown"))
		}
		if s = c.Snapshot(); s.Decreases > first.Decreases || i == 40 {
			break
		}
	}
	if s.Decreases != first.Decreases+1 || !clk.now.Before(first.LastThrottle.Add(DefaultWindow)) {
		t.Fatalf("half of what was sent after the cut refused: %+v, want a second cut within the Window", s)
	}
	if s.LastMaxRate < 70 || s.LastMaxRate > 95 || !approx(s.Rate, s.LastMaxRate*(1+decreaseFactor)/2) {
		t.Errorf("second cut: rate %v, throttle point %v; want the point at what the store took since the first cut (83/s, or a little more: the first answers came from before the fall) and the rate 0.95 of it", s.Rate, s.LastMaxRate)
	}

	// Refusals only, nothing taken since the cut: one sidecar of many
	// that met the store's bucket dry four times has measured its luck.
	// The re-cut halves the rate at most.
	c, clk = pastStartup(t)
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	first = c.Snapshot()
	for i := 0; ; i++ {
		clk.advance(ms(10))
		take(t, c, 1)[0].Done(congested("s3_slowdown"))
		if s = c.Snapshot(); s.Decreases > first.Decreases || i == 20 {
			break
		}
	}
	if s.Decreases != first.Decreases+1 || s.LastMaxRate < first.Rate/2*0.99 {
		t.Errorf("refusals only after the cut from %v: %+v, want a re-cut to half of it at most", first.Rate, s)
	}

	// What the store took over a short span after a cut is bounded by
	// our slots too (and by a latency a burst drove up): here 25/s, an
	// eighth of the rate, then four refusals. A re-cut halves the rate at
	// most; the next, a round trip after it, goes further.
	c, clk = pastStartup(t)
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	first = c.Snapshot()
	cuts := []Snapshot{first}
	for i := 0; i < 200 && len(cuts) < 3; i++ {
		ok := i < 10 || i%3 == 0
		gap := time.Duration(float64(time.Second)/c.Snapshot().Rate) + ms(1) // as fast as the rate lets it
		if ok {
			gap = max(gap, ms(40))
		}
		clk.advance(gap)
		p := take(t, c, 1)[0]
		if ok {
			p.Done(success(ms(1)))
		} else {
			p.Done(congested("s3_slowdown"))
		}
		if s = c.Snapshot(); s.Decreases > cuts[len(cuts)-1].Decreases {
			cuts = append(cuts, s)
		}
	}
	if len(cuts) < 3 {
		t.Fatalf("25/s taken after the cut from %v, then refusals: %d more cuts, want 2", first.Rate, len(cuts)-1)
	}
	if got := cuts[1].LastMaxRate; got < first.Rate/2*0.99 || got > first.Rate/2*1.01 {
		t.Errorf("25/s taken after the cut from %v, then refusals: re-cut to a throttle point of %v, want half the rate", first.Rate, got)
	}
	if cuts[2].Rate >= cuts[1].Rate {
		t.Errorf("the refusals go on after the re-cut to %v: next cut to %v, want lower", cuts[1].Rate, cuts[2].Rate)
	}

	// On a shared store, a few throttles among many accepted after a cut
	// are whoever was unlucky, not a fall: no second cut.
	c, clk = pastStartup(t)
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	first = c.Snapshot()
	for i := range 40 {
		clk.advance(ms(10))
		p := take(t, c, 1)[0]
		if i%8 == 7 { // 5 of 40 refused
			p.Done(congested("s3_slowdown"))
		} else {
			p.Done(success(ms(1)))
		}
	}
	if s := c.Snapshot(); s.Decreases != first.Decreases {
		t.Fatalf("5 of 40 sent after the cut refused: %+v, want no second cut", s)
	}
}

// pastStartup returns a controller at 200/s whose startup a throttle
// ended, and whose rate has since climbed back along its curve.
func pastStartup(t *testing.T) (*Controller, *fakeClock) {
	t.Helper()
	c, clk := newFake(t, 200, func(cfg *Config) { cfg.Burst = 1 })
	blockedWindow(t, c, clk, ms(1))
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	if s := c.Snapshot(); s.Phase == PhaseStartup {
		t.Fatalf("a throttle after a full window: %+v, want startup ended", s)
	}
	for range 4 {
		blockedWindow(t, c, clk, ms(1))
	}
	return c, clk
}

func TestGrowthFloorHoldsForOneCut(t *testing.T) {
	// A cut soon after a growth of the rate does not go below what the
	// store took before the growth. Once such a cut did not stop the
	// throttles, the store no longer takes that (its capacity fell): the
	// next cut goes from the goodput.
	c, clk := pastStartup(t)
	pre := c.Snapshot()
	blockedWindow(t, c, clk, ms(1)) // the rate grows at the Tick
	grown := c.Snapshot()
	if grown.Rate <= pre.Rate {
		t.Fatalf("a blocked clean window: rate %v, want growth from %v", grown.Rate, pre.Rate)
	}
	clk.advance(ms(5))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	first := c.Snapshot()
	if first.Decreases != grown.Decreases+1 || first.LastMaxRate < 0.95*pre.Rate {
		t.Fatalf("throttle right after a growth from %v: %+v, want a cut from what the store took before it", pre.Rate, first)
	}
	// The store now takes 50/s, and refuses the next write a Window
	// after the cut, within two Windows of the growth.
	for range 26 {
		clk.advance(ms(20))
		take(t, c, 1)[0].Done(success(ms(1)))
	}
	clk.advance(ms(20))
	take(t, c, 1)[0].Done(congested("s3_slowdown"))
	s := c.Snapshot()
	if s.Decreases != first.Decreases+1 || s.LastMaxRate > 60 {
		t.Fatalf("second throttle, the store taking 50/s: %+v, want a cut from that goodput (first cut to %v)", s, first.Rate)
	}
}

func TestQuietRetryAfterNotMeasured(t *testing.T) {
	// A quota answers 429 with Retry-After: 2 s, and the loader's writes
	// all wait it out (a proxy honours it per write): for two seconds
	// nothing is asked for. The next throttle cuts the rate from what the
	// store took while it was asked, not from that over the wait, which
	// had put it at a tenth of the rate here, and a real nginx quota of
	// 40/s at 15/s.
	for _, ra := range []time.Duration{2 * time.Second, 0} {
		c, clk := pastStartup(t)
		before := c.Snapshot()
		clk.advance(ms(5))
		sample := congested("status_503")
		if ra > 0 {
			sample = congestedRA(ra)
		}
		take(t, c, 1)[0].Done(sample)
		for range 20 { // nothing asked for, the loader waits
			clk.advance(ms(100))
			clk.tick(c)
		}
		// Sent at 100/s once more: 10 taken, then a throttle.
		for range 10 {
			clk.advance(ms(10))
			take(t, c, 1)[0].Done(success(ms(1)))
		}
		clk.advance(ms(10))
		first := c.Snapshot()
		take(t, c, 1)[0].Done(sample)
		s := c.Snapshot()
		if s.Decreases != first.Decreases+1 {
			t.Fatalf("Retry-After %v: a throttle after the wait: %+v, want a cut", ra, s)
		}
		if ra > 0 && s.LastMaxRate < 0.5*first.Rate {
			t.Errorf("Retry-After %v: cut from %v to a throttle point of %v: want it from what the store took while asked (%v/s before the wait, 100/s after), not over the wait", ra, first.Rate, s.LastMaxRate, before.Rate)
		}
		if ra == 0 && s.LastMaxRate > 0.5*first.Rate {
			// Without a Retry-After the loader chose to ask for little,
			// and the store throttled that: the cut goes below it.
			t.Errorf("no Retry-After: cut from %v to a throttle point of %v: want it from the goodput over the last Window, idle time included", first.Rate, s.LastMaxRate)
		}
	}
}

func TestLatencyFindingShared(t *testing.T) {
	// Two limiters of one store. b sees latency rise tenfold and cuts its
	// slots on it, a test of whether it is a queue of its own; a finds
	// first that the store's latency is its response to load. At its
	// next Tick b takes that as found: its cut is undone, and latency no
	// longer counts as congestion for it.
	shared := new(LatencyFinding)
	b, clk := newFake(t, 1e5, func(cfg *Config) { cfg.InitialConcurrency = 8; cfg.Latency = shared })
	lat := ms(10)
	store := func(int) time.Duration { return lat }
	for range 3 {
		littleWindow(t, b, clk, store)
	}
	lat = ms(100)
	var before Snapshot
	for i := 0; ; i++ {
		before = b.Snapshot()
		littleWindow(t, b, clk, store)
		if b.Snapshot().Decreases > before.Decreases {
			break
		}
		if i == 5 {
			t.Fatalf("no latency cut after 6 slow windows: %+v", b.Snapshot())
		}
	}
	cut := b.Snapshot()
	if !cut.LatencyElevated || cut.Concurrency >= before.Concurrency {
		t.Fatalf("latency cut: %+v, want elevated and fewer slots than %d", cut, before.Concurrency)
	}

	a, _ := newFake(t, 1e5, func(cfg *Config) { cfg.Latency = shared; cfg.Now = clk.Now })
	a.mu.Lock()
	a.adoptLatencyLocked("test", 1, 0.5, 8, 4, clk.now)
	a.mu.Unlock()
	clk.advance(ms(10))
	clk.tick(b)
	s := b.Snapshot()
	if s.LatencyElevated || s.Concurrency < before.Concurrency {
		t.Fatalf("after a found the latency to be load: %+v, want b's cut undone (%d slots) and latency not elevated", s, before.Concurrency)
	}
}

func TestStaleThrottlePoint(t *testing.T) {
	// The throttle point is stale only at a store whose latency follows
	// its load, loaded when it throttled, that now answers a load close
	// to the old point almost at its idle latency.
	win := func(lat time.Duration, n int64, accepted float64) window {
		l := math.Log(lat.Seconds())
		return window{accepted: accepted, logSum: float64(n) * l, latN: n, lateLogSum: float64(n/2) * l, lateN: n / 2}
	}
	for _, tc := range []struct {
		name   string
		load   bool
		cutLat time.Duration
		w      window
		want   bool
	}{
		{"capacity grew", true, ms(50), win(ms(8), 100, 100), true},
		{"latency of a queue of ours, maybe", false, ms(50), win(ms(8), 100, 100), false},
		{"throttled at its idle latency (a quota)", true, ms(12), win(ms(8), 100, 100), false},
		{"still loaded", true, ms(50), win(ms(25), 100, 100), false},
		{"far below the old point", true, ms(50), win(ms(8), 100, 60), false},
		{"too few answers", true, ms(50), win(ms(8), minSamples-1, 100), false},
	} {
		c, _ := newFake(t, 1e5, nil)
		c.mu.Lock()
		c.latLoad, c.latFloor, c.cutLat = tc.load, ms(5), tc.cutLat
		c.rate.cutTo(100, 90)
		got := c.staleThrottlePointLocked(tc.w, time.Second)
		c.mu.Unlock()
		if got != tc.want {
			t.Errorf("%s: stale = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The second half of a window decides when it has enough answers: the
	// store's capacity grew within the window.
	c, _ := newFake(t, 1e5, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latLoad, c.latFloor, c.cutLat = true, ms(5), ms(50)
	c.rate.cutTo(100, 90)
	w := win(ms(50), 100, 100)
	w.lateLogSum, w.lateN = 40*math.Log(ms(8).Seconds()), 40
	if !c.staleThrottlePointLocked(w, time.Second) {
		t.Errorf("slow first half, fast second half: not stale, want stale")
	}
}

// learned returns a limiter past startup, its rate at rate below a
// throttle point at point, with conc slots (at most maxConc), that has
// learned the store's latency to be lat, and that latency to be its
// response to load if load.
func learned(t *testing.T, point, rate float64, conc, maxConc int, lat time.Duration, load bool) (*Controller, *fakeClock) {
	t.Helper()
	c, clk := newFake(t, rate, func(cfg *Config) { cfg.InitialConcurrency = conc; cfg.MaxConcurrency = maxConc })
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latBase, c.latRecent, c.latMean, c.latFloor, c.latLoad = lat, lat, lat, lat, load
	c.rate.cutTo(point, rate)
	return c, clk
}

func TestCutFromGoodputOurSlotsBounded(t *testing.T) {
	// Past startup at 720/s with 4 slots, at 40ms a write: the slots
	// carry 100/s and the rate holds nothing back. Where latency is known
	// to be the store's response to load, the slots are no limit of the
	// store's and 100/s is only what they carried: a throttle halves the
	// rate at most. Where it may be a queue of ours, the slots may be the
	// store's limit too, and the cut goes from what they carried.
	for _, load := range []bool{true, false} {
		c, clk := learned(t, 800, 720, 4, 4, ms(40), load)
		for range 3 {
			littleWindow(t, c, clk, func(int) time.Duration { return ms(40) })
		}
		before := c.Snapshot()
		clk.advance(ms(5))
		take(t, c, 1)[0].Done(congested("s3_slowdown"))
		s := c.Snapshot()
		if s.Decreases != before.Decreases+1 {
			t.Fatalf("load %v: a throttle after slot-bound windows: %+v, want a cut", load, s)
		}
		if load && (s.LastMaxRate < 359 || s.LastMaxRate > 361) {
			t.Errorf("latency is load: cut from 720/s to a throttle point of %v, want half the rate (360)", s.LastMaxRate)
		}
		if !load && (s.LastMaxRate < 90 || s.LastMaxRate > 110) {
			t.Errorf("latency may be ours: cut from 720/s to a throttle point of %v, want what the slots carried (100)", s.LastMaxRate)
		}
	}
}

func TestSlotCutKeepsWhatTheCutRateNeeds(t *testing.T) {
	// Past startup at 400/s, 100ms a write, with the slots the bottleneck:
	// they grow, and a throttle comes at an in-flight count the store has
	// not taken before. Where latency may be a queue of ours, the store
	// may cap concurrency: the slots go straight back to the count it
	// took. Where latency is known to be the store's response to load,
	// the rate's cut relieves it, and the slots keep what the new rate
	// needs (Little's law): cut to the few the store was seen to take,
	// they would bind the goodput that the next cut goes from.
	for _, load := range []bool{true, false} {
		c, clk := learned(t, 400, 400, 5, 64, ms(100), load)
		lat := func(int) time.Duration { return ms(100) }
		littleWindow(t, c, clk, lat)
		before := c.Snapshot()
		if before.Concurrency <= 5 {
			t.Fatalf("load %v: slots the bottleneck for a window: %+v, want them grown", load, before)
		}
		ps := take(t, c, before.Concurrency)
		clk.advance(ms(5))
		ps[len(ps)-1].Done(congested("s3_slowdown"))
		s := c.Snapshot()
		doneAll(ps[:len(ps)-1], success(ms(100)))
		if s.Decreases != before.Decreases+1 || s.Rate >= before.Rate {
			t.Fatalf("load %v: a throttle at %d in flight: %+v, want the rate cut", load, before.Concurrency, s)
		}
		need := int(math.Ceil(s.Rate * 0.1))
		if load && s.Concurrency < min(need, before.Concurrency) {
			t.Errorf("latency is load: slots %d → %d after the rate's cut to %.0f/s, want at least the %d it needs", before.Concurrency, s.Concurrency, s.Rate, min(need, before.Concurrency))
		}
		if !load && s.Concurrency != 5 {
			t.Errorf("latency may be ours: slots %d → %d, want the 5 the store took", before.Concurrency, s.Concurrency)
		}
	}
}

// greedy runs a loader that sends as much as c lets it, in 1ms steps for
// steps milliseconds of clk, against a store that takes every write and
// answers in lat; after each step it calls each, if set, with the
// step's index. It returns the writes answered.
func greedy(c *Controller, clk *fakeClock, steps int, lat time.Duration, each func(step int)) (answered int) {
	type flight struct {
		p   *Permit
		due time.Time
	}
	var inFlight []flight
	for step := range steps {
		for {
			p, err := c.TryAcquire(1)
			if err != nil {
				break
			}
			inFlight = append(inFlight, flight{p, clk.now.Add(lat)})
		}
		clk.advance(ms(1))
		rest := inFlight[:0]
		for _, f := range inFlight {
			if clk.now.Before(f.due) {
				rest = append(rest, f)
				continue
			}
			f.p.Done(success(lat))
			answered++
		}
		inFlight = rest
		if each != nil {
			each(step)
		}
	}
	return answered
}

func TestStartupKeepsTheSlotsTheDoubledRateNeeds(t *testing.T) {
	// A greedy loader behind a rate in startup, 50/s at first, against a
	// store that answers in 10ms: half a slot in use. When a round doubles
	// the rate, unused slots are trimmed, but to what the doubled rate
	// will use, not to what the old one did: one slot would carry 100/s
	// and hold every later doubling to it until the slots grew again, a
	// window at a time.
	c, clk := newFake(t, 50, func(cfg *Config) { cfg.Burst = 1; cfg.InitialConcurrency = 4; cfg.MaxConcurrency = 64 })
	taken := greedy(c, clk, 450, ms(10), nil) // short of the first window's end
	// Trimmed to what each old rate used, the slots hold the rate at
	// 400/s and the writes at 58 (2 slots); the window's growth of the
	// slots comes later.
	s := c.Snapshot()
	if s.Rate < 800 || taken < 70 {
		t.Errorf("450ms of startup at 10ms a write: rate %v, %d writes taken, concurrency %d; want the rate doubled to 800/s and 70 writes", s.Rate, taken, s.Concurrency)
	}
}

func TestStaleThrottlePointPassedWithinTheWindow(t *testing.T) {
	// The rate throttled at 100/s while the store answered in 50ms, ten
	// times its idle latency; it now sends 90/s and the store answers in
	// 6ms: its capacity grew. The rate doubles once 8 writes sent at it
	// have come back, not at the end of the window, and once only in
	// the window. Answered at 25ms, five times the idle latency, the
	// store is still loaded, and the rate waits for the window.
	for _, lat := range []time.Duration{ms(6), ms(25)} {
		c, clk := newFake(t, 90, func(cfg *Config) { cfg.Burst = 1; cfg.InitialConcurrency = 64; cfg.MaxConcurrency = 64 })
		c.mu.Lock()
		c.latBase, c.latRecent, c.latMean, c.latFloor, c.latLoad, c.cutLat = lat, lat, lat, ms(5), true, ms(50)
		c.rate.cutTo(100, 90)
		c.mu.Unlock()
		var doubledAt time.Duration
		most := 0.0
		greedy(c, clk, 400, lat, func(step int) { // short of the window's end
			r := c.Snapshot().Rate
			if r > 90 && doubledAt == 0 {
				doubledAt = time.Duration(step+1) * time.Millisecond
			}
			most = max(most, r)
		})
		switch {
		case lat == ms(6) && (doubledAt == 0 || doubledAt > ms(150) || most != 180):
			t.Errorf("answers at 6ms after a throttle at 50ms: rate doubled after %v, at most %v/s in the window; want 180/s within 150ms, and no more", doubledAt, most)
		case lat == ms(25) && most != 90:
			t.Errorf("answers at 25ms (idle 5ms): rate %v/s within the window, want 90/s until its end", most)
		}
	}
}

// A permit given back unused (one of a write's scopes, let go while the
// write waits for another) gives back its rate units too, and does not
// count as sent: Done would spend them, and a write that takes and lets
// go of a scope's permit again and again would use up the scope's rate
// on nothing, and make its growth take that for demand held back.
func TestPermitUnusedGivesBackItsRate(t *testing.T) {
	c, _ := newFake(t, 1, func(cfg *Config) { cfg.Burst = 1 })
	used := take(t, c, 1)[0]
	used.Unused()
	again := take(t, c, 1)[0] // the unit came back
	if c.win.granted != 1 || c.win.grants != 1 || c.roundSent != 1 {
		t.Errorf("window granted %v in %d grants, round sent %v; want the one permit still out", c.win.granted, c.win.grants, c.roundSent)
	}
	again.Done(Sample{Outcome: Neutral})
	if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
		t.Errorf("after Done: %v, want ErrNoCapacity (Done spends the unit)", err)
	}
	if s := c.Snapshot(); s.InFlight != 0 || s.Samples[Neutral] != 1 {
		t.Errorf("in flight %d, %d neutral samples; want 0, and only Done's", s.InFlight, s.Samples[Neutral])
	}
	again.Unused() // after Done: nothing
	if s := c.Snapshot(); s.InFlight != 0 {
		t.Errorf("in flight %d after Unused of a permit done, want 0", s.InFlight)
	}
}

// A permit granted after the timer of Tick fired but before Tick ran is
// counted in the window that Tick closes: given back after it, it must
// not be taken out of the next window as well. (The sidecar's loop ticks
// with the timer's time.) Taken out twice, the next window's grant count
// wrapped around below zero, and an idle window, which must say nothing
// of what the loader needs, trimmed the slots to one.
func TestUnusedAcrossALateTick(t *testing.T) {
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.InitialConcurrency = 8; cfg.MaxConcurrency = 64 })
	fired := clk.now.Add(DefaultWindow - ms(10))
	held := take(t, c, 4) // the loader keeps 4 in flight: 8 slots are not too many
	clk.advance(DefaultWindow)
	late := take(t, c, 1)[0]
	c.Tick(fired)
	late.Unused()
	doneAll(held, success(0))
	if c.win.grants != 0 || c.win.granted != 0 {
		t.Errorf("window after the Tick: %v units in %d grants, want none (the permit was the last window's)", c.win.granted, c.win.grants)
	}
	c.Tick(fired.Add(DefaultWindow)) // nothing granted in it
	if s := c.Snapshot(); s.Concurrency != 8 {
		t.Errorf("concurrency %d after a window with no grant, want 8 as it was", s.Concurrency)
	}
}
