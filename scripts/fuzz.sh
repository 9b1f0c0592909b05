#!/usr/bin/env bash
# Runs every Go fuzz target in the module for $1 (default 10s) each, and
# prints how many inputs each one ran. FUZZ_LONG lists Name=duration
# pairs that run longer (or shorter) than $1, e.g.
#   FUZZ_LONG="FuzzKickoff=30s FuzzDecode=30s" scripts/fuzz.sh 5s
set -euo pipefail
t=${1:-10s}
declare -A long=()
for kv in ${FUZZ_LONG:-}; do
  long[${kv%%=*}]=${kv#*=}
done
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //' | sort -u); do
    d=${long[$f]:-$t}
    echo "== $pkg $f ($d)"
    corpus="$dir/testdata/fuzz/$f"
    before=$(ls "$corpus" 2>/dev/null | sort || true)
    rc=0
    out=$(go test -run '^$' -fuzz "^$f\$" -fuzztime "$d" "$pkg" 2>&1) || rc=$?
    echo "$out"
    if [ "$rc" -ne 0 ]; then
      after=$(ls "$corpus" 2>/dev/null | sort || true)
      # Go's fuzzing coordinator can report its own -fuzztime deadline as
      # a failure ("context deadline exceeded", no failing input written:
      # https://go.dev/issue/75804, fixed in Go 1.27). Only that exact
      # case is forgiven; a written reproducer or any other error fails.
      if [ "$before" = "$after" ] && [ "$(echo "$out" | grep -c '^    context deadline exceeded$')" = 1 ] &&
        ! echo "$out" | grep -q -e 'Failing input written' -e '^panic' -e 'fuzz: minimizing'; then
        echo "($f: the fuzzing coordinator's own deadline race, go.dev/issue/75804; no failing input: not a failure)"
      else
        exit 1
      fi
    fi
    # The last progress line holds the total: "fuzz: elapsed: 5s, execs: 123 (...";
    # none when the whole time went to checking the corpus (0 new inputs).
    execs=$(echo "$out" | sed -n 's/.*execs: \([0-9]*\).*/\1/p' | tail -1)
    printf '%-22s %-55s %6s %12s\n' "$f" "$pkg" "$d" "${execs:-0}" >>"$summary"
  done
done
echo
printf '%-22s %-55s %6s %12s\n' target package time inputs
cat "$summary"
awk '{ if ($4 ~ /^[0-9]+$/) n += $4 } END { printf "%d inputs in all\n", n }' "$summary"
