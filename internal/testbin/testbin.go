// Package testbin builds the sluice binary for the tests that run it as a
// separate process (the e2e suites, faults), once per test binary, so that
// each of them tests what `go build` makes of this module and none of them
// carries its own copy of the build.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// Sluice builds the module's root package the first time it is called and
// returns the binary's path; later calls return the same path. A failed
// build fails t.
func Sluice(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		// The go tool of the toolchain running the tests, so that the
		// binary is built by the same Go as the test.
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			if goTool, err = exec.LookPath("go"); err != nil {
				built.err = fmt.Errorf("testbin: building sluice needs the go tool: %w", err)
				return
			}
		}
		if built.dir, built.err = os.MkdirTemp("", "sluice-bin-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "sluice")
		out, err := exec.Command(goTool, "build", "-o", built.path, "github.com/sluice-dev/sluice").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("testbin: go build sluice: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// Cleanup removes the binary, if one was built. Call it once from TestMain
// after the tests have run.
func Cleanup() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}
