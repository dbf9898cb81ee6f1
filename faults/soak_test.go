package faults

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/internal/storesim"
)

// soakSample is one reading of the sluice process during the soak.
type soakSample struct {
	at                   time.Duration
	goroutines, fds      float64
	heapInuse, rss       float64
	rate, concurrency    float64
	capacity             float64
	ok, pushedBack, errs int64
	jobs                 float64
}

func readSample(t *testing.T, admin string) (soakSample, bool) {
	t.Helper()
	text := metricsTextQuiet(admin)
	if text == "" {
		return soakSample{}, false
	}
	return soakSample{
		goroutines:  metricValue(text, "go_goroutines"),
		fds:         metricValue(text, "process_open_fds"),
		heapInuse:   metricValue(text, "go_memstats_heap_inuse_bytes"),
		rss:         metricValue(text, "process_resident_memory_bytes"),
		rate:        metricValue(text, "sluice_limiter_rate_limit"),
		concurrency: metricValue(text, "sluice_limiter_concurrency_limit"),
		jobs:        metricValue(text, "sluice_jobs"),
	}, true
}

// TestSoak runs sluice (the binary) for 10 minutes (SLUICE_SOAK_DURATION to
// change it) between 48 greedy loaders and a simulated store whose capacity
// changes every 40 s, with job churn: writes spread over rotating jobs,
// some completed, some cancelled and the rest left idle as they go, so
// records are created, finished, pruned and forgotten all along. Everything is on loopback. What must hold:
// sluice's goroutines, heap and open files stay flat (the end is compared
// with the state after a one-minute warm-up), every loader request gets an
// answer, and the store never sees more than it can take for long.
//
// Off by default: go test ./faults -run TestSoak -soak -timeout 20m -v
// (or SLUICE_SOAK=1). SLUICE_SOAK_REPORT=path writes the samples as a
// Markdown table.
func TestSoak(t *testing.T) {
	if !*soakFlag && os.Getenv("SLUICE_SOAK") != "1" {
		t.Skip("the soak runs only with -soak or SLUICE_SOAK=1 (10 minutes)")
	}
	dur := 10 * time.Minute
	if v := os.Getenv("SLUICE_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SLUICE_SOAK_DURATION: %v", err)
		}
		dur = d
	}
	warmup := min(time.Minute, dur/4)

	// Capacity steps (writes/s), 40 s each, round and round.
	steps := []float64{1200, 500, 2000, 300, 1000, 1600, 700}
	const step = 40 * time.Second
	capacityAt := func(el time.Duration) float64 { return steps[int(el/step)%len(steps)] }
	store, err := storesim.NewServer(storesim.Config{
		Style:         storesim.StyleGeneric,
		Schedule:      storesim.ScheduleFunc(capacityAt),
		BaseLatency:   5 * time.Millisecond,
		LatencyJitter: 0.2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	storeSrv := &http.Server{Handler: store, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = storeSrv.Serve(ln) }()
	defer storeSrv.Close()
	defer store.Close()
	storeURL := "http://" + ln.Addr().String()

	p := startProc(t,
		"SLUICE_UPSTREAM_URL="+storeURL,
		"SLUICE_LOG_LEVEL=info",
		"SLUICE_STATE_DIR="+t.TempDir(),
		"SLUICE_CANCEL_URL="+storeURL+"/_tasks/${JOB}/_cancel",
		"SLUICE_CLEANUP_URL="+storeURL+"/api/v1/admin/tsdb/delete_series",
		"SLUICE_STALL_AFTER=20s", "SLUICE_CANCEL_GRACE=10s",
		"SLUICE_JOB_RETENTION=1m",
		"SLUICE_MAX_JOBS=200",
		"SLUICE_QUEUE_MAX=256", "SLUICE_QUEUE_TIMEOUT=2s",
		"SLUICE_UPSTREAM_TIMEOUT=5s",
		"SLUICE_RETRY_POST=true",
	)

	// The loaders run a little longer than the sampling, so that the last
	// sample is taken under full load.
	ctx, stop := context.WithTimeout(context.Background(), dur+5*time.Second)
	defer stop()
	sampling, stopSampling := context.WithTimeout(context.Background(), dur)
	defer stopSampling()
	var ok, pushedBack, errs atomic.Int64
	var generation atomic.Int64 // jobs rotate: load-<generation>-<n>
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	body := bytes.Repeat([]byte("x"), 1024)
	var loaders sync.WaitGroup
	for w := range 48 {
		loaders.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				job := fmt.Sprintf("load-%d-%d", generation.Load(), (w+i)%8)
				req, _ := http.NewRequestWithContext(ctx, "POST", p.proxy+"/bulk", bytes.NewReader(body))
				req.Header.Set("X-Sluice-Job", job)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				resp.Body.Close()
				switch {
				case resp.StatusCode < 300:
					ok.Add(1)
				case resp.StatusCode == 429 || resp.StatusCode == 409 || resp.StatusCode == 503:
					pushedBack.Add(1)
					// A polite loader waits as told (at most a second here).
					wait := time.Second
					if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
						wait = min(wait, time.Duration(s)*time.Second)
					}
					select {
					case <-time.After(wait):
					case <-ctx.Done():
					}
				default:
					errs.Add(1)
				}
			}
		})
	}

	// Every 15 s a new generation of jobs starts; of the old one, half the
	// jobs are completed, one is cancelled, the rest go idle (never
	// cancelled; forgotten once SLUICE_MAX_JOBS is reached).
	var samples []soakSample
	start := time.Now()
	sampleTick := time.NewTicker(10 * time.Second)
	defer sampleTick.Stop()
	churnTick := time.NewTicker(15 * time.Second)
	defer churnTick.Stop()
	for sampling.Err() == nil {
		select {
		case <-sampling.Done():
		case <-churnTick.C:
			old := generation.Add(1) - 1
			for n := range 8 {
				id := fmt.Sprintf("load-%d-%d", old, n)
				switch {
				case n < 4:
					call(t, "POST", p.admin+"/v1/jobs/"+id+"/complete", "")
				case n == 4:
					call(t, "POST", p.admin+"/v1/jobs/"+id+"/cancel", `{"reason":"soak"}`)
				}
			}
		case <-sampleTick.C:
			s, good := readSample(t, p.admin)
			if !good {
				t.Fatalf("sluice's /metrics did not answer at %v; stderr:\n%s", time.Since(start), p.stderr.String())
			}
			s.at = time.Since(start)
			s.capacity = capacityAt(s.at)
			s.ok, s.pushedBack, s.errs = ok.Load(), pushedBack.Load(), errs.Load()
			samples = append(samples, s)
			t.Logf("%6s cap %5.0f/s rate %7.1f conc %3.0f | goroutines %4.0f heap %6.1f MiB rss %6.1f MiB fds %4.0f jobs %4.0f | ok %d pushed back %d errors %d",
				s.at.Round(time.Second), s.capacity, s.rate, s.concurrency, s.goroutines, s.heapInuse/(1<<20), s.rss/(1<<20), s.fds, s.jobs, s.ok, s.pushedBack, s.errs)
		}
	}
	stop()
	loaders.Wait()
	client.CloseIdleConnections()
	if len(samples) < 3 {
		t.Fatalf("only %d samples", len(samples))
	}
	var base soakSample
	for _, s := range samples {
		if s.at >= warmup {
			base = s
			break
		}
	}
	end := samples[len(samples)-1]
	var peakG, peakHeap float64
	for _, s := range samples[1:] {
		peakG, peakHeap = max(peakG, s.goroutines), max(peakHeap, s.heapInuse)
	}
	elapsed := end.at.Seconds()
	t.Logf("after warm-up (%v): goroutines %.0f, heap %.1f MiB, rss %.1f MiB, fds %.0f", base.at.Round(time.Second), base.goroutines, base.heapInuse/(1<<20), base.rss/(1<<20), base.fds)
	t.Logf("at the end (%v): goroutines %.0f, heap %.1f MiB, rss %.1f MiB, fds %.0f; peaks: goroutines %.0f, heap %.1f MiB",
		end.at.Round(time.Second), end.goroutines, end.heapInuse/(1<<20), end.rss/(1<<20), end.fds, peakG, peakHeap/(1<<20))
	t.Logf("loader: %d acknowledged (%.0f/s), %d pushed back, %d errors", end.ok, float64(end.ok)/elapsed, end.pushedBack, end.errs)
	st := store.StatsNow()
	t.Logf("store: %d attempts, %d accepted, %d throttled (%.2f%%)", st.Attempts, st.Accepted, st.Throttled, 100*float64(st.Throttled)/float64(max(st.Attempts, 1)))

	if end.goroutines > base.goroutines*1.25+20 {
		t.Errorf("goroutines grew from %.0f to %.0f", base.goroutines, end.goroutines)
	}
	if end.heapInuse > base.heapInuse*1.5+16<<20 {
		t.Errorf("heap in use grew from %.1f to %.1f MiB", base.heapInuse/(1<<20), end.heapInuse/(1<<20))
	}
	if end.fds > base.fds+20 {
		t.Errorf("open files grew from %.0f to %.0f", base.fds, end.fds)
	}
	if end.errs > end.ok/1000 {
		t.Errorf("%d loader requests failed without an answer (of %d acknowledged)", end.errs, end.ok)
	}
	if out := os.Getenv("SLUICE_SOAK_REPORT"); out != "" {
		var b strings.Builder
		b.WriteString("| t | capacity/s | rate limit | concurrency | goroutines | heap MiB | RSS MiB | fds | jobs | acknowledged | pushed back | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range samples {
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.0f | %.0f | %d | %d | %d |\n",
				s.at.Round(time.Second), s.capacity, s.rate, s.concurrency, s.goroutines, s.heapInuse/(1<<20), s.rss/(1<<20), s.fds, s.jobs, s.ok, s.pushedBack, s.errs)
		}
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
