// Command steps runs sluice as real processes, on real sockets, against a
// simulated token-bucket store (internal/storesim, S3 style, the
// side-by-side benchmark's latency model) served on loopback, and prints
// what the store saw. It is the real-socket counterpart of the in-process
// simulator in package bench, for issue 20:
//
//	steps:        one sluice, tens of greedy writers; the store's capacity
//	              is C, then halves, then quadruples (C/2 → 2C). Goodput
//	              against the capacity integral after the first seconds,
//	              the throttle ratio, and how long sluice takes to
//	              converge after each step.
//	independent:  N sluice processes, each with its own greedy writers, on
//	              one store of N × 100 requests/s, the last one joining
//	              late: the slowest and the fastest against the fair share,
//	              the throttle ratio, the aggregate goodput, and how soon
//	              the late joiner holds 80% of its share.
//
// The harness builds the sluice binary from the module it runs in (or
// takes -sluice), runs each sluice with its defaults and SLUICE_PROFILE=s3,
// and sets the store's client header on every write so that the store
// counts each sidecar's writes apart.
//
//	go run ./bench/steps [-mode steps|independent] [-capacity 200] [-writers 64] [-phase 10s] [-n 8] [-logs DIR] [-log-level debug]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/internal/freeport"
	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/sidecar"
)

func main() {
	mode := flag.String("mode", "steps", "steps or independent")
	capacity := flag.Float64("capacity", 200, "steps: C, requests/s")
	writers := flag.Int("writers", 64, "greedy writers per sidecar")
	phase := flag.Duration("phase", 10*time.Second, "steps: length of each phase (C, C/2, 2C)")
	settle := flag.Duration("settle", 3*time.Second, "steps: the first seconds, left out of the goodput and throttle figures")
	n := flag.Int("n", 8, "independent: sidecars")
	sluiceBin := flag.String("sluice", "", "the sluice binary; empty: build it from this module")
	flag.BoolVar(&verbose, "v", false, "also print each second: capacity, goodput, attempts, throttled")
	flag.StringVar(&logDir, "logs", "", "keep each sluice's log in this directory, as <sidecar>.log (they are removed otherwise)")
	flag.StringVar(&logLevel, "log-level", "warn", "SLUICE_LOG_LEVEL of each sluice: debug logs every limit change")
	flag.Parse()
	err := errors.Join(checkFlags(*mode, *capacity, *writers, *phase, *settle, *n), checkLogFlags(logLevel, logDir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "steps:", err)
		os.Exit(2)
	}
	if err := run(*mode, *capacity, *writers, *phase, *settle, *n, *sluiceBin); err != nil {
		fmt.Fprintln(os.Stderr, "steps:", err)
		os.Exit(1)
	}
}

// checkFlags refuses what run could not measure, naming the flag, before
// anything is built or started.
func checkFlags(mode string, capacity float64, writers int, phase, settle time.Duration, n int) error {
	switch {
	case mode != "steps" && mode != "independent":
		return fmt.Errorf("-mode %q: want steps or independent", mode)
	case !(capacity > 0) || math.IsInf(capacity, 0):
		return fmt.Errorf("-capacity %v: want a positive number of requests/s", capacity)
	case writers < 1:
		return fmt.Errorf("-writers %d: want at least 1", writers)
	case phase < time.Second:
		return fmt.Errorf("-phase %v: want at least 1s (convergence is judged over 1 s windows)", phase)
	case settle < 0 || settle >= 3*phase:
		return fmt.Errorf("-settle %v: want at least 0 and less than the run (3 × -phase = %v)", settle, 3*phase)
	case mode == "independent" && n < 2:
		return fmt.Errorf("-n %d: want at least 2 sidecars (one of them joins late)", n)
	}
	return nil
}

const bucket = 100 * time.Millisecond

var (
	verbose  bool
	logDir   string // where sidecar logs are kept; empty: the run's temporary directory
	logLevel string // the sidecars' SLUICE_LOG_LEVEL
)

