package bench

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

var (
	fullRun   = flag.Bool("full", false, "TestSideBySide: run the documented full scenario instead of the short one")
	updateDoc = flag.Bool("update", false, "TestSideBySide: write the results into ../BENCHMARKS.md and the plot into sidebyside.svg")
	reps      = flag.Int("reps", 0, "TestSideBySide: runs per contender, reported as medians (0: 1, or 5 with -full)")
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSideBySide runs every contender through the schedule and the fleet
// scenario on virtual time and prints the comparison. It asserts only that
// each run produced data: whether sluice meets its targets is reported, not
// asserted.
//
//	go test ./bench -run TestSideBySide -v -args -full -update
func TestSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("side-by-side comparison skipped in -short mode")
	}
	s := shortScenario
	if *fullRun {
		s = fullScenario
	}
	n := *reps
	if n <= 0 {
		n = 1
		if *fullRun {
			n = 5
		}
	}
	singles := make([][]singleResult, len(contenders))
	fleets := make([][]fleetResult, len(contenders))
	for i := range contenders {
		singles[i], fleets[i] = make([]singleResult, n), make([]fleetResult, n)
	}
	wall := time.Now()
	t.Run("contenders", func(t *testing.T) {
		for i, c := range contenders {
			for k := range n {
				t.Run(fmt.Sprintf("%s/%d", c.name, k), func(t *testing.T) {
					t.Parallel()
					synctest.Test(t, func(t *testing.T) {
						r, err := s.single(t.Context(), c)
						if err != nil {
							t.Fatal(err)
						}
						if r.writes.ok == 0 {
							t.Fatalf("%s acknowledged no write", c.name)
						}
						singles[i][k] = analyseSingle(c.name, s, r)
						f, err := s.fleet(t.Context(), c)
						if err != nil {
							t.Fatal(err)
						}
						fleets[i][k] = analyseFleet(c.name, s, f)
					})
				})
			}
		}
	})
	if t.Failed() {
		return
	}
	ms, mf := make([]singleResult, len(contenders)), make([]fleetResult, len(contenders))
	for i := range contenders {
		ms[i], mf[i] = medianSingle(singles[i]), medianFleet(fleets[i])
	}
	md := revision() + markdown(s, ms, mf)
	fmt.Printf("\n%s\nwall time %v on %d CPUs\n", md, time.Since(wall).Round(time.Second), runtime.NumCPU())
	if !*updateDoc {
		return
	}
	if err := os.WriteFile("sidebyside.svg", plotSVG(s, ms), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateSection("../BENCHMARKS.md", "sidebyside", md); err != nil {
		t.Fatal(err)
	}
}

// revision names the code measured: the commit, and whether the packages
// under test had uncommitted changes.
func revision() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	dirty, _ := exec.Command("git", "status", "--porcelain", "--", "../limiter", "../sidecar/classify", "../internal/storesim", ".").Output()
	var changed []string
	for _, line := range strings.Split(string(dirty), "\n") {
		if len(line) > 3 && !strings.HasSuffix(line, "sidebyside.svg") {
			changed = append(changed, strings.TrimSpace(line[3:]))
		}
	}
	note := ""
	if len(changed) > 0 {
		note = " plus uncommitted changes to " + strings.Join(changed, ", ")
	}
	return fmt.Sprintf("Measured on commit %s%s.\n\n", strings.TrimSpace(string(head)), note)
}

// updateSection replaces the text between <!-- name:begin --> and
// <!-- name:end --> in the file at path.
func updateSection(path, name, content string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := []byte("<!-- "+name+":begin -->\n"), []byte("<!-- "+name+":end -->")
	i, j := bytes.Index(doc, begin), bytes.Index(doc, end)
	if i < 0 || j < i {
		return fmt.Errorf("bench: %s has no %q … %q section", path, strings.TrimSpace(string(begin)), end)
	}
	var out bytes.Buffer
	out.Write(doc[:i+len(begin)])
	out.WriteString(content)
	if !strings.HasSuffix(content, "\n") {
		out.WriteByte('\n')
	}
	out.Write(doc[j:])
	return os.WriteFile(path, out.Bytes(), 0o644)
}
