package bench

import (
	"fmt"
	"testing"
	"testing/synctest"
)

// TestTwoJobsScopes runs the "two jobs, two scopes" benchmark (see
// twojobs_scopes.go) for every contender on virtual time and prints the
// table; with -update it writes it into ../BENCHMARKS.md. Like
// TestSideBySide it asserts only that each run produced data: the
// figures are reported, and sluice's target (B keeps 95%) is asserted by
// sidecar's TestTwoJobsTwoScopes.
//
//	go test ./bench -run TestTwoJobsScopes -v -args -update
func TestTwoJobsScopes(t *testing.T) {
	if testing.Short() {
		t.Skip("two-jobs benchmark skipped in -short mode")
	}
	cs := twojobsContenders()
	rows := make([]twojobsRow, len(cs))
	for i, c := range cs {
		rows[i].name = c.name
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, _, _, err := runTwoJobs(t.Context(), c, false)
				if err != nil {
					t.Fatal(err)
				}
				rows[i].bAlone = b
			})
			synctest.Test(t, func(t *testing.T) {
				b, a, thr, err := runTwoJobs(t.Context(), c, true)
				if err != nil {
					t.Fatal(err)
				}
				rows[i].bTogether, rows[i].aTogether, rows[i].throttled = b, a, thr
			})
			if rows[i].bAlone <= 0 {
				t.Errorf("%s: job B acknowledged nothing alone", c.name)
			}
		})
	}
	if t.Failed() {
		return
	}
	md := revision() + twojobsMarkdown(rows)
	fmt.Printf("\n%s\n", md)
	if *updateDoc {
		if err := updateSection("../BENCHMARKS.md", "twojobs-scopes", md); err != nil {
			t.Fatal(err)
		}
	}
}
