#!/usr/bin/env bash
# End-to-end tests against real stores: installs VictoriaMetrics
# (which ships vmagent) and nginx from Debian's packages when they are
# missing, then runs the e2e tests, which start each server themselves on
# 127.0.0.1 with its data in a temporary directory and stop it by PID.
# Runs on a clean Debian machine as root without a TTY; the packages start
# no service in a container, and the tests use none that might be running.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v vmagent >/dev/null 2>&1 || need+=(victoria-metrics)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
  echo "== installing ${pkgs}(Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  # --no-install-recommends: no service wrappers or docs are needed.
  $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
export PATH="$PATH:/usr/sbin"
dpkg-query -W victoria-metrics nginx 2>/dev/null | sed 's/^/== using /' || true

# Real stores gate CI: exact counts (nothing lost, nothing twice, never a
# 400), the store's 503 share at least 10x lower than direct (5x for
# vmagent's single run), goodput
# through sluice at least the direct loads' (four each, together), nginx's
# quota within 10% with Retry-After honoured, vmagent's goodput at least 0.9 times
# direct, the stalled job cancelled and cleaned up on the real store,
# SIGKILL mid-load, the default job idle (never cancelled) while vmagent's
# loader is quiet, a 30s store outage and a 20s quota window without loss
# under hold mode. The numbers compared are printed on the RESULT lines.
# A test that finds a server missing fails instead of skipping: the
# packages above are installed, and CI must not pass without the tests
# that need them (a package that stopped shipping vmagent would otherwise
# skip the vmagent tests in silence).
export SLUICE_REQUIRE_E2E=1
# -parallel 4: the store-outage and quota-window runs (the only parallel
# tests) spend their time waiting for an outage or a window to end, and
# would otherwise go two at a time on two cores.
echo "== go test -tags e2e ./e2e/"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
go test -tags e2e -count=1 -v -parallel 4 -timeout 15m ./e2e/... 2>&1 | tee "$log" ||
  status=${PIPESTATUS[0]}
grep 'RESULT' "$log" | sed 's/^ */== /' || true
exit "$status"
