package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/state"
)

// The "two jobs, two scopes" benchmark (scenario (a) of scopes): two jobs
// write to one store, each to its own scope (a table, a bucket prefix: a
// path prefix here), and the store throttles one scope only. Job A asks
// for twojobsDemand writes/s of scope a, which takes a tenth of that; job
// B asks as much of scope b, which takes it all. Each loader is open loop:
// it starts a write every 1/twojobsDemand s whatever the answers, and
// keeps each until the client acknowledges or gives it up, with at most
// twojobsOutstanding writes at once (a loader's pool is bounded: a tick
// that finds it full starts nothing). What matters is
// B's goodput beside A against B's goodput alone: a write path that lets
// A's throttling slow B has head-of-line blocking across scopes.
//
// Contenders: sluice's real sidecar (sidecar.NewServer, its proxy and
// limiters, on an in-process transport) with scopes on (the default) and
// off (SLUICE_SCOPES_MAX=0, one limiter for the store: sluice before
// scopes), one sidecar for both jobs; and the peers of the side-by-side
// benchmark, which are client libraries, so one instance per job (the
// static bucket hand-tuned to its job's scope's capacity).
const (
	twojobsDemand    = 500.0 // writes/s each job asks for
	twojobsCapA      = 50.0  // what scope a takes: 10% of A's demand
	twojobsCapB      = 2000.0
	twojobsRun       = 20 * time.Second
	twojobsMeasureAt = 5 * time.Second // goodput is measured from here to the end
	// twojobsOutstanding bounds each loader's writes in flight. Only the
	// write paths that keep A's writes waiting reach it: naive retries,
	// and the AWS SDK's adaptive mode, which holds each for a token and
	// wakes all its waiters at every refill (unbounded, thousands of them
	// made that run, under -race, most of this benchmark's time).
	twojobsOutstanding = 512
)

// twojobsRow is one contender's figures.
type twojobsRow struct {
	name      string
	bAlone    float64 // B's goodput alone, writes/s
	bTogether float64 // B's goodput beside A
	aTogether float64 // A's goodput beside B (of twojobsCapA)
	throttled float64 // store throttles per second, both scopes, together
}

// twojobsContender runs the jobs' writes through one write path.
type twojobsContender struct {
	name string
	// start builds the write path on the store's transport rt and
	// returns, per job, a write function and a stop for the end.
	start func(rt http.RoundTripper) (writeA, writeB func(ctx context.Context, path string) bool, stop func(), err error)
}

// twojobsContenders: sluice with and without scopes, and the peers.
func twojobsContenders() []twojobsContender {
	cs := []twojobsContender{
		{"sluice, scopes", sidecarWrites()},
		{"sluice, one limiter (scopes off)", sidecarWrites("SLUICE_SCOPES_MAX=0")},
	}
	for _, c := range contenders[1:] { // the peers, one instance per job
		cs = append(cs, twojobsContender{c.name + " (per job)", peerWrites(c)})
	}
	return cs
}

// sidecarWrites runs sluice's sidecar with env on top of the defaults.
func sidecarWrites(env ...string) func(rt http.RoundTripper) (func(context.Context, string) bool, func(context.Context, string) bool, func(), error) {
	return func(rt http.RoundTripper) (func(context.Context, string) bool, func(context.Context, string) bool, func(), error) {
		environ := append([]string{"SLUICE_UPSTREAM_URL=http://store.test", "SLUICE_PROFILE=generic", "SLUICE_SCOPE_GENERIC=path"}, env...)
		cfg, _, err := sidecar.LoadConfig(environ)
		if err != nil {
			return nil, nil, nil, err
		}
		s, err := sidecar.NewServer(cfg, sidecar.Options{Logger: slog.New(slog.DiscardHandler), Store: &state.MemStore{}, Transport: rt})
		if err != nil {
			return nil, nil, nil, err
		}
		stopLoops := s.StartLoops()
		h := s.ProxyHandler()
		write := func(job string) func(context.Context, string) bool {
			return func(ctx context.Context, path string) bool {
				// The loader keeps its write until sluice acknowledges it,
				// waiting out sluice's Retry-After (its pushback) between
				// tries, as the side-by-side benchmark's loader does.
				for ctx.Err() == nil {
					req := httptest.NewRequestWithContext(ctx, http.MethodPut, path, strings.NewReader(`{"v":1}`))
					req.Header.Set("X-Sluice-Job", job)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code/100 == 2 {
						return true
					}
					wait := time.Second
					if ra, ok := classify.ParseRetryAfter(rec.Header().Get("Retry-After"), time.Now()); ok && ra > 0 {
						wait = min(ra, 10*time.Second)
					}
					if !sleepCtx(ctx, wait) {
						return false
					}
				}
				return false
			}
		}
		return write("job-a"), write("job-b"), stopLoops, nil
	}
}

