package bench

import (
	"flag"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

var (
	fleetFull = flag.Bool("fleet", false, "TestFleetSideBySide: run N = 8, 64 and 256 (default: N = 8 only)")
	fleetReps = flag.Int("fleet-reps", 0, "TestFleetSideBySide: runs per contender and size, reported as medians (0: 1, or 3 with -fleet)")
)

// TestFleetSideBySide runs the fleet benchmark: sluice in fleet mode
// (unknown and configured capacity), sluice's sidecars alone and the
// peers, N sidecars on one store, on virtual time. Like TestSideBySide it
// asserts only that each run produced data; the targets are reported.
//
//	go test ./bench -run TestFleetSideBySide -v -timeout 60m -args -fleet -update
func TestFleetSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet benchmark skipped in -short mode")
	}
	sizes := []int{8}
	if *fleetFull {
		sizes = fleetBenchSizes
	}
	reps := *fleetReps
	if reps <= 0 {
		reps = 1
		if *fleetFull {
			reps = 3
		}
	}
	var mu sync.Mutex
	rows := map[int][]fleetResultRow{}
	wall := time.Now()
	cs := fleetContenders()
	for _, n := range sizes {
		for _, fc := range cs {
			modes := []bool{false}
			if fc.fleet {
				modes = []bool{false, true}
			}
			for _, configured := range modes {
				runs := make([]fleetResultRow, reps)
				for k := range reps {
					t.Run(fmt.Sprintf("N=%d/%s/configured=%v/%d", n, fc.name, configured, k), func(t *testing.T) {
						synctest.Test(t, func(t *testing.T) {
							row, err := runFleetBench(t.Context(), newFleetBench(n, configured), fc)
							if err != nil {
								t.Fatal(err)
							}
							if row.share <= 0 {
								t.Fatalf("%s acknowledged nothing", fc.name)
							}
							runs[k] = row
						})
					})
				}
				if t.Failed() {
					return
				}
				mu.Lock()
				rows[n] = append(rows[n], medianFleetRow(runs))
				mu.Unlock()
			}
		}
	}
	if t.Failed() {
		return
	}
	md := revision() + fleetMarkdown(sizes, rows)
	fmt.Printf("\n%s\nwall time %v on %d CPUs\n", md, time.Since(wall).Round(time.Second), runtime.NumCPU())
	if !*updateDoc || !*fleetFull {
		return
	}
	if err := updateSection("../BENCHMARKS.md", "fleet", md); err != nil {
		t.Fatal(err)
	}
}
