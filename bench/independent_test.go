package bench

import (
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

var (
	indepFull = flag.Bool("indep", false, "TestIndependentSideBySide: run N = 4, 8, 32 and 64 (default: N = 8 only)")
	indepReps = flag.Int("indep-reps", 0, "TestIndependentSideBySide: runs per contender and size, reported as medians (0: 1, or 3 with -indep)")
	indepOnly = flag.String("indep-contenders", "", "TestIndependentSideBySide: comma-separated contenders to run (default: all)")
	indepN    = flag.String("indep-n", "", "TestIndependentSideBySide: comma-separated sizes N to run, of 4, 8, 32, 64 (default: see -indep)")
	indepTrc  = flag.String("indep-trace", "", "TestIndependentSideBySide: in each run, print one sidecar's seconds (goodput, attempts, throttles) and, for sluice, its every limit change: joiner (the late one) or iK (the K-th, from i0)")
)

// TestIndependentSideBySide runs the independent-sidecars benchmark: N
// sidecars of each contender adapting alone on one store, on virtual
// time. Like TestSideBySide it asserts only that each run produced data;
// the targets are reported.
//
//	go test ./bench -run TestIndependentSideBySide -v -timeout 60m -args -indep -update
func TestIndependentSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("independent-sidecars benchmark skipped in -short mode")
	}
	sizes := []independentBench{independentSizes[1]}
	if *indepFull {
		sizes = independentSizes
	}
	if *indepN != "" {
		sizes = nil
		for _, f := range strings.Split(*indepN, ",") {
			n, _ := strconv.Atoi(f)
			for _, ib := range independentSizes {
				if ib.n == n {
					sizes = append(sizes, ib)
				}
			}
		}
	}
	reps := *indepReps
	if reps <= 0 {
		reps = 1
		if *indepFull {
			reps = 3
		}
	}
	cs := contenders
	if *indepOnly != "" {
		cs = nil
		for _, name := range strings.Split(*indepOnly, ",") {
			cs = append(cs, contenderNamed(t, name))
		}
	}
	rows := map[int][]independentRow{}
	wall := time.Now()
	for _, ib := range sizes {
		if *indepTrc != "" {
			id, err := traceID(*indepTrc, ib.n)
			if err != nil {
				t.Fatalf("-indep-trace: %v", err)
			}
			ib.trace = tracer{w: os.Stdout, id: id}
		}
		for _, c := range cs {
			runs := make([]independentRow, reps)
			for k := range reps {
				t.Run(fmt.Sprintf("N=%d/%s/%d", ib.n, c.name, k), func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						row, err := runIndependent(t.Context(), ib, c)
						if err != nil {
							t.Fatal(err)
						}
						if row.share <= 0 {
							t.Fatalf("%s acknowledged nothing", c.name)
						}
						runs[k] = row
					})
				})
			}
			if t.Failed() {
				return
			}
			rows[ib.n] = append(rows[ib.n], medianIndependent(runs))
		}
	}
	md := revision() + independentMarkdown(sizes, rows)
	fmt.Printf("\n%s\nwall time %v on %d CPUs\n", md, time.Since(wall).Round(time.Second), runtime.NumCPU())
	if !*updateDoc || !*indepFull || *indepOnly != "" || *indepN != "" {
		return
	}
	if err := updateSection("../BENCHMARKS.md", "independent", md); err != nil {
		t.Fatal(err)
	}
}

// traceID is the id of the sidecar of n that -indep-trace's value names:
// joiner (the last one), or iK with K below n.
func traceID(flagValue string, n int) (string, error) {
	if flagValue == "joiner" {
		return sidecarID(n - 1), nil
	}
	k, err := strconv.Atoi(strings.TrimPrefix(flagValue, "i"))
	if !strings.HasPrefix(flagValue, "i") || err != nil || k < 0 || k >= n {
		return "", fmt.Errorf("%q names no sidecar of %d: want joiner, or i0 to i%d", flagValue, n, n-1)
	}
	return sidecarID(k), nil
}

func TestTraceID(t *testing.T) {
	for _, tc := range []struct {
		flag string
		n    int
		want string // "" for an error
	}{
		{"joiner", 4, "i3"}, {"i0", 4, "i0"}, {"i3", 4, "i3"}, {"i03", 4, "i3"},
		{"i4", 4, ""}, {"i-1", 4, ""}, {"3", 4, ""}, {"ix", 4, ""}, {"i3x", 4, ""}, {"", 4, ""},
	} {
		got, err := traceID(tc.flag, tc.n)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("traceID(%q, %d) = %q, %v; want %q", tc.flag, tc.n, got, err, tc.want)
		}
	}
}

// TestAnalyseIndependent checks the figures of a recorded run whose
// sidecars' goodputs are known: four sidecars with a fair share of
// 100/s, the last joining at 15 s.
func TestAnalyseIndependent(t *testing.T) {
	fb := independentBench{n: 4, writers: 16}.fleetBench()
	buckets := bucketOf(fb.duration)
	r := &run{capacity: make([]float64, buckets), total: newSeries(buckets), clients: map[string]series{}}
	// rate returns each sidecar's goodput in requests/s at bucket u.
	rate := func(i, u int) float64 {
		at := time.Duration(u) * bucketWidth
		switch i {
		case 0:
			return 100
		case 1: // below 80% of the fair share for the first 4 s of the fairness window
			if at >= fb.fairFrom && at < fb.fairFrom+4*time.Second {
				return 50
			}
			return 110
		case 2:
			return 120
		default: // the joiner: 40/s for 2 s, then 90/s
			switch {
			case at < fb.joinAt:
				return 0
			case at < fb.joinAt+2*time.Second:
				return 40
			}
			return 90
		}
	}
	for i := range fb.n {
		s := newSeries(buckets)
		for u := range buckets {
			if v := rate(i, u); v > 0 {
				n := int64(v * bucketWidth.Seconds())
				s.attempts[u], s.accepted[u] = n, float64(n)
				r.total.attempts[u] += n
				r.total.accepted[u] += float64(n)
			}
		}
		r.clients[sidecarID(i)] = s
	}
	for u := range buckets {
		r.capacity[u] = fb.capacity()
	}
	row := analyseIndependent(fb, "x", r)
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	// i1 over [25 s, 35 s): 4 s at 50, 6 s at 110.
	if want := (4*50 + 6*110) / 10.0 / 100; !near(row.slowest, want) || !near(row.fastest, 1.2) {
		t.Errorf("slowest %v, fastest %v: want %v and 1.2", row.slowest, row.fastest, want)
	}
	// The first 1 s window at 80/s or more starts at 16.8 s: 0.2 s at
	// 40/s, 0.8 s at 90/s.
	if !row.join.ok || row.join.d != 1800*time.Millisecond {
		t.Errorf("late joiner at 80%% after %v: want 1.8s", row.join)
	}
	// 1 s windows starting from 25 s to 34 s (91) for each of i0, i1, i2:
	// i1's are below 80/s when more than half of one is at its 50/s,
	// those starting from 25 s to 28.4 s, 35 of them (at 28.5 s it gets
	// exactly 80/s).
	if want := 35.0 / (3 * 91); !near(row.othersLow, want) {
		t.Errorf("others below 80%%: %v, want %v", row.othersLow, want)
	}
}
