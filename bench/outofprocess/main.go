// Command outofprocess measures what sluice costs per write the way it runs
// in a pod: the store, the load generator, a bare httputil.ReverseProxy and
// the sluice binary are separate processes on loopback, so each one's CPU
// is its own (read from /proc/<pid>/stat over the measured interval) and no
// process's garbage collector or scheduler runs on another's behalf, which
// an in-process harness (bench/proxycost) hides.
//
// The harness builds the sluice binary from the module it runs in (and,
// with -base, a second one from a git revision, exported with git archive,
// so that a change is measured against its base side by side), then
// starts:
//   - a store that reads each body and answers 204;
//   - the bare proxy, and sluice with its limits wide open (rate 1e9/s,
//     concurrency 64, held there: see -adaptive), with and without
//     SLUICE_STATE_DIR;
//   - for each measurement, a load generator: N writers PUT bodies of one
//     size for a fixed time after a warm-up, and report writes, bytes and
//     latencies.
//
// The store, the bare proxy and the load generator are this program run
// again with -role, so there is nothing else to build. Each body size is
// measured in two phases, targets alternating within each round (the
// machine is shared; only ratios taken side by side mean anything):
//
//	peak:    closed loop, every target at full speed: writes/s, bytes/s,
//	         the proxy process's CPU per write, and p50/p99;
//	latency: paced at half the bare proxy's peak rate of the same size:
//	         p50/p99, and what sluice adds to the bare proxy's.
//
// A ratio to the bare proxy is the median of the rounds' ratios, each
// taken against the bare proxy's measurement of the same round. Variants:
// "+job", the writes carry X-Sluice-Job; "+dir", sluice runs with
// SLUICE_STATE_DIR (job records in bbolt).
//
// Bodies above 1 MiB stream (SLUICE_RETRY_BODY_MAX=1MiB), so the 4 MiB row
// is sluice's streamed path and the others its buffered one.
//
//	go run ./bench/outofprocess [-quick] [-base REV] [-adaptive] [-sizes 256,64KiB,4MiB] [-writers 32] [-round 1s] [-rounds 5]
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	role := flag.String("role", "", "internal: store, bare or load (the harness runs itself again with it)")
	addr := flag.String("upstream", "", "role bare: the store's URL")
	target := flag.String("target", "", "role load: the URL to write to")
	size := flag.Int("size", 256, "role load: body bytes")
	job := flag.String("job", "", "role load: X-Sluice-Job header, none if empty")
	rate := flag.Float64("rate", 0, "role load: writes/s in all, paced; 0: every writer as fast as it can")
	warmup := flag.Duration("warmup", 300*time.Millisecond, "warm-up before each measurement")

	quick := flag.Bool("quick", false, "a ~30 s run: shorter and fewer rounds, fewer variants")
	base := flag.String("base", "", "also build sluice at this git revision and measure it side by side (sluice@REV)")
	baseBin := flag.String("base-bin", "", "like -base, with a sluice binary built already (sluice@base)")
	sluiceBin := flag.String("sluice", "", "the sluice binary to measure; empty: build it from this module")
	writers := flag.Int("writers", 32, "concurrent writers (one connection each)")
	round := flag.Duration("round", time.Second, "one measurement (per target, per round)")
	rounds := flag.Int("rounds", 5, "rounds; targets alternate within each")
	adaptive := flag.Bool("adaptive", false, "let sluice's control law adapt its limits (default: held wide open)")
	sizes := flag.String("sizes", "256,64KiB,4MiB", "body sizes, comma-separated")
	flag.Parse()

	var err error
	switch *role {
	case "store":
		err = runStore()
	case "bare":
		err = runBare(*addr)
	case "load":
		err = runLoad(loadSpec{Target: *target, Writers: *writers, Size: *size, Job: *job, Rate: *rate, Warmup: *warmup, Duration: *round})
	case "":
		if *quick {
			*round, *rounds, *warmup = 500*time.Millisecond, 3, 250*time.Millisecond
		}
		var bodySizes []int
		for s := range strings.SplitSeq(*sizes, ",") {
			n, perr := parseSize(strings.TrimSpace(s))
			if perr != nil {
				fmt.Fprintln(os.Stderr, "outofprocess: -sizes:", perr)
				os.Exit(2)
			}
			bodySizes = append(bodySizes, n)
		}
		err = harness(config{
			base: *base, baseBin: *baseBin, sluiceBin: *sluiceBin, quick: *quick, writers: *writers,
			round: *round, rounds: *rounds, warmup: *warmup, sizes: bodySizes, adaptive: *adaptive,
		})
	default:
		err = fmt.Errorf("unknown -role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outofprocess:", err)
		os.Exit(1)
	}
}

// parseSize reads 256, 64KiB or 4MiB.
func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1<<10, strings.TrimSuffix(s, "KiB")
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive byte count, NKiB or NMiB", s)
	}
	return n * mult, nil
}

// sizeName is parseSize's inverse, for the table.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}
