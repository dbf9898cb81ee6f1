// Package deploytest tests that what sluice ships beside its code agrees
// with the code: the Dockerfile (its build command, run as written, makes a
// static binary stamped with the version; its Go is go.mod's toolchain),
// the files under deploy/ (Kubernetes manifests against the configuration
// and the admin API; alerting rules and the Grafana dashboard against the
// metrics a running sluice exports; the PrometheusRule against the plain rule
// file; docs/runbook.md against the alerts) and the sidecar docs/deploy.md
// tells the reader to add, checked as the manifests are.
//
// It has no code of its own, and uses sluice only through the exported API
// of package sidecar, so that deploy/ itself stays free of Go. The checks
// that need promtool or kubectl run in .ci/deploy-checks.sh.
package deploytest
