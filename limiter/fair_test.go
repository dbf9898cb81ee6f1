package limiter

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// serve pops n heads off q and returns the units each flow key got.
func serve(q *fairQueue, n int) map[string]float64 {
	got := map[string]float64{}
	for range n {
		w := q.head
		if w == nil {
			break
		}
		got[w.flow.key] += w.cost
		q.pop(w)
	}
	return got
}

func fill(q *fairQueue, f Flow, n int, cost float64) {
	for range n {
		q.push(&waiter{cost: cost}, f)
	}
}

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.3f, want %.3f ± %.3f", what, got, want, tol)
	}
}

func TestFairQueueWeights(t *testing.T) {
	f := func(name string, wa, wb float64, costA, costB float64, wantA float64) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			q := &fairQueue{floor: DefaultBulkFloor}
			fill(q, Flow{Key: "a", Weight: wa}, 400, costA)
			fill(q, Flow{Key: "b", Weight: wb}, 400, costB)
			got := serve(q, 200)
			near(t, "a's share", got["a"]/(got["a"]+got["b"]), wantA, 0.02)
		})
	}
	f("equal", 1, 1, 1, 1, 0.5)
	f("3:1", 3, 1, 1, 1, 0.75)
	f("1:3", 1, 3, 1, 1, 0.25)
	f("zero weight is 1", 0, 1, 1, 1, 0.5)
	// Fair in units, not in writes: b's writes are 4 times the size.
	f("costs 1:4", 1, 1, 1, 4, 0.5)
}

// A flow that arrives asks for less than its share: it is served at
// once, not behind the backlog of the one that was there first.
func TestFairQueueNewcomerNotBehindBacklog(t *testing.T) {
	q := &fairQueue{}
	fill(q, Flow{Key: "greedy"}, 64, 1)
	serve(q, 10)
	w := &waiter{cost: 1}
	q.push(w, Flow{Key: "small"})
	served := 0
	for q.head != w {
		q.pop(q.head)
		served++
	}
	if served > 1 {
		t.Errorf("the small flow's write waited behind %d of the greedy one's, want at most 1", served)
	}
}

// An idle flow banks no credit: after b was served alone, a's arrival
// does not get it a run of grants; the two alternate at once.
func TestFairQueueIdleBanksNothing(t *testing.T) {
	q := &fairQueue{}
	fill(q, Flow{Key: "b"}, 200, 1)
	serve(q, 100) // a is idle meanwhile
	fill(q, Flow{Key: "a"}, 100, 1)
	got := serve(q, 20)
	if got["a"] > 11 || got["b"] < 9 {
		t.Errorf("after a's idle stretch, 20 grants went a:%v b:%v, want about 10 each", got["a"], got["b"])
	}
}

// One flow alone is a FIFO, in the order of arrival.
func TestFairQueueOneFlowIsFIFO(t *testing.T) {
	q := &fairQueue{}
	var ws []*waiter
	for i := range 10 {
		w := &waiter{cost: float64(i%3 + 1)}
		ws = append(ws, w)
		q.push(w, Flow{})
	}
	q.remove(ws[4]) // a caller gave up
	for i, w := range ws {
		if i == 4 {
			continue
		}
		if q.head != w {
			t.Fatalf("head is not waiter %d", i)
		}
		q.pop(w)
	}
	if q.n != 0 || q.cost != 0 || len(q.flows) != 0 {
		t.Errorf("drained queue holds n=%d cost=%v flows=%d", q.n, q.cost, len(q.flows))
	}
}

func TestFairQueueLiveFirstBulkFloor(t *testing.T) {
	f := func(floor float64) {
		t.Helper()
		q := &fairQueue{floor: floor}
		fill(q, Flow{Key: "live", Class: Live}, 2000, 1)
		fill(q, Flow{Key: "bulk", Class: Bulk}, 2000, 1)
		got := serve(q, 1000)
		near(t, "bulk's share", got["bulk"]/1000, floor, 0.01)
	}
	f(0.1)
	f(0.25)
	// Without live waiters bulk takes everything, and banks no credit
	// for later: live goes first again at once, until its grants earn
	// bulk the floor's share (one in ten).
	q := &fairQueue{floor: 0.1}
	fill(q, Flow{Key: "bulk"}, 100, 1)
	serve(q, 50)
	fill(q, Flow{Key: "live", Class: Live}, 20, 1)
	if got := serve(q, 9); got["live"] != 9 {
		t.Errorf("live got %v of the first 9 grants after it arrived, want 9", got["live"])
	}
	if got := serve(q, 1); got["bulk"] != 1 {
		t.Errorf("the 10th grant went to %v, want bulk's floor", got)
	}
}

