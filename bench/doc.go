// Package bench holds sluice's benchmarks. The side-by-side comparison
// (TestSideBySide) drives sluice's real limiter and classifier, go-retryablehttp
// with its defaults, a static token bucket, the AWS SDK's adaptive retry mode
// and a reimplementation of Vector's ARC against the same simulated store
// (internal/storesim), on the same capacity schedule, with the same greedy
// loader, on virtual time under testing/synctest. TestFleetSideBySide runs
// fleets of 8 to 256 sidecars on one store: sluice in fleet mode (its
// Redis simulated in process by miniredis), sluice's sidecars alone and
// the peers. See BENCHMARKS.md.
//
// The non-test files are the harness: contenders, the recorder and its
// analysis, the report and the SVG plot. They read the clock through the
// time package only, so under synctest everything runs on virtual time.
package bench
