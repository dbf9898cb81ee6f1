// Package demo is `sluice demo`: a program that uses the sluice library the
// way a pod does, with a simulated store and a greedy loader on loopback
// and the real sidecar between them, and a live view of what happens. It is
// not part of the library: nothing a user imports pulls in the simulator.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/internal/ctxtime"
	"github.com/sluice-dev/sluice/internal/storesim"
	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/admin"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

// demoJob is the job the demo's loader writes as.
const demoJob = "demo-load"

// Run runs `sluice demo`: a simulated store and a greedy loader on
// loopback with the real sluice between them, and a live view of what
// happens while the store's capacity drops and recovers, then stops
// accepting writes so that the job stalls and sluice cancels and cleans it
// up. It needs nothing installed. It returns the exit status.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 60*time.Second, "how long the capacity changes run before the store stops accepting writes (at least 5s)")
	plain := fs.Bool("plain", false, "print plain lines instead of a live view")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9090", "admin listener (sluice status and /metrics stay reachable here during the demo)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *duration < 5*time.Second {
		fmt.Fprintln(stderr, "sluice demo: --duration must be at least 5s")
		return 2
	}
	if !*plain && !isTerminal(stdout) {
		*plain = true
	}
	d := &demo{out: stdout, plain: *plain, dur: *duration}
	if err := d.run(ctx, *adminAddr); err != nil {
		fmt.Fprintln(stderr, "sluice demo:", err)
		return 1
	}
	return 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

type demo struct {
	out   io.Writer
	plain bool
	dur   time.Duration

	store    *storesim.Server
	admin    string       // the sidecar's admin API, which the demo reads as any program would
	client   *http.Client // for admin
	capacity atomic.Value // string: what the store is doing now
}

// Demo timeline, as shares of --duration: steady, halved, recovered and
// doubled; then the store refuses everything until the job is cancelled.
const baseCapacity = 200.0

func (d *demo) run(ctx context.Context, adminAddr string) error {
	store, err := storesim.NewServer(storesim.Config{
		Style:    storesim.StyleGeneric,
		Schedule: storesim.Constant(baseCapacity),
	})
	if err != nil {
		return err
	}
	d.store = store
	storeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	storeSrv := &http.Server{Handler: store, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = storeSrv.Serve(storeLn) }()
	defer storeSrv.Close()
	defer store.Close()
	storeURL := "http://" + storeLn.Addr().String()

	adminLn, err := net.Listen("tcp", adminAddr)
	busy := err != nil
	if busy {
		if adminLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		adminLn.Close()
		return err
	}
	stall := max(time.Second, d.dur/10)
	cfg, _, err := sidecar.LoadConfig([]string{
		"SLUICE_UPSTREAM_URL=" + storeURL,
		"SLUICE_INITIAL_RATE=20",
		"SLUICE_STALL_AFTER=" + stall.String(),
		"SLUICE_CANCEL_GRACE=" + (stall / 2).String(),
		"SLUICE_ACTION_RETRIES=2",
		"SLUICE_ACTION_TIMEOUT=5s",
		"SLUICE_UPSTREAM_TIMEOUT=5s",
		"SLUICE_CANCEL_URL=" + storeURL + "/_tasks/${JOB}/_cancel",
		"SLUICE_CLEANUP_URL=" + storeURL + "/api/v1/admin/tsdb/delete_series?match[]={job=\"${JOB}\"}",
		"SLUICE_CLEANUP_METHOD=POST",
		"SLUICE_SHUTDOWN_TIMEOUT=2s",
	})
	if err != nil {
		proxyLn.Close()
		adminLn.Close()
		return err
	}
	cfg.AdminAddr = adminLn.Addr().String()
	srv, err := sidecar.NewServer(cfg, sidecar.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		proxyLn.Close()
		adminLn.Close()
		return err
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvCtx, proxyLn, adminLn) }()
	defer func() { stopSrv(); <-served }()

	adminURL := "http://" + adminLn.Addr().String()
	d.admin, d.client = adminURL, &http.Client{Timeout: 2 * time.Second}
	fmt.Fprintf(d.out, "sluice demo: store simulated at %s (capacity %.0f writes/s, 429 + Retry-After above it)\n", storeURL, baseCapacity)
	fmt.Fprintf(d.out, "             loader: 32 greedy writers -> sluice at http://%s -> store; admin API at %s\n", proxyLn.Addr(), adminURL)
	if busy {
		fmt.Fprintf(d.out, "             (%s was busy: run SLUICE_ADMIN_URL=%s sluice status)\n", adminAddr, adminURL)
	}
	fmt.Fprintln(d.out)

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var loaders sync.WaitGroup
	var ok, pushedBack, refused atomic.Int64
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for range 32 {
		loaders.Go(func() { d.load(loadCtx, client, "http://"+proxyLn.Addr().String(), &ok, &pushedBack, &refused) })
	}

	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last storesim.Stats
	outage := false
	deadline := start.Add(d.dur + 10*stall)
	for {
		select {
		case <-ctx.Done():
			stopLoad()
			loaders.Wait()
			fmt.Fprintln(d.out, "\ninterrupted")
			return nil
		case <-tick.C:
		}
		el := time.Since(start)
		d.steer(el, &outage)
		st := store.StatsNow()
		view := d.view(el, st, last)
		last = st
		if d.plain {
			fmt.Fprintln(d.out, view)
		} else {
			fmt.Fprint(d.out, "\x1b[H\x1b[2J"+view+"\n")
		}
		job, err := d.job()
		if (err == nil && job.State.Terminal()) || time.Now().After(deadline) {
			break
		}
	}
	stopLoad()
	loaders.Wait()
	d.summary(time.Since(start), ok.Load(), pushedBack.Load(), refused.Load(), adminURL)
	return nil
}