// A full queue pushes back the flow with the most waiters of the lowest
// class, not a newcomer with fewer.
func TestQueueFullPushesBackTheGreedyFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1000, MaxConcurrency: 1, InitialConcurrency: 1, QueueMax: 4})
		hold, err := c.Acquire(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		type res struct {
			key string
			err error
		}
		out := make(chan res, 16)
		acq := func(f Flow) {
			go func() {
				p, err := c.AcquireFlow(t.Context(), f, 1)
				if err == nil {
					p.Done(success(ms(1)))
				}
				out <- res{f.Key, err}
			}()
			synctest.Wait()
		}
		for range 4 {
			acq(Flow{Key: "greedy"})
		}
		acq(Flow{Key: "small"}) // takes the place of greedy's last
		r := <-out
		if r.key != "greedy" || !errors.Is(r.err, ErrQueueFull) {
			t.Fatalf("pushed out: %+v, want greedy's write with ErrQueueFull", r)
		}
		acq(Flow{Key: "small"}) // 3 greedy, 1 small: one more small is fair
		if r := <-out; r.key != "greedy" {
			t.Fatalf("pushed out: %+v, want greedy", r)
		}
		// 2 and 2: the newcomer is the one refused.
		if _, err := c.AcquireFlow(t.Context(), Flow{Key: "small"}, 1); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("AcquireFlow in a queue shared 2:2 = %v, want ErrQueueFull", err)
		}
		// A live write pushes out a bulk one whatever the counts.
		acq(Flow{Key: "live", Class: Live})
		if r := <-out; !errors.Is(r.err, ErrQueueFull) {
			t.Fatalf("pushed out: %+v, want a bulk write", r)
		}
		hold.Done(success(ms(1)))
		for range 4 {
			if r := <-out; r.err != nil {
				t.Errorf("%s: %v", r.key, r.err)
			}
		}
	})
}

func TestAcquireFlowChecks(t *testing.T) {
	c := newReal(t, Config{InitialRate: 10})
	for _, f := range []Flow{{Weight: -1}, {Weight: math.NaN()}, {Weight: math.Inf(1)}, {Class: 7}} {
		if _, err := c.AcquireFlow(t.Context(), f, 1); err == nil {
			t.Errorf("AcquireFlow(%+v) = nil error", f)
		}
		if _, err := c.TryAcquireFlow(f, 1); err == nil {
			t.Errorf("TryAcquireFlow(%+v) = nil error", f)
		}
	}
	for _, s := range []string{"", "Live", "urgent"} {
		if _, err := ParseClass(s); err == nil {
			t.Errorf("ParseClass(%q) = nil error", s)
		}
	}
	if _, err := New(Config{InitialRate: 1, MinRate: 1, MaxRate: 1, MaxConcurrency: 1, BulkFloor: 0.95}); err == nil {
		t.Error("New with BulkFloor 0.95 = nil error")
	}
}

// fairJob is a job of closed-loop writers: each acquires, holds its permit
// for latency (the store's answer), reports success and starts again.
type fairJob struct {
	flow    Flow
	writers int
	latency time.Duration
	// every > 0 makes it open-loop: one write per writer every so often,
	// whatever the previous one became (a live stream).
	every time.Duration
}

type jobsResult struct {
	units map[string]float64   // granted in the measured span
	waits map[string][]float64 // queue waits in the measured span, seconds
}

