// Package e2e runs fleet mode for real: eight sluice processes (the
// binary, built from this module) share one throttling store on loopback
// through a real redis-server, which the test stops (SIGSTOP), then kills
// and restarts empty, in the middle of the load.
//
// The test is built only with the e2e build tag, so that a plain go test
// stays fast, and skips when redis-server is not installed (it fails
// instead with SLUICE_REQUIRE_REDIS set, as .ci/fleet.sh sets it):
//
//	go test -tags e2e -count=1 -v ./fleet/e2e/
//
// Everything listens on 127.0.0.1 on free ports; every process is stopped
// by PID when the test ends.
package e2e
