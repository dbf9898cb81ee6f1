package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dev/sluice/fleet"
	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/internal/tracelog"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// The fleet benchmark: N sidecars of one contender share a store of
// constant capacity (perMember requests/s each); the last one joins late
// and the first one is killed (no leave: its writers and its loops stop
// at once). sluice's fleet mode runs against Redis simulated in process
// (miniredis, its scripts as on a real server), served over net.Pipe, so
// that the whole fleet runs on virtual time under testing/synctest.

// fleetBench is one fleet scenario.
type fleetBench struct {
	n          int
	perMember  float64 // the store's capacity is n × perMember requests/s
	configured bool    // fleet mode is told the capacity (SLUICE_FLEET_CAPACITY)
	writers    int     // greedy writers per sidecar
	duration   time.Duration
	joinAt     time.Duration // the last sidecar starts then
	killAt     time.Duration // the first sidecar is killed then
	settle     time.Duration // excluded from the aggregate figures
	fairFrom   time.Duration // fairness over [fairFrom, killAt): everyone in
	store      storesim.Config
	trace      tracer // one sidecar's limit changes, if asked for
}

// tracer names one sidecar of a run whose limit changes go to w, at debug
// level, timed from the run's start: how a figure of the tables came
// about. The zero value traces nothing.
type tracer struct {
	w  io.Writer
	id string // the sidecar's id (sidecarID)
}

// fleetBenchSizes are the fleet sizes of the full benchmark.
var fleetBenchSizes = []int{8, 64, 256}

func newFleetBench(n int, configured bool) fleetBench {
	return fleetBench{
		n: n, perMember: 100, configured: configured, writers: 16,
		duration: 40 * time.Second, joinAt: 15 * time.Second, killAt: 32 * time.Second,
		settle: 5 * time.Second, fairFrom: 20 * time.Second,
		store: storesim.Config{BaseLatency: 10 * time.Millisecond, MaxLatencyFactor: 10, Burst: 100 * time.Millisecond,
			RejectCost: 0.05, LatencyJitter: 0.2, NetworkDelay: 2 * time.Millisecond, Seed: 1},
	}
}

func (fb fleetBench) capacity() float64 { return float64(fb.n) * fb.perMember }

// sidecarID is the id of a run's i-th sidecar, from 0.
func sidecarID(i int) string { return fmt.Sprintf("i%d", i) }

// logger is the logger of the sidecar with the given id: one that writes
// to tr.w, timing its records from start, if it is the traced one; nil
// otherwise.
func (tr tracer) logger(id string, start time.Time) *slog.Logger {
	if tr.w == nil || id != tr.id {
		return nil
	}
	return tracelog.New(tr.w, start).With("sidecar", id)
}

// fleetContender builds the instances of one contender for one run;
// shared is what the run's instances share (fleet mode's Redis).
type fleetContender struct {
	name string
	// fleet marks sluice in fleet mode: it runs twice, without and with
	// the capacity configured; the others do not know it (static divides
	// the initial capacity among the instances it starts with).
	fleet bool
	new   func(fb fleetBench, shared *fleetShared) func(e env) (client, error)
}

// fleetShared is what a run's instances share.
type fleetShared struct {
	redis    *miniredis.Miniredis
	commands atomic.Int64 // sent to Redis by the sidecars (the scripts' own calls are not commands on the wire)
}

// countCommands is a go-redis hook counting the commands a client sends.
type countCommands struct{ n *atomic.Int64 }