// runJobs runs jobs on c for warmup+span and counts what each got in span;
// at is called at the span's start and at the given offsets into it.
func runJobs(t *testing.T, c *Controller, jobs []fairJob, warmup, span time.Duration, events map[time.Duration]func()) jobsResult {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+span)
	var mu sync.Mutex
	res := jobsResult{units: map[string]float64{}, waits: map[string][]float64{}}
	var wg sync.WaitGroup
	write := func(j fairJob) {
		t0 := time.Now()
		p, err := c.AcquireFlow(ctx, j.flow, 1)
		if err != nil {
			return
		}
		if now := time.Now(); !now.Before(measureFrom) && now.Before(end) {
			mu.Lock()
			res.units[j.flow.Key] += 1
			res.waits[j.flow.Key] = append(res.waits[j.flow.Key], now.Sub(t0).Seconds())
			mu.Unlock()
		}
		time.Sleep(j.latency)
		p.Done(success(j.latency))
	}
	for _, j := range jobs {
		for i := range j.writers {
			wg.Go(func() {
				if j.every > 0 {
					time.Sleep(j.every * time.Duration(i) / time.Duration(j.writers))
					tk := time.NewTicker(j.every)
					defer tk.Stop()
					for {
						// In wg too: a write still in its store's
						// latency when the run ends must finish before
						// the bubble does.
						wg.Go(func() { write(j) })
						select {
						case <-ctx.Done():
							return
						case <-tk.C:
						}
					}
				}
				for ctx.Err() == nil {
					write(j)
				}
			})
		}
	}
	for _, d := range slices.Sorted(func(yield func(time.Duration) bool) {
		for d := range events {
			if !yield(d) {
				return
			}
		}
	}) {
		time.Sleep(time.Until(measureFrom.Add(d)))
		events[d]()
	}
	time.Sleep(time.Until(end))
	cancel()
	wg.Wait()
	synctest.Wait()
	return res
}

func p99(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	return s[int(math.Ceil(0.99*float64(len(s))))-1]
}

// Scenario (b): a greedy job (64 writers) and a small one (2 writers) on a
// store whose capacity, 8 writes at once, the limiter holds. Equal
// weights: the small one gets what it asks for, up to half; weights 3:1
// split the capacity 75/25.
func TestFairJobsGreedyAndSmall(t *testing.T) {
	f := func(name string, slots int, small, greedy Flow, smallWriters int, wantSmall float64) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newReal(t, Config{InitialRate: 1e6, MaxRate: 1e6, InitialConcurrency: slots, MaxConcurrency: slots})
				res := runJobs(t, c, []fairJob{
					{flow: greedy, writers: 64, latency: ms(10)},
					{flow: small, writers: smallWriters, latency: ms(10)},
				}, time.Second, 20*time.Second, nil)
				total := res.units[greedy.Key] + res.units[small.Key]
				near(t, "small job's share", res.units[small.Key]/total, wantSmall, 0.05)
				near(t, "goodput, writes/s", total/20, float64(slots)/0.010, float64(slots)/0.010*0.02)
			})
		})
	}
	// 2 of 8 slots: its demand is a quarter, under half.
	f("equal weights, demand under half", 8, Flow{Key: "small"}, Flow{Key: "greedy"}, 2, 0.25)
	// 2 writers where 3 slots are shared: half is 1.5 slots.
	f("equal weights, demand over half", 3, Flow{Key: "small"}, Flow{Key: "greedy"}, 2, 0.5)
	f("weights 3:1", 8, Flow{Key: "small", Weight: 1}, Flow{Key: "greedy", Weight: 3}, 64, 0.25)
}

// Scenario (c): a live stream and a bulk backfill on a store whose
// capacity halves (the rate ceiling, as fleet mode or a cut would set).
// Live keeps its goodput while it stays under capacity, its queue wait
// stays within a grant interval, and bulk keeps at least its floor.
func TestFairClassesCapacityHalves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const capacity = 1000.0 // writes/s
		c := newReal(t, Config{InitialRate: 1e6, MaxRate: 1e6, Burst: 1, InitialConcurrency: 200, MaxConcurrency: 200})
		if err := c.SetCeiling(capacity, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		live := fairJob{flow: Flow{Key: "live", Class: Live}, writers: 4, latency: ms(20), every: 10 * time.Millisecond} // 400/s
		bulk := fairJob{flow: Flow{Key: "bulk"}, writers: 64, latency: ms(20)}

		alone := runJobs(t, c, []fairJob{live}, time.Second, 5*time.Second, nil)
		full := runJobs(t, c, []fairJob{live, bulk}, time.Second, 5*time.Second, nil)
		if err := c.SetCeiling(capacity/2, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		half := runJobs(t, c, []fairJob{live, bulk}, time.Second, 5*time.Second, nil)

		for name, r := range map[string]jobsResult{"alone": alone, "full": full, "halved": half} {
			near(t, name+": live goodput, writes/s", r.units["live"]/5, 400, 400*0.02)
			// A write arriving finds at most the grant in progress
			// ahead of it: one interval of the rate, 1ms or 2ms.
			if w := p99(r.waits["live"]); w > 2.0/capacity*2 {
				t.Errorf("%s: live p99 queue wait %.4fs", name, w)
			}
		}
		t.Logf("live p99 wait: alone %.4fs, full %.4fs, halved %.4fs",
			p99(alone.waits["live"]), p99(full.waits["live"]), p99(half.waits["live"]))
		bulkShare := half.units["bulk"] / (half.units["bulk"] + half.units["live"])
		if bulkShare < DefaultBulkFloor-0.01 {
			t.Errorf("halved: bulk's share %.3f, below its floor %v", bulkShare, DefaultBulkFloor)
		}
		near(t, "halved: bulk goodput, writes/s", half.units["bulk"]/5, capacity/2-400, 20)
	})
}

