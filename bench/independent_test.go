package bench

import (
	"flag"
	"fmt"
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
	indepTrc  = flag.String("indep-trace", "", "TestIndependentSideBySide: print every limit change of one sluice sidecar in each run: joiner (the late one) or iK (the K-th, from i0)")
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
			if err := checkTraceID(*indepTrc, ib.n); err != nil {
				t.Fatalf("-indep-trace: %v", err)
			}
			ib.trace, ib.traceID = os.Stdout, *indepTrc
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

// checkTraceID reports whether id names a sidecar of n: joiner, or iK
// with K below n.
func checkTraceID(id string, n int) error {
	if id == "joiner" {
		return nil
	}
	k, err := strconv.Atoi(strings.TrimPrefix(id, "i"))
	if !strings.HasPrefix(id, "i") || err != nil || k < 0 || k >= n {
		return fmt.Errorf("%q names no sidecar of %d: want joiner, or i0 to i%d", id, n, n-1)
	}
	return nil
}

func TestCheckTraceID(t *testing.T) {
	for _, tc := range []struct {
		id string
		n  int
		ok bool
	}{
		{"joiner", 4, true}, {"i0", 4, true}, {"i3", 4, true},
		{"i4", 4, false}, {"i-1", 4, false}, {"3", 4, false}, {"ix", 4, false}, {"", 4, false},
	} {
		if err := checkTraceID(tc.id, tc.n); (err == nil) != tc.ok {
			t.Errorf("checkTraceID(%q, %d) = %v, want ok %v", tc.id, tc.n, err, tc.ok)
		}
	}
}
