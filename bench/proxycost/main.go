// Command proxycost measures what the sluice proxy itself costs, side by
// side in one run on loopback with a fast upstream: the same load generator
// drives the upstream directly, through a bare httputil.ReverseProxy, and
// through sluice with its limits wide open. It prints throughput ratios,
// added p50/p99 latency and CPU per request, then the peak RSS of 256
// concurrent 4 MiB uploads through the bare proxy and through sluice (each in
// a fresh subprocess, so the high-water marks do not mix).
//
// Everything here shares one process, one garbage collector and one
// scheduler, which hides most of what the proxy costs per write: the
// reference is bench/outofprocess, where each part is a process of its own.
//
//	go run ./bench/proxycost [-writers 32] [-round 3s] [-rounds 3]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/sidecar"
)

// checkFlags refuses what the runs could not measure, naming the flag:
// they index their rounds and divide by writers, uploads and bytes.
func checkFlags(writers int, round time.Duration, rounds, uploads int, uploadSize int64) error {
	switch {
	case writers < 1:
		return fmt.Errorf("-writers %d: want at least 1", writers)
	case round <= 0:
		return fmt.Errorf("-round %v: want a positive duration", round)
	case rounds < 1:
		return fmt.Errorf("-rounds %d: want at least 1", rounds)
	case uploads < 1:
		return fmt.Errorf("-uploads %d: want at least 1", uploads)
	case uploadSize < 1:
		return fmt.Errorf("-upload-size %d: want at least 1 byte", uploadSize)
	}
	return nil
}

func main() {
	mode := flag.String("mode", "all", "all, latency, or memory-bare / memory-sluice (subprocess modes)")
	writers := flag.Int("writers", 32, "concurrent loader connections")
	round := flag.Duration("round", 3*time.Second, "length of one measurement round per target")
	rounds := flag.Int("rounds", 3, "rounds per target, interleaved")
	uploads := flag.Int("uploads", 256, "concurrent uploads in the memory test")
	uploadSize := flag.Int64("upload-size", 4<<20, "bytes per upload in the memory test")
	flag.Parse()
	if err := checkFlags(*writers, *round, *rounds, *uploads, *uploadSize); err != nil {
		fmt.Fprintln(os.Stderr, "proxycost:", err)
		os.Exit(2)
	}
	switch *mode {
	case "memory-bare", "memory-sluice":
		peak, err := memoryRun(strings.TrimPrefix(*mode, "memory-"), *uploads, *uploadSize)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(peak)
		return
	case "all", "latency":
	default:
		fmt.Fprintln(os.Stderr, "unknown -mode", *mode)
		os.Exit(2)
	}
	fmt.Printf("proxycost: %d cores, %s, %d writers, %d rounds of %s per target\n\n", runtime.NumCPU(), runtime.Version(), *writers, *rounds, *round)
	if err := latencyRun(*writers, *round, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *mode == "all" {
		fmt.Printf("\npeak RSS with concurrent %d MiB uploads (fresh process each; SLUICE_BUFFER_BUDGET=256MiB):\n", *uploadSize>>20)
		// sluice twice: with twice the uploads its peak must stay near the
		// budget, not double.
		for _, run := range []struct {
			target string
			n      int
		}{{"bare", *uploads}, {"sluice", *uploads}, {"sluice", 2 * *uploads}} {
			out, err := exec.Command(os.Args[0], "-mode=memory-"+run.target, "-uploads="+strconv.Itoa(run.n),
				"-upload-size="+strconv.FormatInt(*uploadSize, 10)).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n%s", run.target, err, out)
				os.Exit(1)
			}
			fmt.Printf("  %-7s %4d uploads: %s", run.target, run.n, out)
		}
	}
}