// Scenario: live asks for more than the store takes; bulk still gets its
// floor and live the rest.
func TestFairClassesBulkFloorUnderLiveOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1e6, MaxRate: 1e6, Burst: 1, InitialConcurrency: 200, MaxConcurrency: 200, BulkFloor: 0.2})
		if err := c.SetCeiling(500, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		res := runJobs(t, c, []fairJob{
			{flow: Flow{Key: "live", Class: Live}, writers: 64, latency: ms(20)},
			{flow: Flow{Key: "bulk"}, writers: 64, latency: ms(20)},
		}, time.Second, 10*time.Second, nil)
		near(t, "bulk's share", res.units["bulk"]/(res.units["bulk"]+res.units["live"]), 0.2, 0.02)
	})
}

// One job's waiters never hold back another's grant: behind a job with 50
// writes waiting for a slot, another job's write is granted with the next
// slot or the one after (the greedy job's first write may share its tag).
func TestFairNoHeadOfLineAcrossFlows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1e6, MaxRate: 1e6, MaxConcurrency: 1, InitialConcurrency: 1})
		slot, err := c.AcquireFlow(t.Context(), Flow{Key: "greedy"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		granted := make(chan string, 64)
		acq := func(key string) {
			go func() {
				p, err := c.AcquireFlow(t.Context(), Flow{Key: key}, 1)
				if err != nil {
					t.Error(err)
					return
				}
				granted <- key
				time.Sleep(ms(10))
				p.Done(success(ms(10)))
			}()
		}
		for range 50 {
			acq("greedy")
		}
		synctest.Wait()
		acq("small")
		synctest.Wait()
		slot.Done(success(ms(10)))
		for i := 1; ; i++ {
			if k := <-granted; k == "small" {
				if i > 2 {
					t.Errorf("small's write was grant %d after it queued, want 1 or 2", i)
				}
				break
			}
		}
		time.Sleep(time.Second) // the rest drain
	})
}

// Per-flow accounting: share and wait over the last complete window, and
// the writes waiting now.
func TestFlowStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1e6, MaxRate: 1e6, InitialConcurrency: 4, MaxConcurrency: 4})
		runJobs(t, c, []fairJob{
			{flow: Flow{Key: "a", Weight: 3}, writers: 32, latency: ms(10)},
			{flow: Flow{Key: "b"}, writers: 32, latency: ms(10)},
		}, 0, shareWindow+time.Second, nil)
		s := c.Snapshot()
		if len(s.Flows) != 2 {
			t.Fatalf("Flows = %+v, want a and b", s.Flows)
		}
		a, b := s.Flows[0], s.Flows[1]
		near(t, "a's share", a.Share, 0.75, 0.03)
		near(t, "b's share", b.Share, 0.25, 0.03)
		if a.Weight != 3 || a.Class != Bulk || b.MeanWait <= a.MeanWait {
			t.Errorf("a = %+v, b = %+v: want weight 3 and a shorter wait for a", a, b)
		}
		var grants uint64
		for _, k := range s.Classes {
			grants += k.Grants
			if n := k.WaitBuckets[len(k.WaitBuckets)-1]; n != k.Grants {
				t.Errorf("%v: histogram counts %d of %d grants", k.Class, n, k.Grants)
			}
		}
		if grants == 0 || s.Classes[Bulk].Grants != grants {
			t.Errorf("Classes = %+v, want every grant in bulk", s.Classes)
		}
		// Idle for flowIdleWindows windows: the flows leave the list.
		time.Sleep((flowIdleWindows + 1) * shareWindow)
		if s := c.Snapshot(); len(s.Flows) != 0 {
			t.Errorf("after an idle stretch Flows = %+v, want none", s.Flows)
		}
	})
}

