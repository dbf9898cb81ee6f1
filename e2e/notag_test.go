//go:build !e2e

package e2e

import "testing"

// TestRealStores stands for the tests against real VictoriaMetrics, nginx
// and vmagent, which are built only with the e2e tag so that a plain
// `go test ./...` stays fast.
func TestRealStores(t *testing.T) {
	t.Skip("e2e: the real-store tests are built only with -tags e2e: run .ci/e2e.sh, or install victoria-metrics and nginx and run go test -tags e2e -count=1 -v ./e2e/ (docs/e2e.md)")
}
