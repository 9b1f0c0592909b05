#!/usr/bin/env bash
# Runs the benchmarks together with their physical limits, measured in the
# same run on the same machine, and writes BENCHMARKS.md (called by
# `make bench`):
#
#   ./ingest/  BenchmarkIngest, BenchmarkIngestNoSync (JetStream → Pebble)
#              BenchmarkRawConsume (limit 1), BenchmarkRawPebble (limit 2)
#   ./index/   BenchmarkApply / BenchmarkRawPebbleSyncedBatch,
#              BenchmarkScan / BenchmarkRawPebbleScan (if present)
#
# One op of the ingest benchmarks is a pass over the whole stream, so they
# run a fixed number of times; one op of the index ones is one batch or one
# scan, so they run for a fixed time. Environment:
#
#   GO                      go command (go)
#   INGEST_BENCHTIME        -benchtime of ./ingest/ (3x)
#   INDEX_BENCHTIME         -benchtime of ./index/ (2s)
#   BENCH_COUNT             -count (1)
#   BULKSTREAM_BENCH_SCALE  copies of the Synthea sample (3: ~115k
#                           resources, ~150 MB)
#   BENCH_OUT               report file (BENCHMARKS.md)
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
INGEST_BENCHTIME=${INGEST_BENCHTIME:-3x}
INDEX_BENCHTIME=${INDEX_BENCHTIME:-2s}
BENCH_COUNT=${BENCH_COUNT:-1}
export BULKSTREAM_BENCH_SCALE=${BULKSTREAM_BENCH_SCALE:-3}
OUT=${BENCH_OUT:-BENCHMARKS.md}
GOAL=60 # percent of the slower limit

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$work/raw.txt
: >"$raw"

ingest_cmd=("$GO" test -run '^$' -bench 'Ingest|Raw' -benchtime "$INGEST_BENCHTIME" -count "$BENCH_COUNT" -timeout 60m ./ingest/)
index_cmd=("$GO" test -run '^$' -bench 'Apply|Raw|Scan' -benchtime "$INDEX_BENCHTIME" -count "$BENCH_COUNT" -timeout 60m ./index/)
show() { # the command as one shell line, quoting only where needed
  local a out=()
  for a; do
    if [[ -z $a || $a =~ [^A-Za-z0-9_./=:,+-] ]]; then
      out+=("'${a//\'/\'\\\'\'}'")
    else
      out+=("$a")
    fi
  done
  echo "${out[*]}"
}
ingest_line="BULKSTREAM_BENCH_SCALE=$BULKSTREAM_BENCH_SCALE $(show "${ingest_cmd[@]}")"
index_line=$(show "${index_cmd[@]}")

start=$(date +%s)
status=0
run() { # label, command...
  local label=$1
  shift
  echo "\$ $label" | tee -a "$raw"
  "$@" 2>&1 | tee -a "$raw"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "(exit status $rc)" | tee -a "$raw"
    status=1
  fi
  echo | tee -a "$raw"
}
run "$ingest_line" "${ingest_cmd[@]}"
# The index benchmarks are optional: a missing one is simply not reported.
run "$index_line" "${index_cmd[@]}"
elapsed=$(($(date +%s) - start))

tmpdir=${TMPDIR:-/tmp}
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs=$(df -T "$tmpdir" | awk 'NR == 2 {print $2 " on " $1 " (mounted on " $7 ")"}')
rev=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)

