#!/usr/bin/env bash
# Checks of deploy/ that need tools beyond Go: the alerting rules and their
# unit tests with promtool, and the kustomizations with kubectl when present.
# Runs on a clean Debian machine as root without a TTY; installs promtool
# from Debian's prometheus package if it is missing (the package starts no
# service in a container; only /usr/bin/promtool is used).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version | head -1

echo "== promtool check rules"
promtool check rules deploy/prometheus/sluice-rules.yml

echo "== promtool test rules"
# Relative to the test file's directory, as promtool resolves rule_files.
(cd deploy/prometheus && promtool test rules sluice-rules.test.yml)

echo "== dashboard queries parsed by promtool"
DEPLOY_CHECKS_REQUIRE_PROMTOOL=1 go test -count=1 -run '^TestDeployDashboardQueriesParse$' ./deploytest

if command -v kubectl >/dev/null 2>&1; then
  for dir in deploy/kubernetes deploy/kubernetes/legacy; do
    echo "== kubectl kustomize $dir"
    kubectl kustomize "$dir" >/dev/null
  done
else
  echo "== kubectl not found: kustomize rendering skipped (the Go manifest tests still run)"
fi
