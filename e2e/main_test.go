package e2e

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/internal/testbin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testbin.Cleanup()
		os.Exit(code)
	}))
}

// sluiceBinary is the sluice command built from this module, once.
func sluiceBinary(t testing.TB) string { return testbin.Sluice(t) }
