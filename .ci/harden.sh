#!/usr/bin/env bash
# Hardening checks for CI, called by .ci/run after the test suite:
#
#  1. every fuzz target in the module runs for FUZZTIME (default 2s) on top
#     of its seed corpus; targets are listed with `go test -list`, so a new
#     Fuzz* function is picked up without editing this script. All targets
#     run; the failures are listed at the end. A crasher is written by the
#     fuzzer to <package>/testdata/fuzz/<Target>/: commit it, with the fix,
#     so that it stays a regular test case. A target that fails with only
#     Go's fuzztime-deadline race (go.dev/issue/75804, no failing input) is
#     run once more.
#  2. govulncheck ./... against a vulnerability database built here from
#     the golang.org/x/vulndb module at VULNDB_VERSION, which the Go module
#     proxy serves like any module: no other network is needed. It fails on
#     a vulnerability the code can reach (govulncheck's exit status 3) and
#     on anything that keeps the check from running (the database cannot be
#     downloaded, built or validated, or the scan errors): a check that did
#     not run is not a pass. The database is built once per version into
#     VULNDB_CACHE and reused. docs/reliability.md ("Vulnerability
#     database") says how fresh it is and how to update it.
#
# Budget: 28 targets took 272 s at 4 s each on a slow day's two cores, the
# instrumented builds most of it, and pushed .ci/run past its 20 minutes:
# at 2 s each the seed corpora still run whole, and a longer search is a
# FUZZTIME away. The database adds about a minute the first time a
# version is built, then nothing. The soak test is not run here:
#   go test ./faults -run TestSoak -soak -timeout 20m -v
set -euo pipefail
cd "$(dirname "$0")/.."

# The vulnerability data: the pseudo-version's date is how fresh it is.
# Update with the output of `go list -m golang.org/x/vulndb@latest`.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
# The scanner: the newest golang.org/x/vuln release at the time, for Go 1.26.
GOVULNCHECK_VERSION=v1.10.0
VULNDB_CACHE="${VULNDB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}"

# go.mod's toolchain line names the Go release sluice is built and tested
# with, and govulncheck judges the standard library by the go command's
# version. The machine's go may be older and default to GOTOOLCHAIN=local
# (in its go.env); auto lets it run the named release, fetched from the
# module proxy. A GOTOOLCHAIN set in the environment still wins.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