// steer moves the store through the demo's timeline.
func (d *demo) steer(el time.Duration, outage *bool) {
	share := float64(el) / float64(d.dur)
	var c float64
	var what string
	switch {
	case share < 0.3:
		c, what = baseCapacity, "steady"
	case share < 0.5:
		c, what = baseCapacity/2, "capacity halved"
	case share < 0.7:
		c, what = baseCapacity, "recovered"
	case share < 1:
		c, what = 2*baseCapacity, "capacity doubled"
	default:
		if !*outage {
			*outage = true
			d.store.SetOutage(storesim.Refuse)
		}
		c, what = 0, "store refuses every write"
	}
	if c > 0 && d.store.Capacity(time.Now()) != c {
		d.store.SetCapacityNow(c)
	}
	d.capacity.Store(what)
}

// load is one greedy writer: it always has work, waits out sluice's 429s and
// stops when its job is cancelled (409).
func (d *demo) load(ctx context.Context, c *http.Client, base string, ok, pushedBack, refused *atomic.Int64) {
	body := []byte(`{"metric":"demo","value":1}` + "\n")
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/write", bytes.NewReader(body))
		req.Header.Set(proxy.HeaderJob, demoJob)
		resp, err := c.Do(req)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode < 300:
			ok.Add(1)
		case resp.StatusCode == http.StatusConflict:
			refused.Add(1)
			sleepCtx(ctx, time.Second) // the job is cancelled: nothing more to write
		default:
			pushedBack.Add(1)
			wait := 500 * time.Millisecond
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(s) * time.Second
			}
			sleepCtx(ctx, wait)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) { ctxtime.Sleep(ctx, d) }

