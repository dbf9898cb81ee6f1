#!/usr/bin/env bash
# Hardening checks for CI (issue 8), called by .ci/run after the test suite:
#
#  1. every fuzz target in the module runs for FUZZTIME (default 4s) on top
#     of its seed corpus; targets are listed with `go test -list`, so a new
#     Fuzz* function is picked up without editing this script. All targets
#     run; the failures are listed at the end. A crasher is written by the
#     fuzzer to <package>/testdata/fuzz/<Target>/: commit it, with the fix,
#     so that it stays a regular test case. A target that fails with only
#     Go's fuzztime-deadline race (go.dev/issue/75804, no failing input) is
#     run once more.
#  2. govulncheck ./... (golang.org/x/vuln) fails on vulnerabilities that the
#     code can reach (its exit status 3). When the vulnerability database
#     (https://vuln.go.dev) cannot be reached, this step says so loudly and
#     is skipped; set VULNDB=file:///path/to/mirror to use an offline copy,
#     or HARDEN_REQUIRE_VULNCHECK=1 to fail instead of skipping.
#
# Budget: about 25 targets × 4 s plus the instrumented builds stays under
# three minutes on two cores. The soak test is not run here:
#   go test ./faults -run TestSoak -soak -timeout 20m -v
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME="${FUZZTIME:-4s}"
start=$(date +%s)

echo "== fuzz targets (${FUZZTIME} each)"
# `go test -list` prints each package's matching names, then "ok <pkg>".
targets=()
names=()
while IFS= read -r line; do
  case "$line" in
    Fuzz*) names+=("$line") ;;
    ok*)
      pkg=$(awk '{print $2}' <<<"$line")
      for n in "${names[@]}"; do targets+=("$pkg $n"); done
      names=()
      ;;
  esac
done < <(go test -list '^Fuzz' ./... 2>/dev/null)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets found: go test -list failed?"
  go test -list '^Fuzz' ./... # show why
  exit 1
fi
echo "${#targets[@]} targets"

# deadlineFlake: Go's fuzz coordinator (before Go 1.27, go.dev/issue/75804)
# can fail a target with a bare "context deadline exceeded" as -fuzztime
# ends, on a loaded machine, without any input to blame. A real finding
# always writes its input ("Failing input written to ...") or reports a
# panic or a test failure; only the bare deadline is retried, once.
deadlineFlake() {
  grep -q 'context deadline exceeded' <<<"$1" &&
    ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' <<<"$1"
}

failed=()
for t in "${targets[@]}"; do
  pkg=${t% *}
  name=${t#* }
  t0=$(date +%s)
  ok=0
  for try in 1 2; do
    if out=$(go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" 2>&1); then
      ok=1
      break
    fi
    if [ "$try" = 1 ] && deadlineFlake "$out"; then
      echo "again $name ($pkg): a bare fuzztime deadline, no failing input (go.dev/issue/75804)"
      continue
    fi
    break
  done
  if [ "$ok" = 1 ]; then
    echo "ok    $name ($pkg) $(( $(date +%s) - t0 ))s"
  else
    echo "FAIL  $name ($pkg)"
    grep -v '^fuzz: elapsed' <<<"$out" | tail -25 | sed 's/^/      /'
    failed+=("$name ($pkg)")
  fi
done

echo "== govulncheck ./..."
vulnfail=0
GOBIN_DIR="$(go env GOPATH)/bin"
if ! command -v govulncheck >/dev/null && [ ! -x "$GOBIN_DIR/govulncheck" ]; then
  go install golang.org/x/vuln/cmd/govulncheck@latest
fi
VULNCHECK=$(command -v govulncheck || echo "$GOBIN_DIR/govulncheck")
dbflag=()
if [ -n "${VULNDB:-}" ]; then dbflag=(-db "$VULNDB"); fi
set +e
vout=$("$VULNCHECK" "${dbflag[@]}" ./... 2>&1)
vcode=$?
set -e
echo "$vout" | tail -40
case "$vcode" in
  0) echo "govulncheck: no reachable vulnerabilities" ;;
  3) echo "govulncheck: REACHABLE VULNERABILITIES (see above)"; vulnfail=1 ;;
  *)
    if grep -qE 'fetching vulnerabilities|vuln\.go\.dev|no such host|dial tcp|i/o timeout|connection refused' <<<"$vout"; then
      echo "############################################################"
      echo "# govulncheck SKIPPED: the vulnerability database could not  #"
      echo "# be reached from this network (see the error above).        #"
      echo "# Nothing was checked. Set VULNDB=file:///mirror to use an   #"
      echo "# offline copy of vuln.go.dev.                               #"
      echo "############################################################"
      if [ "${HARDEN_REQUIRE_VULNCHECK:-0}" = 1 ]; then vulnfail=1; fi
    else
      echo "govulncheck failed with status $vcode"
      vulnfail=1
    fi
    ;;
esac

echo "== hardening done in $(( $(date +%s) - start ))s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that failed:"
  printf '  %s\n' "${failed[@]}"
fi
if [ "${#failed[@]}" -gt 0 ] || [ "$vulnfail" -ne 0 ]; then
  exit 1
fi