// upstream is a fast store: it reads the body and answers 200.
func upstream() (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"result":"created"}`)
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { srv.Close() }
}

func serve(h http.Handler) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { srv.Close() }
}

func bareProxy(up string) http.Handler {
	u, _ := url.Parse(up)
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConnsPerHost: 1024},
	}
}

// sluiceProxy is sluice with its limits wide open: what is measured is the
// proxy path itself (admission, limiter, classification, retries' buffering).
func sluiceProxy(up string) (http.Handler, func()) {
	cfg, _, err := sidecar.LoadConfig([]string{
		"SLUICE_UPSTREAM_URL=" + up,
		"SLUICE_INITIAL_RATE=1000000000", "SLUICE_MAX_RATE=1000000000",
		"SLUICE_INITIAL_CONCURRENCY=1024", "SLUICE_MAX_CONCURRENCY=1024",
		"SLUICE_QUEUE_MAX=100000",
	})
	if err != nil {
		panic(err)
	}
	// As the sluice binary does; the bare proxy shares the process, and so
	// the settings.
	sidecar.SetRuntimeLimits(cfg)
	srv, err := sidecar.NewServer(cfg, sidecar.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	stop := srv.StartLoops()
	return srv.ProxyHandler(), stop
}

type result struct {
	n       int
	elapsed time.Duration
	lat     []time.Duration
	cpu     time.Duration
}

func (r *result) add(o result) {
	r.n += o.n
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	r.cpu += o.cpu
}

func (r *result) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r *result) pct(p float64) time.Duration {
	slices.Sort(r.lat)
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drive runs writers that PUT a small body to target for d.
func drive(target string, writers int, d time.Duration) result {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
	defer client.CloseIdleConnections()
	body := strings.Repeat(`{"index":{}}`+"\n"+`{"field":"value"}`+"\n", 8)
	var mu sync.Mutex
	var res result
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	end := start.Add(d)
	for range writers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(end) {
				t0 := time.Now()
				req, _ := http.NewRequest(http.MethodPut, target+"/index/_doc", strings.NewReader(body))
				resp, err := client.Do(req)
				if err != nil {
					panic(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					panic(fmt.Sprintf("%s: status %d", target, resp.StatusCode))
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.lat)
	res.cpu = cpuTime() - cpu0
	return res
}

func latencyRun(writers int, round time.Duration, rounds int) error {
	up, stopUp := upstream()
	defer stopUp()
	bareURL, stopBare := serve(bareProxy(up))
	defer stopBare()
	sh, stopLoops := sluiceProxy(up)
	defer stopLoops()
	sluiceURL, stopSluice := serve(sh)
	defer stopSluice()

	names := []string{"direct", "bare", "sluice"}
	targets := map[string]string{"direct": up, "bare": bareURL, "sluice": sluiceURL}
	res := map[string]*result{}
	for _, n := range names {
		res[n] = &result{}
		drive(targets[n], writers, round/3) // warm up connections and caches
	}
	for range rounds {
		for _, n := range names {
			res[n].add(drive(targets[n], writers, round))
		}
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "%-8s %10s %10s %10s %12s\n", "target", "req/s", "p50", "p99", "CPU/req")
	for _, n := range names {
		r := res[n]
		fmt.Fprintf(w, "%-8s %10.0f %10s %10s %12s\n", n, r.rps(), r.pct(0.5).Round(time.Microsecond),
			r.pct(0.99).Round(time.Microsecond), (r.cpu / time.Duration(r.n)).Round(100*time.Nanosecond))
	}
	b, s := res["bare"], res["sluice"]
	fmt.Fprintf(w, "\nsluice/bare throughput: %.1f%% (target >= 85%%)\n", 100*s.rps()/b.rps())
	fmt.Fprintf(w, "sluice added p50: %s, added p99: %s (target <= 1ms)\n",
		(s.pct(0.5) - b.pct(0.5)).Round(time.Microsecond), (s.pct(0.99) - b.pct(0.99)).Round(time.Microsecond))
	fmt.Fprintf(w, "sluice added CPU per request over bare: %s\n", ((s.cpu / time.Duration(s.n)) - (b.cpu / time.Duration(b.n))).Round(100*time.Nanosecond))
	return nil
}

// memoryRun sends uploads concurrent uploads of size bytes through the
// target and returns the process's peak RSS (VmHWM) as a line of text.
func memoryRun(target string, uploads int, size int64) (string, error) {
	up, stopUp := upstream()
	defer stopUp()
	var h http.Handler
	switch target {
	case "bare":
		h = bareProxy(up)
	default:
		sh, stop := sluiceProxy(up)
		defer stop()
		h = sh
	}
	front, stopFront := serve(h)
	defer stopFront()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: uploads}}
	var wg sync.WaitGroup
	errc := make(chan error, uploads)
	base := peakRSS()
	ctx := context.Background()
	for range uploads {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, front+"/bucket/object", io.LimitReader(zeros{}, size))
			req.ContentLength = size
			resp, err := client.Do(req)
			if err != nil {
				errc <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errc <- fmt.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return "", err
	}
	total := int64(uploads) * size
	return fmt.Sprintf("peak RSS %d MiB (%d MiB before the uploads; %d MiB uploaded in all)", peakRSS()>>20, base>>20, total>>20), nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// peakRSS reads VmHWM from /proc/self/status, in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}