// checkLogFlags refuses a log level sluice does not know and a -logs that
// is not a directory.
func checkLogFlags(level, dir string) error {
	if _, ok := sidecar.ParseLogLevel(level); !ok {
		return fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	if dir == "" {
		return nil
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("-logs %q: want an existing directory", dir)
	}
	return nil
}

// series is what the store saw of one client (or all), per bucket.
type series struct {
	attempts, throttled []int64
	accepted            []float64
}

func newSeries(n int) *series {
	return &series{attempts: make([]int64, n), throttled: make([]int64, n), accepted: make([]float64, n)}
}

// recorder counts the store's events per bucket, in all and per client.
type recorder struct {
	mu      sync.Mutex
	start   time.Time
	n       int
	total   *series
	clients map[string]*series
}

func (r *recorder) observe(ev storesim.Event) {
	i := int(ev.Time.Sub(r.start) / bucket)
	if i < 0 || i >= r.n {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range []*series{r.total, r.client(ev.Client)} {
		s.attempts[i]++
		if ev.Throttled || ev.Failed {
			s.throttled[i]++
		}
		s.accepted[i] += ev.AcceptedCost
	}
}

// client requires r.mu held.
func (r *recorder) client(id string) *series {
	s := r.clients[id]
	if s == nil {
		s = newSeries(r.n)
		r.clients[id] = s
	}
	return s
}

func (s *series) goodput(from, to int) float64 {
	from, to = max(from, 0), min(to, len(s.accepted))
	if to <= from {
		return 0
	}
	var g float64
	for i := from; i < to; i++ {
		g += s.accepted[i]
	}
	return g / (float64(to-from) * bucket.Seconds())
}

func (s *series) throttleRatio(from, to int) float64 {
	var a, t int64
	for i := max(from, 0); i < min(to, len(s.attempts)); i++ {
		a, t = a+s.attempts[i], t+s.throttled[i]
	}
	if a == 0 {
		return 0
	}
	return float64(t) / float64(a)
}

// holds returns how long after bucket from good(u) first holds for every
// 1 s window starting in a 3 s stretch (as the simulator's "converge").
func holds(from, end int, good func(u int) bool) (time.Duration, bool) {
	win, hold := int(time.Second/bucket), int(2*time.Second/bucket)
	k := 0
	for u := from; u+win <= end; u++ {
		if good(u) {
			k++
		} else {
			k = 0
		}
		if k == hold+1 {
			return time.Duration(u-hold-from) * bucket, true
		}
	}
	return 0, false
}

func conv(d time.Duration, ok bool) string {
	if !ok {
		return "never"
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func run(mode string, capacity float64, writers int, phase, settle time.Duration, n int, bin string) error {
	tmp, err := os.MkdirTemp("", "sluice-steps-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin == "" {
		bin = filepath.Join(tmp, "sluice")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir, build.Stderr = moduleRoot(), os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building sluice: %w", err)
		}
	}
	var (
		sched    storesim.Schedule
		total    time.Duration
		joinAt   time.Duration
		sidecars = 1
	)
	switch mode {
	case "steps":
		ph := storesim.MustPhases(storesim.Steady("C", phase, capacity), storesim.Steady("C/2", phase, capacity/2), storesim.Steady("2C", phase, 2*capacity))
		sched, total = ph, ph.Total()
	case "independent":
		sidecars, total, joinAt = n, 35*time.Second, 15*time.Second
		capacity = float64(n) * 100
		sched = storesim.Constant(capacity)
	default:
		return fmt.Errorf("-mode %q: want steps or independent", mode)
	}
	start := time.Now()
	rec := &recorder{start: start, n: int(total / bucket), clients: map[string]*series{}}
	rec.total = newSeries(rec.n)
	store, err := storesim.NewServer(storesim.Config{Style: storesim.StyleS3, Unit: storesim.Requests, Schedule: sched,
		BaseLatency: 10 * time.Millisecond, MaxLatencyFactor: 10, Burst: 100 * time.Millisecond, RejectCost: 0.05,
		LatencyJitter: 0.2, Seed: 1, Observe: rec.observe})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: store}
	go srv.Serve(ln)
	defer srv.Close()
	defer store.Close()

	ctx, cancel := context.WithDeadline(context.Background(), start.Add(total))
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, sidecars)
	for i := range sidecars {
		id := fmt.Sprintf("s%d", i)
		at := time.Duration(0)
		if mode == "independent" && i == sidecars-1 {
			at = joinAt
		}
		wg.Go(func() {
			select {
			case <-time.After(time.Until(start.Add(at))):
			case <-ctx.Done():
				return
			}
			if err := runSidecar(ctx, bin, tmp, id, "http://"+ln.Addr().String(), writers); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(slices.Collect(func(yield func(error) bool) {
		for e := range errs {
			if !yield(e) {
				return
			}
		}
	})...); err != nil {
		return err
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	capAt := func(i int) float64 { return sched.Capacity(time.Duration(i)*bucket + bucket/2) }
	end := rec.n
	if verbose {
		for sec := 0; sec*10 < end; sec++ {
			var att, thr int64
			for i := sec * 10; i < min(end, sec*10+10); i++ {
				att, thr = att+rec.total.attempts[i], thr+rec.total.throttled[i]
			}
			fmt.Printf("t=%2ds capacity %4.0f goodput %6.1f attempts %4d throttled %3d\n", sec, capAt(sec*10), rec.total.goodput(sec*10, sec*10+10), att, thr)
		}
	}
	if mode == "steps" {
		report := func(name string, from, to int) {
			var capa float64
			for i := from; i < to; i++ {
				capa += capAt(i) * bucket.Seconds()
			}
			good := rec.total.goodput(from, to) * float64(to-from) * bucket.Seconds()
			fmt.Printf("| %s | %.1f%% | %.2f%% |\n", name, 100*good/capa, 100*rec.total.throttleRatio(from, to))
		}
		fmt.Printf("sluice (defaults, SLUICE_PROFILE=s3), %d greedy writers; store capacity %.0f, %.0f, %.0f requests/s for %v each, on 127.0.0.1.\n\n",
			writers, capacity, capacity/2, 2*capacity, phase)
		fmt.Println("| span | goodput ÷ capacity integral | throttle ratio |\n|---|---:|---:|")
		s := int(settle / bucket)
		p := int(phase / bucket)
		report(fmt.Sprintf("run after the first %v", settle), s, end)
		report("C", s, p)
		report("C/2", p, 2*p)
		report("2C", 2*p, end)
		converge := func(step int) string {
			return conv(holds(step, min(step+p, end), func(u int) bool {
				var capa float64
				for i := u; i < u+10; i++ {
					capa += capAt(i)
				}
				capa /= 10
				g := rec.total.goodput(u, u+10)
				return math.Abs(g-capa) <= 0.1*capa && rec.total.throttleRatio(u, u+10) < 0.02
			}))
		}
		fmt.Printf("\nconverged after: start %s, the halving %s, the quadrupling %s\n", converge(0), converge(p), converge(2*p))
		return nil
	}
	fair := capacity / float64(sidecars)
	from := int(25 * time.Second / bucket)
	per := make([]float64, sidecars)
	for i := range sidecars {
		per[i] = rec.client(fmt.Sprintf("s%d", i)).goodput(from, end) / fair
	}
	late := rec.client(fmt.Sprintf("s%d", sidecars-1))
	d, ok := holds(int(joinAt/bucket), end, func(u int) bool { return late.goodput(u, u+10) >= 0.8*fair })
	var capa float64
	for i := int(5 * time.Second / bucket); i < end; i++ {
		capa += capAt(i) * bucket.Seconds()
	}
	s5 := int(5 * time.Second / bucket)
	good := rec.total.goodput(s5, end) * float64(end-s5) * bucket.Seconds()
	fmt.Printf("%d sluice processes (defaults, SLUICE_PROFILE=s3), %d greedy writers each, on one store of %.0f requests/s, on 127.0.0.1; the last joins at %v of %v.\n\n",
		sidecars, writers, capacity, joinAt, total)
	fmt.Println("| N | slowest ÷ fair | fastest ÷ fair | throttle ratio | aggregate goodput | late joiner at 80% after |\n|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.1f%% | %.1f%% | %.2f%% | %.1f%% | %s |\n", sidecars, 100*slices.Min(per), 100*slices.Max(per),
		100*rec.total.throttleRatio(s5, end), 100*good/capa, conv(d, ok))
	return nil
}

// runSidecar runs one sluice process in front of store with writers greedy
// writers until ctx ends, then stops it.
func runSidecar(ctx context.Context, bin, tmp, id, store string, writers int) error {
	addrs, err := freeport.Addrs(2)
	if err != nil {
		return err
	}
	listen, admin := addrs[0], addrs[1]
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{"SLUICE_UPSTREAM_URL=" + store, "SLUICE_LISTEN_ADDR=" + listen, "SLUICE_ADMIN_ADDR=" + admin,
		"SLUICE_PROFILE=s3", "SLUICE_LOG_LEVEL=" + logLevel}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	dir := tmp
	if logDir != "" {
		dir = logDir
	}
	logf, err := os.Create(filepath.Join(dir, id+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := hc.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sluice not ready within 15s (log %s)", logf.Name())
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers, MaxConnsPerHost: writers}}
	body := bytes.Repeat([]byte("x"), 1024)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+listen+"/bench/object", bytes.NewReader(body))
				if err != nil {
					return
				}
				req.Header.Set(storesim.ClientHeader, id)
				resp, err := client.Do(req)
				if err != nil {
					continue // the run ended, or sluice pushed back by closing: send it again
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	return nil
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