# summary turns the `go test -bench` output into Markdown tables. Each
# benchmark line is "Name-P N v unit v unit ..."; values are averaged over
# -count runs.
summary() {
  awk -v goal="$GOAL" '
    /^Benchmark/ {
      name = $1; sub(/-[0-9]+$/, "", name)
      if (!(name in runs)) order[++nnames] = name
      runs[name]++
      for (i = 3; i + 1 <= NF; i += 2) { sum[name, $(i + 1)] += $i; seen[name, $(i + 1)] = 1 }
    }
    function v(name, unit) { return (seen[name, unit] ? sum[name, unit] / runs[name] : "") }
    function has(name, unit) { return seen[name, unit] ? 1 : 0 }
    function num(x,   s, out) {
      if (x == "") return "–"
      s = sprintf("%.0f", x); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      return s out
    }
    function mb(x) { return x == "" ? "–" : sprintf("%.1f", x) }
    function pct(a, b) { return (a == "" || b == "" || b == 0) ? "–" : sprintf("%.0f %%", 100 * a / b) }
    END {
      ing = "BenchmarkIngest"; nos = "BenchmarkIngestNoSync"
      rc = "BenchmarkRawConsume"; rp = "BenchmarkRawPebble"
      l1 = v(rc, "msgs/s"); l2 = v(rp, "keys/s")
      slow = ""; slowname = ""
      if (l1 != "" && (l2 == "" || l1 + 0 <= l2 + 0)) { slow = l1; slowname = "raw consume + ack" }
      else if (l2 != "") { slow = l2; slowname = "raw Pebble synced batches" }
      print "### Ingest: JetStream → Pebble, next to its two limits"
      print ""
      print "| benchmark | what | rate | MB/s | % of slower limit |"
      print "|---|---|---:|---:|---:|"
      if (has(ing, "events/s")) printf "| `Ingest` | ingest.Consumer → index, synced commits | %s events/s | %s | **%s** |\n", num(v(ing, "events/s")), mb(v(ing, "MB/s")), pct(v(ing, "events/s"), slow)
      if (has(nos, "events/s")) printf "| `IngestNoSync` | the same, index NoSync (no fsync) | %s events/s | %s | %s |\n", num(v(nos, "events/s")), mb(v(nos, "MB/s")), pct(v(nos, "events/s"), slow)
      if (l1 != "") printf "| `RawConsume` | limit 1: pull consume + AckAll, no decode, no store | %s msgs/s | %s | %s |\n", num(l1), mb(v(rc, "MB/s")), pct(l1, slow)
      if (l2 != "") printf "| `RawPebble` | limit 2: plain Pebble, synced batches of 500, no NATS | %s keys/s | %s | %s |\n", num(l2), mb(v(rp, "MB/s")), pct(l2, slow)
      print ""
      if (has(ing, "events/s") && slow != "") {
        r = 100 * v(ing, "events/s") / slow
        printf "Ingest runs at **%.0f %%** of the slower limit (%s, %s/s); goal ≥ %d %%: **%s**.\n", r, slowname, num(slow), goal, (r >= goal ? "met" : "NOT met")
      } else {
        print "The ingest benchmarks did not run (see the output below)."
      }
      # Index benchmarks next to their raw-Pebble limits, if present.
      nidx = 0
      for (k = 1; k <= nnames; k++) {
        n = order[k]
        if (n ~ /^Benchmark(Apply|RawPebbleSyncedBatch|Scan|RawPebbleScan)(\/|$)/) idx[++nidx] = n
      }
      if (nidx > 0) {
        lw = v("BenchmarkRawPebbleSyncedBatch", "keys/s"); ls = v("BenchmarkRawPebbleScan", "resources/s")
        print ""
        print "### Index (`./index/`)"
        print ""
        print "| benchmark | rate | MB/s | % of its raw Pebble limit |"
        print "|---|---:|---:|---:|"
        for (k = 1; k <= nidx; k++) {
          n = idx[k]; unit = ""; lim = ""
          if (has(n, "events/s")) unit = "events/s"
          else if (has(n, "keys/s")) unit = "keys/s"
          else if (has(n, "resources/s")) unit = "resources/s"
          if (n ~ /^BenchmarkApply/) lim = lw
          if (n ~ /^BenchmarkScan/) lim = ls
          label = n; sub(/^Benchmark/, "", label)
          printf "| `%s` | %s | %s | %s |\n", label, (unit == "" ? "–" : num(v(n, unit)) " " unit), mb(v(n, "MB/s")), (lim == "" ? "–" : pct(v(n, unit), lim))
        }
      }
    }' "$raw"
}

{
  echo "# Benchmarks"
  echo
  echo "Generated by \`make bench\` (scripts/bench.sh) — do not edit by hand; rerun it."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- Revision: $rev"
  echo "- Machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r)"
  echo "- Go: $($GO version)"
  echo "- Temp dir (JetStream store, Pebble dirs): \`$tmpdir\`, $fs"
  echo "- Data: \`BULKSTREAM_BENCH_SCALE=$BULKSTREAM_BENCH_SCALE\` copies of the Synthea sample (testdata/synthea-r4-100-patients.ndjson.gz) via internal/synth, seed 1; MB/s counts the resource bodies (10^6 bytes)"
  echo "- Wall time of the run: ${elapsed}s"
  echo "- Commands:"
  echo "  - \`$ingest_line\`"
  echo "  - \`$index_line\`"
  echo
  echo "## Summary"
  echo
  summary
  echo
  echo "All four ingest benchmarks use the same messages: one op consumes (or writes) all of them,"
  echo "setup (JetStream server, publishing, opening stores) is outside the timer."
  echo "\`Ingest\` starts a fresh ingest.Consumer (new durable) on a fresh index per op and stops the clock"
  echo "when the index has applied the stream's last sequence. \`RawConsume\` uses a durable of the same"
  echo "configuration and the same fetch pattern (FetchNoWait of 500), acking the last message of each batch."
  echo "\`RawPebble\` writes the bodies under ~60-byte keys of the index's c/ layout in synced batches of 500"
  echo "(one key per message; the index also writes an r/ key and reads one per event)."
  echo
  echo "## Raw output"
  echo
  echo '```'
  cat "$raw"
  echo '```'
} >"$OUT"

echo "wrote $OUT (${elapsed}s)"
exit $status
