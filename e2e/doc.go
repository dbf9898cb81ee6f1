// Package e2e puts real stores from Debian's packages on sluice's write
// path: VictoriaMetrics as the store (made to throttle with
// -maxConcurrentInserts=1 -insert.maxQueueDuration=10ms), nginx in front of
// it as a gateway quota (limit_req, 429 + Retry-After), and vmagent as a
// real bulk loader with an on-disk queue. The tests prove with exact counts
// read back from the store that sluice turns a throttling store into a
// completed load with nothing lost, that it honours a gateway's
// Retry-After, that it cancels a stalled job and deletes its series on the
// real store, that a SIGKILL in the middle of a load loses nothing, that a
// quiet stream is idle and never cancelled, and that hold mode carries
// every write over a store outage and a gateway's quota window.
//
// The package's non-test code is the measuring equipment, usable on its
// own: [Loader], a bulk loader with many writers that pushes numbered
// samples to VictoriaMetrics' /api/v1/import and records every answer; and
// [Export], which reads samples back from /api/v1/export and counts them
// exactly. Both are tested without any store installed.
//
// The tests against the real servers are built only with the e2e build tag
// and skip, naming the missing binary, when victoria-metrics, vmagent or
// nginx are not installed:
//
//	go test -tags e2e -count=1 -v ./e2e/
//
// .ci/e2e.sh installs the packages and runs them; docs/e2e.md explains how
// to run them locally. Every server listens on 127.0.0.1 on a free port,
// keeps its data in a test's temporary directory and is stopped by PID when
// the test ends, failed or not.
package e2e