// peerWrites runs one instance of peer c per job.
func peerWrites(c contender) func(rt http.RoundTripper) (func(context.Context, string) bool, func(context.Context, string) bool, func(), error) {
	return func(rt http.RoundTripper) (func(context.Context, string) bool, func(context.Context, string) bool, func(), error) {
		a, err := c.new(env{id: "job-a", rt: rt, style: storesim.StyleGeneric, profile: classify.Generic, capacity: twojobsCapA})
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := c.new(env{id: "job-b", rt: rt, style: storesim.StyleGeneric, profile: classify.Generic, capacity: twojobsCapB})
		if err != nil {
			a.close()
			return nil, nil, nil, err
		}
		write := func(cl client) func(context.Context, string) bool {
			return func(ctx context.Context, path string) bool {
				return cl.write(ctx, &writeReq{method: http.MethodPut, url: "http://store.test" + path, body: []byte(`{"v":1}`), cost: 1})
			}
		}
		return write(a), write(b), func() { a.close(); b.close() }, nil
	}
}

// scopedStore routes /a/… to one simulated store and the rest to another:
// a store whose capacity is per scope.
type scopedStore struct{ a, b *storesim.Server }

func (s scopedStore) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/a/") {
		return s.a.Transport().RoundTrip(req)
	}
	return s.b.Transport().RoundTrip(req)
}

// runTwoJobs runs contender c once, with job A or without, and returns
// B's and A's goodput and the store's throttles per second over the
// measured span. It must run in a synctest bubble.
func runTwoJobs(ctx context.Context, c twojobsContender, withA bool) (goodB, goodA, throttled float64, err error) {
	newStore := func(capacity float64) (*storesim.Server, error) {
		return storesim.NewServer(storesim.Config{Style: storesim.StyleGeneric, Schedule: storesim.Constant(capacity)})
	}
	a, err := newStore(twojobsCapA)
	if err != nil {
		return 0, 0, 0, err
	}
	b, err := newStore(twojobsCapB)
	if err != nil {
		return 0, 0, 0, err
	}
	writeA, writeB, stop, err := c.start(scopedStore{a, b})
	if err != nil {
		return 0, 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, twojobsRun)
	defer cancel()
	var wg sync.WaitGroup
	loader := func(write func(context.Context, string) bool, path string) {
		tick := time.NewTicker(time.Duration(float64(time.Second) / twojobsDemand))
		defer tick.Stop()
		pool := make(chan struct{}, twojobsOutstanding)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case pool <- struct{}{}:
					wg.Go(func() {
						defer func() { <-pool }()
						write(ctx, path)
					})
				default: // the pool is full: this tick's write is not started
				}
			}
		}
	}
	var sa0, sb0 storesim.Stats
	wg.Go(func() {
		if sleepCtx(ctx, twojobsMeasureAt) {
			sa0, sb0 = a.StatsNow(), b.StatsNow()
		}
	})
	wg.Go(func() { loader(writeB, "/b/write") })
	if withA {
		wg.Go(func() { loader(writeA, "/a/write") })
	}
	<-ctx.Done()
	sa1, sb1 := a.StatsNow(), b.StatsNow()
	wg.Wait()
	stop()
	secs := (twojobsRun - twojobsMeasureAt).Seconds()
	goodB = float64(sb1.Accepted-sb0.Accepted) / secs
	goodA = float64(sa1.Accepted-sa0.Accepted) / secs
	throttled = float64(sa1.Throttled-sa0.Throttled+sb1.Throttled-sb0.Throttled) / secs
	return goodB, goodA, throttled, nil
}

// twojobsMarkdown is the BENCHMARKS.md table.
func twojobsMarkdown(rows []twojobsRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Each job asks for %.0f writes/s; scope a takes %.0f/s (10%% of A's demand), scope b %.0f/s. Goodput in writes/s from %v to %v of the run.\n\n",
		twojobsDemand, twojobsCapA, twojobsCapB, twojobsMeasureAt, twojobsRun)
	b.WriteString("| Write path | B alone | B beside A | B kept | A (of 50) | store throttles/s |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		kept := 0.0
		if r.bAlone > 0 {
			kept = 100 * r.bTogether / r.bAlone
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.0f%% | %.1f | %.1f |\n", r.name, r.bAlone, r.bTogether, kept, r.aTogether, r.throttled)
	}
	return b.String()
}
