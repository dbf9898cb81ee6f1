//go:build !e2e

package e2e

import "testing"

// TestFleetEndToEnd stands for the test of eight real sidecars and a real
// Redis, built only with the e2e tag.
func TestFleetEndToEnd(t *testing.T) {
	t.Skip("built only with -tags e2e: go test -tags e2e -count=1 -v ./fleet/e2e/ (.ci/fleet.sh runs it)")
}
