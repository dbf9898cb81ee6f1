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
// measured in two phases (the machine is shared; only measurements taken
// side by side mean anything):
//
//	peak:    closed loop, every target at full speed, targets alternating
//	         within each round: writes/s, bytes/s, the proxy process's CPU
//	         per write, and p50/p99;
//	latency: open loop at half the bare proxy's peak rate of the same
//	         size, one generator alternating short blocks between the
//	         targets (see pacedSpec): what sluice adds to the bare proxy's
//	         p50/p99, pair of blocks by pair, as a median with its
//	         bootstrap interval, and a verdict against ≤ 200 µs that says
//	         "undecided" when the interval straddles it.
//
// A ratio to the bare proxy is the median of the rounds' ratios, each
// taken against the bare proxy's measurement of the same round. Variants:
// "+job", the writes carry X-Sluice-Job; "+dir", sluice runs with
// SLUICE_STATE_DIR (job records in bbolt). No process is pinned to a CPU
// and each keeps its default GOMAXPROCS: the same for every target.
//
// Bodies above 1 MiB stream (SLUICE_RETRY_BODY_MAX=1MiB, -retry-body-max),
// so the 4 MiB row is sluice's streamed path and the others its buffered
// one.
//
//	go run ./bench/outofprocess [-quick] [-base REV] [-adaptive] [-retry-body-max 1MiB] [-sizes 256,64KiB,4MiB] [-writers 32] [-round 1s] [-rounds 5] [-pairs 24] [-block 500ms] [-min-samples 300]
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/sidecar"
)

func main() {
	role := flag.String("role", "", "internal: store, bare, load or paced (the harness runs itself again with it)")
	addr := flag.String("upstream", "", "role bare: the store's URL")
	target := flag.String("target", "", "role load: the URL to write to")
	size := flag.Int("size", 256, "role load: body bytes")
	job := flag.String("job", "", "role load: X-Sluice-Job header, none if empty")
	rate := flag.Float64("rate", 0, "role paced: writes/s offered to each target")
	targets := flag.String("targets", "", "role paced: the URLs to write to, comma-separated, the bare proxy first")
	warmup := flag.Duration("warmup", 300*time.Millisecond, "warm-up before each measurement")

	quick := flag.Bool("quick", false, "a ~30 s run: shorter and fewer rounds, fewer variants")
	base := flag.String("base", "", "also build sluice at this git revision and measure it side by side (sluice@REV)")
	baseBin := flag.String("base-bin", "", "like -base, with a sluice binary built already (sluice@base)")
	sluiceBin := flag.String("sluice", "", "the sluice binary to measure; empty: build it from this module")
	writers := flag.Int("writers", 32, "concurrent writers (one connection each)")
	round := flag.Duration("round", time.Second, "one measurement (per target, per round)")
	rounds := flag.Int("rounds", 5, "rounds of the peak phase; targets alternate within each")
	pairs := flag.Int("pairs", 24, "latency phase: cycles of blocks, each target one block per cycle (one pair with the bare proxy's)")
	block := flag.Duration("block", 500*time.Millisecond, "latency phase: one target's block, at least (see -min-samples)")
	minSamples := flag.Int("min-samples", 300, "latency phase: writes per block, at least (the block grows to fit them)")
	adaptive := flag.Bool("adaptive", false, "let sluice's control law adapt its limits (default: held wide open)")
	sizes := flag.String("sizes", "256,64KiB,4MiB", "body sizes, comma-separated")
	retryBodyMax := flag.String("retry-body-max", "1MiB", "sluice's SLUICE_RETRY_BODY_MAX, in its syntax: larger bodies stream, smaller ones are buffered (32KiB makes 64 KiB bodies stream, 0 every body)")
	flag.Parse()

	var err error
	switch *role {
	case "store":
		err = runStore()
	case "bare":
		err = runBare(*addr)
	case "load":
		err = runLoad(loadSpec{Target: *target, Writers: *writers, Size: *size, Job: *job, Warmup: *warmup, Duration: *round})
	case "paced":
		err = runPaced(pacedSpec{Targets: strings.Split(*targets, ","), Writers: *writers, Size: *size, Rate: *rate,
			Block: *block, Cycles: *pairs, Warmup: *warmup})
	case "":
		if *pairs < 2 || *block <= 0 || *minSamples < 1 {
			fmt.Fprintln(os.Stderr, "outofprocess: -pairs must be at least 2, -block positive, -min-samples at least 1")
			os.Exit(2)
		}
		if *writers < 1 || *rounds < 1 || *round <= 0 || *warmup < 0 {
			fmt.Fprintln(os.Stderr, "outofprocess: -writers and -rounds must be at least 1, -round positive, -warmup at least 0")
			os.Exit(2)
		}
		if *quick {
			// Shorter defaults; a flag given on the command line stays.
			set := make(map[string]bool)
			flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
			for name, v := range map[string]string{"round": "500ms", "rounds": "3", "warmup": "250ms",
				"pairs": "8", "block": "250ms", "min-samples": "100"} {
				if !set[name] {
					_ = flag.Set(name, v)
				}
			}
		}
		// Sizes are parsed as sluice parses SLUICE_RETRY_BODY_MAX, so that
		// the harness and sluice read "512Ki" or "1MB" alike.
		var bodySizes []int
		for s := range strings.SplitSeq(*sizes, ",") {
			var n sidecar.ByteSize
			if perr := n.UnmarshalText([]byte(s)); perr != nil || n < 1 || n > maxBodySize {
				fmt.Fprintf(os.Stderr, "outofprocess: -sizes %q: want sizes from 1 byte to %s, e.g. 256,64KiB,4MiB\n", s, sizeName(maxBodySize))
				os.Exit(2)
			}
			bodySizes = append(bodySizes, int(n))
		}
		var rbm sidecar.ByteSize
		if perr := rbm.UnmarshalText([]byte(*retryBodyMax)); perr != nil {
			fmt.Fprintf(os.Stderr, "outofprocess: -retry-body-max %q: %v\n", *retryBodyMax, perr)
			os.Exit(2)
		}
		err = harness(config{
			base: *base, baseBin: *baseBin, sluiceBin: *sluiceBin, quick: *quick, writers: *writers,
			round: *round, rounds: *rounds, warmup: *warmup, sizes: bodySizes, adaptive: *adaptive,
			pairs: *pairs, block: *block, minSamples: *minSamples, retryBodyMax: *retryBodyMax,
		})
	default:
		err = fmt.Errorf("unknown -role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outofprocess:", err)
		os.Exit(1)
	}
}

// maxBodySize bounds -sizes: each load generator holds its body in
// memory, and 32 writers send it at once.
const maxBodySize = 256 << 20

// sizeName names a body size for the table: 256 B, 64 KiB, 4 MiB.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}