func (countCommands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countCommands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h countCommands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// killer is a client that can die without a goodbye (SIGKILL): for
// fleet mode, without leaving the fleet.
type killer interface{ kill() }

// fleetContenders: sluice in fleet mode, sluice's sidecars alone, and
// the peers.
func fleetContenders() []fleetContender {
	out := []fleetContender{{name: "sluice fleet", fleet: true, new: newSluiceFleet}}
	for _, c := range contenders {
		name := c.name
		if name == "sluice" {
			name = "sluice alone"
		}
		out = append(out, fleetContender{name: name, new: func(fleetBench, *fleetShared) func(env) (client, error) { return c.new }})
	}
	return out
}

// sluiceFleetClient is sluice's sidecar (as sluiceClient) in fleet mode:
// its fleet.Client sets the lease as its limiter's ceiling.
type sluiceFleetClient struct {
	*sluiceClient
	fc     *fleet.Client
	rdb    *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func newSluiceFleet(fb fleetBench, shared *fleetShared) func(e env) (client, error) {
	return func(e env) (client, error) {
		cl, err := newSluice(e)
		if err != nil {
			return nil, err
		}
		sc := cl.(*sluiceClient)
		opts, err := fleet.RedisOptions("redis://127.0.0.1:6379", "", 500*time.Millisecond)
		if err != nil {
			return nil, err
		}
		opts.Dialer = func(context.Context, string, string) (net.Conn, error) { return shared.redis.Dial() }
		rdb := redis.NewClient(opts)
		rdb.AddHook(countCommands{&shared.commands})
		cfg := fleet.Config{Resource: "bench:store", Member: e.id, InitialRate: sluiceInitialRate, MinRate: sluiceMinRate, MaxRate: sluiceMaxRate}
		if fb.configured {
			cfg.Capacity = fb.capacity()
		}
		fc, err := fleet.New(cfg, rdb, sc.ctl)
		if err != nil {
			rdb.Close()
			sc.close()
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		c := &sluiceFleetClient{sluiceClient: sc, fc: fc, rdb: rdb, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(c.done)
			fc.Run(ctx)
		}()
		return c, nil
	}
}

// close stops the sidecar as SIGTERM does: it leaves the fleet.
func (c *sluiceFleetClient) close() {
	c.cancel()
	<-c.done
	c.rdb.Close()
	c.sluiceClient.close()
}

// kill stops it as SIGKILL does: no goodbye, its membership expires.
func (c *sluiceFleetClient) kill() {
	c.rdb.Close() // the leave that Run attempts fails at once
	c.cancel()
	<-c.done
	c.sluiceClient.close()
}

// fleetResultRow is one contender's figures in one fleet scenario.
type fleetResultRow struct {
	name       string
	configured bool
	share      float64 // aggregate goodput ÷ capacity over [settle, end)
	throttle   float64 // over [settle, end)
	slowest    float64 // slowest sidecar's goodput ÷ fair share over [fairFrom, killAt)
	jain       float64 // over the same
	lateJoin   convergence
	afterKill  float64 // aggregate goodput ÷ capacity over [killAt+5s, end)
	cmdsPerSec float64 // Redis commands per sidecar per second; NaN without Redis
	failed     int64
	runs       int // folded by medianFleetRow
}

// runFleetBench runs one contender through fb and measures it.
func runFleetBench(ctx context.Context, fb fleetBench, fc fleetContender) (fleetResultRow, error) {
	shared := &fleetShared{}
	if fc.fleet {
		shared.redis = miniredis.NewMiniRedis()
		shared.redis.ClockTTL(true)
		defer shared.redis.Close()
	}
	r, err := recordFleet(ctx, fb, fc, shared)
	if err != nil {
		return fleetResultRow{}, err
	}
	row := analyseFleetBench(fb, fc, r)
	row.cmdsPerSec = math.NaN()
	if shared.redis != nil {
		// Sidecar-seconds: the joiner and the killed one were there for
		// part of the run.
		secs := float64(fb.n)*fb.duration.Seconds() - fb.joinAt.Seconds() - (fb.duration - fb.killAt).Seconds()
		row.cmdsPerSec = float64(shared.commands.Load()) / secs
	}
	return row, nil
}

// recordFleet runs one contender through fb, its instances sharing
// shared, and returns the recording.
func recordFleet(ctx context.Context, fb fleetBench, fc fleetContender, shared *fleetShared) (*run, error) {
	newClient := fc.new(fb, shared)
	start := time.Now()
	rec := newRecorder(start, fb.duration)
	cfg := fb.store
	sched := storesim.Constant(fb.capacity())
	cfg.Style, cfg.Unit, cfg.Schedule, cfg.Observe = storesim.StyleS3, storesim.Requests, sched, rec.observe
	store, err := storesim.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	ctx, cancel := context.WithDeadline(ctx, start.Add(fb.duration))
	defer cancel()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := range fb.n {
		startAt, stopAt := time.Duration(0), fb.duration
		if i == fb.n-1 {
			startAt = fb.joinAt
		}
		if i == 0 {
			stopAt = fb.killAt
		}
		wg.Go(func() {
			if !sleepCtx(ctx, startAt) {
				return
			}
			cl, err := newClient(env{id: sidecarID(i), rt: store.Transport(), style: storesim.StyleS3, profile: classify.S3,
				capacity: fb.capacity() / float64(fb.n), logger: fb.trace.logger(sidecarID(i), start)})
			if err != nil {
				mu.Lock()
				firstErr = fmt.Errorf("bench: %s instance %d: %w", fc.name, i, err)
				mu.Unlock()
				cancel()
				return
			}
			ictx, icancel := context.WithDeadline(ctx, start.Add(stopAt))
			defer icancel()
			var writers sync.WaitGroup
			for range fb.writers {
				writers.Go(func() {
					w := (scenario{}).payload()
					for ictx.Err() == nil {
						t0 := time.Now()
						ok := cl.write(ictx, w)
						if ictx.Err() != nil {
							return
						}
						rec.wrote(sidecarID(i), time.Since(t0), ok)
					}
				})
			}
			writers.Wait()
			if k, ok := cl.(killer); ok && stopAt < fb.duration {
				k.kill()
			} else {
				cl.close()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return rec.finish(sched), nil
}

func analyseFleetBench(fb fleetBench, fc fleetContender, r *run) fleetResultRow {
	total := len(r.capacity)
	settle := bucketOf(fb.settle)
	row := fleetResultRow{
		name: fc.name, configured: fc.fleet && fb.configured,
		share:     r.share(r.total, settle, total),
		throttle:  throttleRatio(r.total, settle, total),
		afterKill: r.share(r.total, bucketOf(fb.killAt+5*time.Second), total),
		failed:    r.writes.failed,
	}
	fair := fb.capacity() / float64(fb.n)
	from, to := bucketOf(fb.fairFrom), bucketOf(fb.killAt)
	per := make([]float64, fb.n)
	for i := range fb.n {
		per[i] = goodputRate(r.clients[sidecarID(i)], from, to)
	}
	row.jain = jain(per)
	row.slowest = slices.Min(per) / fair
	late := r.clients[sidecarID(fb.n-1)]
	win := bucketOf(convWindow)
	d, ok := holdsFrom(bucketOf(fb.joinAt), bucketOf(fb.killAt), func(u int) bool {
		return late.accepted != nil && goodputRate(late, u, u+win) >= lateJoinTarget*fair
	})
	row.lateJoin = convergence{d, ok}
	return row
}

// Fleet mode's targets.
const (
	targetFleetUnknown    = 0.97  // aggregate goodput of an unknown capacity
	targetFleetConfigured = 0.99  // of a configured one
	targetFleetThrottle   = 0.005 // store throttle ratio
	targetFleetSlowest    = 0.95  // slowest sidecar ÷ fair share
	targetFleetJain       = 0.99
	lateJoinTarget        = 0.90 // the late joiner has its share at 90% of it…
	targetLateJoin        = 3 * time.Second
	targetRedisCmds       = 2.0 // commands per sidecar per second
)

// fleetMarkdown renders one table per fleet size.
func fleetMarkdown(sizes []int, rows map[int][]fleetResultRow) string {
	var b strings.Builder
	fb := newFleetBench(0, false)
	fmt.Fprintf(&b, "Store: S3 style, capacity %.0f requests/s per sidecar, base latency %v (×1/(1−ρ), at most ×%.0f), burst %v; %d greedy writers per sidecar; %v. The last sidecar joins at %v, the first is killed (no goodbye) at %v. Aggregate figures over [%v, %v); fairness (slowest ÷ fair share, Jain's index) over [%v, %v), all sidecars in; the late joiner has its share when a 1 s window of its goodput stays ≥ %.0f%% of the fair share for %v.\n\n",
		fb.perMember, fb.store.BaseLatency, fb.store.MaxLatencyFactor, fb.store.Burst, fb.writers, fb.duration, fb.joinAt, fb.killAt,
		fb.settle, fb.duration, fb.fairFrom, fb.killAt, 100*lateJoinTarget, convHold)
	if rs := rows[sizes[0]]; len(rs) > 0 && rs[0].runs > 1 {
		fmt.Fprintf(&b, "Every figure is the median of %d runs.\n\n", rs[0].runs)
	}
	for _, n := range sizes {
		fmt.Fprintf(&b, "**N = %d** (capacity %.0f requests/s)\n\n", n, float64(n)*fb.perMember)
		b.WriteString("| contender | capacity | aggregate goodput | throttle ratio | slowest ÷ fair | Jain | late joiner at 90% after | goodput after the kill | Redis commands per sidecar per s | failed writes |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range rows[n] {
			capa := "unknown"
			if r.configured {
				capa = "configured"
			}
			cmds := "–"
			if !math.IsNaN(r.cmdsPerSec) {
				cmds = fmt.Sprintf("%.2f", r.cmdsPerSec)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.3f | %s | %s | %s | %d |\n",
				r.name, capa, pct(r.share), pct(r.throttle), pct(r.slowest), r.jain, r.lateJoin, pct(r.afterKill), cmds, r.failed)
		}
		b.WriteString("\n")
	}
	// Targets, for fleet mode.
	b.WriteString("Fleet mode against its targets:\n\n| N | capacity | goodput ≥ 97% (unknown) / 99% (configured) | throttle ≤ 0.5% | slowest ≥ 95% of fair, Jain ≥ 0.99 | late joiner ≥ 90% within 3 s | Redis ≤ 2 commands/sidecar/s |\n|---|---|---|---|---|---|---|\n")
	for _, n := range sizes {
		for _, r := range rows[n] {
			if !strings.HasPrefix(r.name, "sluice fleet") {
				continue
			}
			capa, want := "unknown", targetFleetUnknown
			if r.configured {
				capa, want = "configured", targetFleetConfigured
			}
			fmt.Fprintf(&b, "| %d | %s | %s %s | %s %s | %s, %.3f %s | %s %s | %.2f %s |\n", n, capa,
				pct(r.share), mark(r.share >= want), pct(r.throttle), mark(r.throttle <= targetFleetThrottle),
				pct(r.slowest), r.jain, mark(r.slowest >= targetFleetSlowest && r.jain >= targetFleetJain),
				r.lateJoin, mark(r.lateJoin.ok && r.lateJoin.d <= targetLateJoin),
				r.cmdsPerSec, mark(r.cmdsPerSec <= targetRedisCmds))
		}
	}
	return b.String()
}

// medianFleetRow folds repeated runs into per-metric medians.
func medianFleetRow(rs []fleetResultRow) fleetResultRow {
	pick := func(f func(r fleetResultRow) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return medianOf(xs)
	}
	m := rs[0]
	m.share = pick(func(r fleetResultRow) float64 { return r.share })
	m.throttle = pick(func(r fleetResultRow) float64 { return r.throttle })
	m.slowest = pick(func(r fleetResultRow) float64 { return r.slowest })
	m.jain = pick(func(r fleetResultRow) float64 { return r.jain })
	m.afterKill = pick(func(r fleetResultRow) float64 { return r.afterKill })
	m.cmdsPerSec = pick(func(r fleetResultRow) float64 { return r.cmdsPerSec })
	m.failed = int64(pick(func(r fleetResultRow) float64 { return float64(r.failed) }))
	cs := make([]convergence, len(rs))
	for i, r := range rs {
		cs[i] = r.lateJoin
	}
	m.lateJoin = medianConv(cs)
	m.runs = len(rs)
	return m
}
