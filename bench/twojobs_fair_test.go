package bench

import (
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

// TestTwoJobsFair runs the two-jobs cases (twojobs_fair.go) for sluice's
// fair queue, its single queue and each peer run per job, on virtual
// time, and prints the table. Like TestSideBySide it asserts only that
// each run produced data; the targets are asserted by the limiter's
// synctest scenarios (limiter/fair_test.go).
//
//	go test ./bench -run TestTwoJobsFair -v -args -full -reps 3 -update
func TestTwoJobsFair(t *testing.T) {
	if testing.Short() {
		t.Skip("two-jobs comparison skipped in -short mode")
	}
	s := shortScenario
	if *fullRun {
		s = fullScenario
	}
	n := max(*reps, 1)
	sts := twoJobsStrategies()
	runs := make([][]twoJobsResult, len(sts))
	wall := time.Now()
	t.Run("strategies", func(t *testing.T) {
		for i, st := range sts {
			runs[i] = make([]twoJobsResult, n)
			for k := range n {
				t.Run(fmt.Sprintf("%s/%d", st.name, k), func(t *testing.T) {
					t.Parallel()
					synctest.Test(t, func(t *testing.T) {
						r, err := s.runTwoJobsAll(t.Context(), st)
						if err != nil {
							t.Fatal(err)
						}
						if r.equalTotal == 0 || r.weightedTotal == 0 || r.liveGoodput[0] == 0 {
							t.Fatalf("%s: a case acknowledged no write: %+v", st.name, r)
						}
						runs[i][k] = r
					})
				})
			}
		}
	})
	if t.Failed() {
		return
	}
	rs := make([]twoJobsResult, len(sts))
	for i := range sts {
		rs[i] = medianTwoJobs(runs[i])
	}
	md := revision() + twoJobsMarkdown(s, rs, n)
	fmt.Printf("\n%s\nwall time %v on %d CPUs\n", md, time.Since(wall).Round(time.Second), runtime.NumCPU())
	if *updateDoc {
		if err := updateSection("../BENCHMARKS.md", "twojobs", md); err != nil {
			t.Fatal(err)
		}
	}
}
