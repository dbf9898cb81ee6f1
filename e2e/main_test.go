package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if built.dir != "" {
			os.RemoveAll(built.dir)
		}
		os.Exit(code)
	}))
}

// built is the sluice binary, built once per run of the test binary.
var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// sluiceBinary builds sluice from this module (go build) the first time it
// is called and returns the binary's path.
func sluiceBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			built.err = fmt.Errorf("e2e: building sluice needs the go tool: %w", err)
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "sluice-e2e-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "sluice")
		out, err := exec.Command(goTool, "build", "-o", built.path, "github.com/sluice-dev/sluice").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("e2e: go build sluice: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}
