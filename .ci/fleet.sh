#!/usr/bin/env bash
# Fleet mode against a real Redis: installs redis-server from Debian's
# packages when it is missing, then runs the fleet scripts' tests and the
# fleet end-to-end test, which start redis-server themselves on 127.0.0.1
# with a random port and a temporary directory and stop it by PID. With
# SLUICE_REQUIRE_REDIS set, a test that finds no redis-server fails instead
# of skipping, so CI cannot pass without having run them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  # --no-install-recommends: no service wrappers are needed; the package
  # starts no server in a container, and the tests use none that might run.
  $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
dpkg-query -W redis-server 2>/dev/null | sed 's/^/== using /' || true

export SLUICE_REQUIRE_REDIS=1
echo "== go test -race ./fleet/..."
go test -race -count=1 -timeout 10m ./fleet/...

# Eight real sidecars and a real Redis in front of one throttling store,
# Redis stopped, then killed and restarted empty, mid-load (about 70s).
# The shares and goodput compared are printed on the RESULT lines.
echo "== go test -tags e2e ./fleet/e2e/"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
go test -tags e2e -count=1 -v -timeout 10m ./fleet/e2e/ 2>&1 | tee "$log" ||
  status=${PIPESTATUS[0]}
grep 'RESULT' "$log" | sed 's/^ */== /' || true
exit "$status"