// A write whose caller gave up is not charged to its flow, wherever it
// waited in the flow's queue: a job whose oldest writes time out and are
// sent again is not pushed, write after write, behind the other jobs'
// backlogs.
func TestFairQueueGivenUpWaiterLeavesNoTrace(t *testing.T) {
	q := &fairQueue{}
	fill(q, Flow{Key: "b"}, 400, 1)
	fill(q, Flow{Key: "a"}, 2, 1)
	for range 100 {
		// a's oldest write times out; its loader sends it again.
		var first *waiter
		for _, fq := range q.class[Bulk].heap {
			if fq.key == "a" {
				first = fq.head
			}
		}
		q.remove(first)
		fill(q, Flow{Key: "a"}, 1, 1)
	}
	got := serve(q, 20)
	if got["a"] < 2 {
		t.Errorf("after a's writes timed out and were sent again, 20 grants went a:%v b:%v, want a's 2 among them", got["a"], got["b"])
	}
}

// TestTickGrantWaitsNoLessThanZero: a grant made by Tick's dispatch at
// Tick's now (a timer's firing), earlier than when the waiter queued,
// records a wait of zero, not a negative one that made the wait
// histogram's sum go down (a counter reset to rate()) and a flow's mean
// wait negative.
func TestTickGrantWaitsNoLessThanZero(t *testing.T) {
	synctest.Test(t, tickGrantWaitsNoLessThanZero)
}

func tickGrantWaitsNoLessThanZero(t *testing.T) {
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.InitialConcurrency, cfg.MaxConcurrency = 1, 4 })
	t0 := clk.now
	take(t, c, 1)
	clk.advance(ms(100))
	got := make(chan error, 1)
	go func() {
		q, err := c.Acquire(context.Background(), 1)
		if err == nil {
			defer q.Done(success(ms(1)))
		}
		got <- err
	}()
	synctest.Wait()
	if q := c.Snapshot().Queued; q != 1 {
		t.Fatalf("%d queued, want 1", q)
	}
	// The control loop's timer fired at t0+50ms; Tick runs now with that time.
	c.Tick(t0.Add(ms(50)))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	s := c.Snapshot()
	for _, cs := range s.Classes {
		if cs.WaitSum < 0 {
			t.Errorf("class %v: WaitSum %v < 0", cs.Class, cs.WaitSum)
		}
	}
	for _, f := range s.Flows {
		if f.MeanWait < 0 || f.MaxWait < 0 {
			t.Errorf("flow %q: MeanWait %v MaxWait %v", f.Key, f.MeanWait, f.MaxWait)
		}
	}
}

// TestZeroCostBulkDoesNotStarveLive: a write of cost 0 counts one unit
// between the classes; zero-cost Bulk writes went before every Live one
// (a credit of 0 covered their cost of 0).
func TestZeroCostBulkDoesNotStarveLive(t *testing.T) {
	synctest.Test(t, zeroCostBulkDoesNotStarveLive)
}

func zeroCostBulkDoesNotStarveLive(t *testing.T) {
	c, _ := newFake(t, 100, func(cfg *Config) { cfg.InitialConcurrency, cfg.MaxConcurrency = 1, 1 })
	hold := take(t, c, 1)[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type res struct {
		class Class
		p     *Permit
	}
	granted := make(chan res, 100)
	acq := func(f Flow, cost float64) {
		go func() {
			p, err := c.AcquireFlow(ctx, f, cost)
			if err == nil {
				granted <- res{f.Class, p}
			}
		}()
	}
	waitQueued := func(n int) {
		synctest.Wait()
		if q := c.Snapshot().Queued; q != n {
			t.Fatalf("%d queued, want %d", q, n)
		}
	}
	acq(Flow{Key: "live", Class: Live}, 1)
	waitQueued(1)
	acq(Flow{Key: "bulk", Class: Bulk}, 0)
	waitQueued(2)
	live := 0
	for i := 0; i < 20; i++ {
		hold.Done(success(ms(1)))
		r := <-granted
		if r.class == Live {
			live++
			break
		}
		hold = r.p
		acq(Flow{Key: "bulk", Class: Bulk}, 0) // the bulk job keeps one write waiting
		waitQueued(2)
	}
	if live == 0 {
		t.Errorf("Live was never served in 20 grants: zero-cost Bulk writes always went first")
	}
}