# buildVulndb builds the v1 database (the layout govulncheck -db file://
# reads: index/{db,modules,vulns}.json and ID/<id>.json, each also gzipped)
# into $1. The module holds the advisories as OSV files (data/osv) and
# cmd/indexdb, which writes the database from a directory of OSV files.
# cmd/gendb, what vuln.go.dev is built with, also dates each entry from the
# git history, which a module download does not have: the entries keep the
# zero modified time of the files, so cmd/checkdb refuses them; the date to
# go by is VULNDB_VERSION's. The database appears at $1 only complete: it is
# built beside it and renamed into place.
buildVulndb() {
  local dest=$1 work src n_osv n_db
  mkdir -p "$(dirname "$dest")" || return 1
  work=$(mktemp -d "$dest.tmp.XXXXXX") || return 1
  # Outside any module, so that nothing touches sluice's go.mod and go.sum.
  src=$(cd "$work" && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  if [ -z "$src" ] || [ ! -d "$src/data/osv" ]; then
    echo "cannot download golang.org/x/vulndb@$VULNDB_VERSION from the module proxy"
    (cd "$work" && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION") | grep '"Error"' || true
    rm -rf "$work"
    return 1
  fi
  if ! (cd "$work" && GOBIN="$work/bin" go install "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION"); then
    echo "cannot build golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION"
    rm -rf "$work"
    return 1
  fi
  if ! "$work/bin/indexdb" -vulns "$src/data/osv" -out "$work/db"; then
    echo "indexing $src/data/osv failed"
    rm -rf "$work"
    return 1
  fi
  # An empty or partial database would pass every scan: every advisory of
  # the module must be in it, and the indexes too.
  n_osv=$(find "$src/data/osv" -name 'GO-*.json' | wc -l)
  n_db=$(find "$work/db/ID" -name 'GO-*.json' | wc -l)
  if [ "$n_osv" -eq 0 ] || [ "$n_db" -ne "$n_osv" ] ||
    [ ! -s "$work/db/index/modules.json" ] || [ ! -s "$work/db/index/vulns.json" ]; then
    echo "the database holds $n_db advisories, the module $n_osv, or its index is missing"
    rm -rf "$work"
    return 1
  fi
  # The checksums let a later run tell a cached database from a damaged
  # one: govulncheck reads a truncated index as one with fewer entries.
  if ! (cd "$work/db" && find . -type f -print0 | sort -z | xargs -0 sha256sum >"$work/sums" &&
    mv "$work/sums" sluice-vulndb.sha256); then
    echo "cannot checksum the database"
    rm -rf "$work"
    return 1
  fi
  echo "$VULNDB_VERSION $n_db" >"$work/db/sluice-vulndb-complete"
  # A concurrent run may have won the race; its database is as good.
  if ! mv -T "$work/db" "$dest" 2>/dev/null && [ ! -f "$dest/sluice-vulndb-complete" ]; then
    echo "cannot move the database to $dest"
    rm -rf "$work"
    return 1
  fi
  rm -rf "$work"
}

# vulncheck runs govulncheck on the module; nonzero unless the scan ran
# and found nothing reachable. It is called in a condition, where set -e
# does not apply: every step checks its own status.
vulncheck() {
  local db="$VULNDB_CACHE/vulndb-$VULNDB_VERSION"
  local bin="$VULNDB_CACHE/govulncheck-$GOVULNCHECK_VERSION/govulncheck"
  local t0 out code stamp age
  t0=$(date +%s)
  if [ -f "$db/sluice-vulndb-complete" ] && ! (cd "$db" && sha256sum --quiet --strict -c sluice-vulndb.sha256 >/dev/null 2>&1); then
    echo "database: $db does not match its checksums: building it again"
    mv -T "$db" "$db.damaged.$$" 2>/dev/null && rm -rf "$db.damaged.$$"
  fi
  if [ -f "$db/sluice-vulndb-complete" ]; then
    echo "database: $db (cached, checksums verified)"
  else
    echo "database: building $db"
    buildVulndb "$db" || return 1
    echo "database: built in $(( $(date +%s) - t0 ))s"
  fi
  echo "database: $(cut -d' ' -f2 "$db/sluice-vulndb-complete") advisories"
  # The pseudo-version's timestamp is the vulndb commit's: no advisory
  # published after it is in the database.
  stamp=$(sed -E 's/^v0\.0\.0-([0-9]{4})([0-9]{2})([0-9]{2}).*/\1-\2-\3/' <<<"$VULNDB_VERSION")
  age=$(( ($(date +%s) - $(date -d "$stamp" +%s)) / 86400 ))
  echo "database: advisories as of $stamp ($age days ago)"
  if [ "$age" -gt 30 ]; then
    echo "database: older than 30 days: update VULNDB_VERSION (docs/reliability.md)"
  fi
  if [ ! -x "$bin" ]; then
    if ! (cd "$(dirname "$db")" && GOBIN="$(dirname "$bin")" go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"); then
      echo "cannot install govulncheck@$GOVULNCHECK_VERSION"
      return 1
    fi
  fi
  echo "scanner: govulncheck@$GOVULNCHECK_VERSION with $(go env GOVERSION)"
  code=0
  out=$("$bin" -db "file://$db" ./... 2>&1) || code=$?
  # Each finding lists every call path found; the first three of each say
  # enough here.
  awk '!/^ +#[0-9]+: / || $1 ~ /^#[123]:$/' <<<"$out"
  echo "govulncheck: exit status $code after $(( $(date +%s) - t0 ))s"
  case "$code" in
    0)
      echo "govulncheck: no reachable vulnerabilities"
      return 0
      ;;
    3)
      echo "govulncheck: REACHABLE VULNERABILITIES (above): upgrade the module (go get MODULE@FIXED_VERSION) or, for the standard library, go.mod's toolchain line"
      ;;
    *)
      echo "govulncheck: the scan did not complete (above): that is a failure, not a pass"
      ;;
  esac
  return 1
}

FUZZTIME="${FUZZTIME:-2s}"
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

echo "== govulncheck ./... (golang.org/x/vulndb@${VULNDB_VERSION})"
vulnfail=0
if ! vulncheck; then
  vulnfail=1
fi

echo "== hardening done in $(( $(date +%s) - start ))s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that failed:"
  printf '  %s\n' "${failed[@]}"
fi
if [ "${#failed[@]}" -gt 0 ] || [ "$vulnfail" -ne 0 ]; then
  exit 1
fi