func (d *demo) view(el time.Duration, st, last storesim.Stats) string {
	var status admin.Status
	_ = d.get("/v1/status", &status)
	snap := status.Limiter
	jobState, cause := "-", ""
	if j, err := d.job(); err == nil {
		jobState = j.State.String()
		if j.StallCause != "" {
			cause = " (" + string(j.StallCause) + ")"
		} else if j.Reason != "" && j.State.Terminal() {
			cause = " (" + j.Reason + ")"
		}
	}
	good := st.Accepted - last.Accepted
	thr := st.Throttled - last.Throttled
	what, _ := d.capacity.Load().(string)
	if d.plain {
		return fmt.Sprintf("t=%3.0fs capacity=%4.0f/s (%s) limit=%6.1f/s conc=%2d goodput=%4d/s throttled=%3d/s queue=%3d phase=%s job=%s%s",
			el.Seconds(), st.Capacity, what, snap.RateLimit, snap.Concurrency, good, thr, snap.Queued, snap.Phase, jobState, cause)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sluice demo  t=%.0fs of %s   (Ctrl-C to stop)\n\n", el.Seconds(), d.dur)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-18s %s\n", k, v) }
	row("store", what)
	row("capacity", fmt.Sprintf("%.0f writes/s  %s", st.Capacity, bar(st.Capacity, 2*baseCapacity)))
	row("sluice limit", fmt.Sprintf("%.1f writes/s  %s", snap.RateLimit, bar(snap.RateLimit, 2*baseCapacity)))
	row("goodput", fmt.Sprintf("%d writes/s  %s", good, bar(float64(good), 2*baseCapacity)))
	row("throttled", fmt.Sprintf("%d/s", thr))
	row("concurrency", fmt.Sprintf("%d in flight / limit %d", snap.InFlight, snap.Concurrency))
	row("queue", fmt.Sprintf("%d waiting", snap.Queued))
	row("controller", snap.Phase)
	row("job "+demoJob, jobState+cause)
	return b.String()
}

// get reads path from the sidecar's admin API into v.
func (d *demo) get(path string, v any) error {
	resp, err := d.client.Get(d.admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// job is the demo's job as the admin API shows it.
func (d *demo) job() (state.JobView, error) {
	var j state.JobView
	err := d.get("/v1/jobs/"+demoJob, &j)
	return j, err
}

func bar(v, full float64) string {
	n := int(40 * v / full)
	n = max(0, min(40, n))
	return "[" + strings.Repeat("#", n) + strings.Repeat(" ", 40-n) + "]"
}

func (d *demo) summary(el time.Duration, ok, pushedBack, refused int64, adminURL string) {
	st := d.store.StatsNow()
	fmt.Fprintf(d.out, "\n== summary after %s\n", el.Round(time.Second))
	ratio := 0.0
	if st.Attempts > 0 {
		ratio = float64(st.Throttled) / float64(st.Attempts)
	}
	fmt.Fprintf(d.out, "  store: %d writes accepted, %d throttled (%.1f%% of %d attempts)\n", st.Accepted, st.Throttled, 100*ratio, st.Attempts)
	fmt.Fprintf(d.out, "  loader: %d writes acknowledged, %d pushed back by sluice or the store, %d refused after the cancel\n", ok, pushedBack, refused)
	j, err := d.job()
	if err != nil {
		fmt.Fprintf(d.out, "  job %s: %v\n", demoJob, err)
	} else {
		fmt.Fprintf(d.out, "  job %s: %s", demoJob, j.State)
		if j.Reason != "" {
			fmt.Fprintf(d.out, " (%s)", j.Reason)
		}
		fmt.Fprintln(d.out)
		for _, t := range j.History {
			fmt.Fprintf(d.out, "    %s  %-10s -> %-10s %s\n", t.At.Format("15:04:05"), t.From, t.To, t.Reason)
		}
		for _, a := range j.Attempts {
			fmt.Fprintf(d.out, "    action %-8s attempt %d: %s\n", a.Action, a.N, a.Result)
		}
		if j.State != state.Cancelled {
			fmt.Fprintln(d.out, "  (the job did not reach cancelled within the demo's time)")
		}
	}
	fmt.Fprintf(d.out, "  store cancel/cleanup calls received: %d\n", st.Admin)
	fmt.Fprintf(d.out, "\nWhere to look next (the admin port is still open only while the demo runs; in your own deployment):\n")
	fmt.Fprintf(d.out, "  curl %s/v1/status          sluice status\n", adminURL)
	fmt.Fprintf(d.out, "  curl %s/v1/jobs            sluice jobs list\n", adminURL)
	fmt.Fprintf(d.out, "  curl %s/metrics            the Prometheus metrics (README: Metrics)\n", adminURL)
}
