#!/usr/bin/env bash
# Runs the benchmarks together with their physical limits, measured in the
# same run on the same machine, and writes BENCHMARKS.md (called by
# `make bench`):
#
#   ./ingest/  BenchmarkIngest, BenchmarkIngestNoSync (JetStream → Pebble),
#              BenchmarkIngestRefs: ingest with the reference index vs
#              without, alternated pass by pass (goal ≤ REFS_GOAL % slower)
#              BenchmarkRawConsume (limit 1), BenchmarkRawPebble (limit 2)
#   ./index/   BenchmarkApply / BenchmarkRawPebbleSyncedBatch,
#              BenchmarkScan / BenchmarkRawPebbleScan (if present),
#              BenchmarkApplySample: Apply with the reference index vs
#              without, alternated batch by batch
#   ./cmd/bulkstream/  BenchmarkExportE2E: the real binary (serve, NATS in the bench process;
#              loaded with gen + publish, then restarted), full and _since
#              $export, and Group/[id]/$export of a Group of 1 % of the
#              patients, over HTTP to the last byte downloaded, peak RSS of
#              the serve process, and the raw Pebble scan + file write of
#              the same data (the limit, alternated with the full exports),
#              per data size; on the Synthea sample also the time to data
#              of three clients (poll every 50 ms, honour Retry-After as
#              SMART bulk-data-client, Prefer: wait=10)
#   ./export/  BenchmarkTypeFilter: _typeFilter on ~1M resources (one
#              index built once): the Observation scan alone (the limit),
#              the same scan matching each resource against a query, and
#              Manager exports of _type=Observation with and without it
#              (goal: evaluation ≤ TYPEFILTER_GOAL % of the scan's cost
#              per resource)
#   ./internal/smart/  token endpoint and bearer-check costs next to the
#              bare ECDSA P-384 / RSA-3072 operations
#   ./cmd/bulkstream/  TestLoadConcurrentExports (reliability suite): 50 export
#              clients against the real binary while ingest runs, next to
#              one client alone on the same server
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
#   E2E_BENCHTIME           -benchtime of ./cmd/bulkstream/ (3x: exports
#                           per size and kind, and raw passes; each figure
#                           is their median)
#   EXPORT_BENCH_SIZES      data sets of BenchmarkExportE2E (sample,100k,1M:
#                           the Synthea sample as is, then gen'd counts)
#   EXPORT_BENCH_DOWNLOADS  files the benchmark client downloads at once (2)
#   LOAD_DURATION           how long the 50-client load runs (30s)
#   TYPEFILTER_BENCH_SCALE  copies of the sample for BenchmarkTypeFilter
#                           (26: ~1.0M resources)
#   TYPEFILTER_BENCHTIME    its -benchtime (3x: rounds of every kind,
#                           alternated; medians)
#   BENCH_OUT               report file (BENCHMARKS.md)
#   BENCH_ONLY              comma-separated parts to run, of ingest, index,
#                           e2e, typefilter, auth, load (all; for trial runs: the
#                           tables of the others then say they did not run)
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
INGEST_BENCHTIME=${INGEST_BENCHTIME:-3x}
INDEX_BENCHTIME=${INDEX_BENCHTIME:-2s}
BENCH_COUNT=${BENCH_COUNT:-1}
export BULKSTREAM_BENCH_SCALE=${BULKSTREAM_BENCH_SCALE:-3}
E2E_BENCHTIME=${E2E_BENCHTIME:-3x}
AUTH_BENCHTIME=${AUTH_BENCHTIME:-1s}
export EXPORT_BENCH_SIZES=${EXPORT_BENCH_SIZES:-sample,100k,1M}
export EXPORT_BENCH_DOWNLOADS=${EXPORT_BENCH_DOWNLOADS:-2}
export LOAD_DURATION=${LOAD_DURATION:-30s}
export TYPEFILTER_BENCH_SCALE=${TYPEFILTER_BENCH_SCALE:-26}
TYPEFILTER_BENCHTIME=${TYPEFILTER_BENCHTIME:-3x}
OUT=${BENCH_OUT:-BENCHMARKS.md}
GOAL=60 # percent of the slower limit
REFS_GOAL=15 # ingest with the reference index, % slower than without at most
TYPEFILTER_GOAL=25 # _typeFilter evaluation per resource, % of the scan's cost at most
# Export goals: each measurement in BENCHMARKS.md is compared with them.
EXPORT_GOAL=60      # full export, kick-off to last byte, % of raw scan + write
SINCE_GOAL=3        # _since export of 1 % changed, % of the full export's time
GROUP_GOAL=3        # Group export of 1 % of the patients, % of the full export's time
RSS_GOAL=256        # peak RSS of serve exporting, MB
RSS_RATIO_GOAL=1.2  # peak RSS largest size / smallest generated size
SMART_MS=14000      # SMART reference server, Synthea sample, kick-off to last byte
SMART_GOAL=50       # times faster than it
# Time-to-data goals (Synthea sample, kick-off to last byte).
TTD_PREFER_GOAL=120      # Prefer: wait client, % of the 50 ms poller's time
TTD_RETRY_EXTRA_MS=1100  # Retry-After client, ms more than the 50 ms poller
TTD_RETRY_MS=1300        # Retry-After client, ms for the whole sample
TTD_PREFER_WAIT=10       # the wait that client asks for (preferWaitSeconds)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$work/raw.txt
: >"$raw"

ingest_cmd=("$GO" test -run '^$' -bench 'Ingest|Raw' -benchtime "$INGEST_BENCHTIME" -count "$BENCH_COUNT" -timeout 60m ./ingest/)
index_cmd=("$GO" test -run '^$' -bench 'Apply|Raw|Scan' -benchtime "$INDEX_BENCHTIME" -count "$BENCH_COUNT" -timeout 60m ./index/)
auth_cmd=("$GO" test -run '^$' -bench . -benchtime "$AUTH_BENCHTIME" -count "$BENCH_COUNT" -timeout 10m ./internal/smart/)
e2e_cmd=("$GO" test -v -run '^$' -bench 'ExportE2E' -benchtime "$E2E_BENCHTIME" -count "$BENCH_COUNT" -timeout 60m ./cmd/bulkstream/)
load_cmd=("$GO" test -v -run '^TestLoadConcurrentExports$' -count 1 -timeout 10m ./cmd/bulkstream/)
typefilter_cmd=("$GO" test -run '^$' -bench 'TypeFilter' -benchtime "$TYPEFILTER_BENCHTIME" -count "$BENCH_COUNT" -timeout 60m ./export/)
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
auth_line=$(show "${auth_cmd[@]}")
load_line="LOAD_DURATION=$LOAD_DURATION $(show "${load_cmd[@]}")"
typefilter_line="TYPEFILTER_BENCH_SCALE=$TYPEFILTER_BENCH_SCALE $(show "${typefilter_cmd[@]}")"
e2e_line="EXPORT_BENCH_SIZES=$EXPORT_BENCH_SIZES EXPORT_BENCH_DOWNLOADS=$EXPORT_BENCH_DOWNLOADS $(show "${e2e_cmd[@]}")"

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
BENCH_ONLY=${BENCH_ONLY:-ingest,index,e2e,typefilter,auth,load}
part() { [[ ,$BENCH_ONLY, == *,$1,* ]]; }
part ingest && run "$ingest_line" "${ingest_cmd[@]}"
# The index benchmarks are optional: a missing one is simply not reported.
part index && run "$index_line" "${index_cmd[@]}"
part e2e && run "$e2e_line" "${e2e_cmd[@]}"
part typefilter && run "$typefilter_line" "${typefilter_cmd[@]}"
part auth && run "$auth_line" "${auth_cmd[@]}"
part load && run "$load_line" "${load_cmd[@]}"
elapsed=$(($(date +%s) - start))

tmpdir=${TMPDIR:-/tmp}
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs=$(df -T "$tmpdir" | awk 'NR == 2 {print $2 " on " $1 " (mounted on " $7 ")"}')
rev=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)

# summary turns the `go test -bench` output into Markdown tables. Each
# benchmark line is "Name-P N v unit v unit ..."; values are averaged over
# -count runs.
# auth_summary: SMART token endpoint and bearer check costs next to the
# bare signature operations (internal/smart).
auth_summary() {
  awk '
    /^Benchmark/ {
      name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
      for (i = 3; i + 1 <= NF; i += 2) if ($(i + 1) ~ /\/s$/) { rate[name] = $i; unit[name] = $(i + 1) }
      if (!(name in seen)) { seen[name] = 1; order[++n] = name }
    }
    function num(x,   s, out) {
      s = sprintf("%.0f", x); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      return s out
    }
    function row(name, what, lim) {
      if (!(name in rate)) return
      printf "| `%s` | %s | %s %s | %s |\n", name, what, num(rate[name]), unit[name], (lim in rate && rate[lim] > 0) ? sprintf("%.0f %% of `%s`", 100 * rate[name] / rate[lim], lim) : "–"
    }
    END {
      print "| benchmark | what | rate | next to its limit |"
      print "|---|---|---:|---:|"
      row("VerifyAssertion/ES384", "token endpoint: check a client assertion (ES384)", "RawECDSAP384Verify")
      row("VerifyAssertion/RS384", "token endpoint: check a client assertion (RS384, 3072-bit)", "RawRSA3072Verify")
      row("ReplayFile", "token endpoint: record the jti (append + fsync)", "")
      row("Issue", "token endpoint: sign an access token (ES384)", "RawECDSAP384Sign")
      row("VerifyAccessToken/first", "each request: a token seen for the first time", "RawECDSAP384Verify")
      row("VerifyAccessToken/cached", "each request: a token already verified (cache hit)", "")
      row("SignAssertion/ES384", "client side: sign an assertion (ES384)", "RawECDSAP384Sign")
      row("SignAssertion/RS384", "client side: sign an assertion (RS384, 3072-bit)", "")
      row("RawECDSAP384Sign", "limit: crypto/ecdsa P-384 sign", "")
      row("RawECDSAP384Verify", "limit: crypto/ecdsa P-384 verify", "")
      row("RawRSA3072Verify", "limit: crypto/rsa 3072-bit PKCS#1 v1.5 verify", "")
    }' "$raw" # the names are unique to internal/smart
}

summary() {
  awk -v goal="$GOAL" -v refsgoal="$REFS_GOAL" -v ncpu="$(nproc)" '
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
    function f2(x) { return x == "" ? "–" : sprintf("%.2f", x) }
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
      print "| benchmark | what | rate | MB/s | % of slower limit | CPU µs per message |"
      print "|---|---|---:|---:|---:|---:|"
      if (has(ing, "events/s")) printf "| `Ingest` | ingest.Consumer → index, synced commits | %s events/s | %s | **%s** | %s |\n", num(v(ing, "events/s")), mb(v(ing, "MB/s")), pct(v(ing, "events/s"), slow), f2(v(ing, "cpu-us/event"))
      if (has(nos, "events/s")) printf "| `IngestNoSync` | the same, index NoSync (no fsync) | %s events/s | %s | %s | %s |\n", num(v(nos, "events/s")), mb(v(nos, "MB/s")), pct(v(nos, "events/s"), slow), f2(v(nos, "cpu-us/event"))
      ir = "BenchmarkIngestRefs"
      if (has(ir, "events/s")) {
        printf "| `IngestRefs` | Ingest, with the reference index (as the product runs), alternated with… | %s events/s | – | %s | %s |\n", num(v(ir, "events/s")), pct(v(ir, "events/s"), slow), f2(v(ir, "cpu-us/event"))
        printf "| `IngestRefs` | …the same without it (index NoReferenceIndex) | %s events/s | – | %s | %s |\n", num(v(ir, "norefs-events/s")), pct(v(ir, "norefs-events/s"), slow), f2(v(ir, "norefs-cpu-us/event"))
      }
      if (l1 != "") printf "| `RawConsume` | limit 1: pull consume + AckAll, no decode, no store | %s msgs/s | %s | %s | %s |\n", num(l1), mb(v(rc, "MB/s")), pct(l1, slow), f2(v(rc, "cpu-us/msg"))
      if (l2 != "") printf "| `RawPebble` | limit 2: plain Pebble, synced batches of 500, no NATS | %s keys/s | %s | %s | %s |\n", num(l2), mb(v(rp, "MB/s")), pct(l2, slow), f2(v(rp, "cpu-us/key"))
      c1 = v(rc, "cpu-us/msg"); c2 = v(rp, "cpu-us/key")
      if (c1 != "" && c2 != "" && c1 + c2 > 0) {
        cl = ncpu * 1e6 / (c1 + c2)
        printf "| – | CPU bound of both together: %d cores / (%s + %s µs) | %s events/s | – | %s | – |\n", ncpu, f2(c1), f2(c2), num(cl), pct(cl, slow)
      }
      print ""
      if (has(ing, "events/s") && slow != "") {
        r = 100 * v(ing, "events/s") / slow
        printf "Ingest runs at **%.0f %%** of the slower limit (%s, %s/s); goal ≥ %d %%: **%s**.\n", r, slowname, num(slow), goal, (r >= goal ? "met" : "NOT met")
        if (cl != "") printf "It does the work of both limits on the same %d cores: the CPU they spend per message, added, allows at most %s events/s (an upper bound: it assumes every core busy all the time), and ingest runs at **%.0f %%** of that.\n", ncpu, num(cl), 100 * v(ing, "events/s") / cl
      } else {
        print "The ingest benchmarks did not run (see the output below)."
      }
      if (has(ir, "events/s") && v(ir, "norefs-events/s") > 0) {
        ron = v(ir, "events/s"); roff = v(ir, "norefs-events/s"); r = 100 * (1 - ron / roff)
        print ""
        printf "Ingest with the patient compartment index (patient compartment, Group member and Provenance target keys): %s events/s vs %s without, passes alternated (%s; CPU %s vs %s µs per event); goal ≤ %d %% slower: **%s**.\n",
          num(ron), num(roff), (r >= 0 ? sprintf("%.1f %% slower", r) : sprintf("%.1f %% faster", -r)), f2(v(ir, "cpu-us/event")), f2(v(ir, "norefs-cpu-us/event")), refsgoal, (r <= refsgoal ? "met" : "NOT met")
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
        # ApplySample: the same batches with and without the reference
        # index, alternated (one row each), and the goal.
        as = "BenchmarkApplySample"
        if (has(as, "events/s")) {
          on = v(as, "events/s"); off = v(as, "norefs-events/s")
          printf "| `ApplySample` (Synthea mix, patient compartment index on) | %s events/s | %s | %s |\n", num(on), mb(v(as, "MB/s")), (lw == "" ? "–" : pct(on, lw))
          printf "| `ApplySample`, the same batches without the reference index | %s events/s | %s | %s |\n", num(off), mb(v(as, "norefs-MB/s")), (lw == "" ? "–" : pct(off, lw))
        }
      }
      if (has(as, "events/s") && off > 0) {
        r = 100 * (1 - on / off)
        print ""
        printf "Apply alone with the patient compartment index: %s events/s vs %s without (%s); %.2f vs %.2f heap allocations per event. The goal (≤ %d %% slower) is judged on ingest as a whole, `IngestRefs` above.\n",
          num(on), num(off), (r >= 0 ? sprintf("%.1f %% slower", r) : sprintf("%.1f %% faster", -r)), v(as, "allocs/event"), v(as, "norefs-allocs/event"), refsgoal
        print "`ApplySample` applies each synced batch of 500 (copies of the Synthea sample with fresh ids, so inserts, each copy"
        print "in one fixed shuffled order so that every batch holds the sample'"'"'s mix of types) to two fresh indexes, one with the"
        print "reference index (patient compartment, Group member and Provenance target keys, as the product always runs) and one"
        print "without, alternating which goes first, and times each Apply on its own. The ingest benchmarks above include it."
      }
    }' "$raw"
}

# typefilter_summary: BenchmarkTypeFilter's metrics (each the median of
# its rounds; averaged over -count runs) as a table, and the goal.
typefilter_summary() {
  awk -v goal="$TYPEFILTER_GOAL" '
    /^BenchmarkTypeFilter/ {
      runs++
      for (i = 3; i + 1 <= NF; i += 2) { sum[$(i + 1)] += $i; seen[$(i + 1)] = 1 }
    }
    function v(u) { return seen[u] ? sum[u] / runs : "" }
    function num(x,   s, out) {
      if (x == "") return "–"
      s = sprintf("%.0f", x); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      return s out
    }
    END {
      if (!runs) { print "The _typeFilter benchmark did not run (see the output below)."; exit }
      scan = v("scan-ns/resource")
      printf "%s resources, of which %s Observations.\n\n", num(v("resources")), num(v("observations"))
      print "| query (`_type=Observation`) | evaluation ns per scanned resource | % of the scan (" sprintf("%.0f", scan) " ns/resource) | export, kick-off → manifest | written | goal ≤ " goal " % |"
      print "|---|---:|---:|---:|---:|---|"
      printf "| none (the unfiltered export) | – | – | %s ms | %s | – |\n", num(v("export-all-ms")), num(v("observations"))
      n = split("category-laboratory date-ge2020-01-01", qs, " ")
      for (i = 1; i <= n; i++) {
        q = qs[i]; c = v(q "-eval-ns/resource"); p = v(q "-eval-%-of-scan")
        if (c == "") continue
        label = q; sub(/-/, "=", label)
        printf "| `%s` | %.0f | %.0f %% | %s ms | %s | **%s** |\n", label, c, p, num(v(q "-export-ms")), num(v(q "-written")), (p <= goal ? "met" : "NOT met")
      }
    }' "$raw"
}

# load_summary: the LOAD line of TestLoadConcurrentExports ("LOAD name
# value name value ...") as a table, loaded next to alone.
load_summary() {
  awk '
    { for (i = 1; i <= NF; i++) if ($i == "LOAD") { for (j = i + 1; j + 1 <= NF; j += 2) v[$j] = $(j + 1); found = 1 } }
    function num(x,   s, out) {
      s = sprintf("%.0f", x); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      return s out
    }
    END {
      if (!found) { print "The load test did not run (see the output below)."; exit }
      printf "%s clients for %s s, while a writer published %s events (%s events/s: creates, updates, deletes).\n\n", v["clients"], v["seconds"], num(v["events"]), num(v["events/s"])
      print "| figure | 50 clients + ingest | one client alone, no ingest (limit) | loaded / alone |"
      print "|---|---:|---:|---:|"
      printf "| exports completed, all checked exact | %s (%s full, %s `_since`) | – | – |\n", num(v["exports"]), num(v["full"]), num(v["since"])
      printf "| exports/s | %.1f | %.1f | %.1f× |\n", v["exports/s"], v["alone-exports/s"], v["exports/s"] / v["alone-exports/s"]
      printf "| kick-off → manifest, p50 | %s ms | %s ms | %.0f %% |\n", v["p50-ms"], v["alone-p50-ms"], 100 * v["p50-ms"] / v["alone-p50-ms"]
      printf "| kick-off → manifest, p99 | %s ms | %s ms | %.0f %% |\n", v["p99-ms"], v["alone-p99-ms"], 100 * v["p99-ms"] / v["alone-p99-ms"]
      printf "| kick-off → manifest, max | %s ms | – | – |\n", v["max-ms"]
      printf "| refusals (all 429, retried after Retry-After) | %s | – | – |\n", num(v["429s"])
      printf "| RSS of serve, before → peak (goal ≤ 256 MB) | %s → %s MB (Go %s MB, non-Go %s MB at most) | – | – |\n", v["base-RSS-MB"], v["peak-RSS-MB"], v["peak-Go-MB"], v["peak-non-Go-MB"]
    }' "$raw"
}

# e2e_awk: awk functions shared by export_summary and ttd_summary. They
# read the BenchmarkExportE2E lines (BenchmarkExportE2E/<size>/<kind>,
# kind one of full, since, group, poll50ms, retryafter, preferwait); each metric
# on such a line is already the median over its ops (E2E_BENCHTIME), and
# v(size, kind, unit) is the median of those over the -count runs.
e2e_awk='
    /^BenchmarkExportE2E\// && $4 == "ns/op" { # -v also prints the bare names
      name = $1; sub(/-[0-9]+$/, "", name)
      split(name, p, "/"); size = p[2]; kind = p[3]
      if (!(size in seen)) { seen[size] = 1; sizes[++ns] = size }
      r = ++runs[size, kind]
      for (i = 3; i + 1 <= NF; i += 2) { val[size, kind, $(i + 1), r] = $i; has[size, kind, $(i + 1)] = 1 }
    }
    function v(s, k, u,   n, i, j, x, a) {
      if (!has[s, k, u]) return ""
      n = runs[s, k]
      for (i = 1; i <= n; i++) a[i] = val[s, k, u, i] + 0
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function num(x,   s, out) {
      if (x == "") return "–"
      s = sprintf("%.0f", x); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      return s out
    }
    function f1(x) { return x == "" ? "–" : sprintf("%.1f", x) }
    function pct(a, b) { return (a == "" || b == "" || b == 0) ? "–" : sprintf("%.0f %%", 100 * a / b) }
    function ok(c) { return c ? "**met**" : "**NOT met**" }
'

# export_summary: the full, since, group and raw figures of BenchmarkExportE2E as
# a table per size and the issue's goals. The raw limit is on the full line
# (raw-* metrics): its passes alternate with the full exports.
export_summary() {
  awk -v eg="$EXPORT_GOAL" -v sg="$SINCE_GOAL" -v gg="$GROUP_GOAL" -v rg="$RSS_GOAL" -v rrg="$RSS_RATIO_GOAL" \
      -v smart="$SMART_MS" -v smg="$SMART_GOAL" "$e2e_awk"'
    END {
      if (ns == 0) { print "The export benchmarks did not run (see the output below)."; exit }
      print "| size | export | resources | ms to manifest | ms to last byte | resources/s (manifest / last byte) | MB/s (manifest / last byte) | % of raw (manifest / last byte) | base → peak RSS MB |"
      print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= ns; i++) {
        s = sizes[i]; raw = v(s, "full", "raw-resources/s")
        for (k = 1; k <= 4; k++) {
          kind = (k == 1 ? "full" : k == 2 ? "since" : k == 3 ? "group" : "raw")
          if (kind == "raw") {
            if (raw == "") continue
            printf "| %s | raw Pebble scan + bufio file write (limit), alternated with full | %s | – | %s | %s | %s | 100 %% | – |\n", s,
              num(v(s, "full", "raw-resources")), num(v(s, "full", "raw-ms-to-last-byte")), num(raw), f1(v(s, "full", "raw-MB/s"))
            continue
          }
          if (!runs[s, kind]) continue
          rl = (kind == "full" ? pct(v(s, kind, "manifest-resources/s"), raw) " / " pct(v(s, kind, "resources/s"), raw) : "–")
          what = (kind == "full" ? "full" : kind == "since" ? "`_since`, 1 % changed" : \
            sprintf("group, 1 %% of patients (Group of %s of %s)", num(v(s, kind, "members")), num(v(s, kind, "patients"))))
          printf "| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s → %s |\n", s, what,
            num(v(s, kind, "resources")), num(v(s, kind, "ms-to-manifest")), num(v(s, kind, "ms-to-last-byte")),
            num(v(s, kind, "manifest-resources/s")), num(v(s, kind, "resources/s")),
            f1(v(s, kind, "manifest-MB/s")), f1(v(s, kind, "MB/s")), rl,
            num(v(s, kind, "base-RSS-MB")), num(v(s, kind, "peak-RSS-MB"))
        }
      }
      # The largest and the smallest generated size (not the sample).
      big = ""; small = ""
      for (i = 1; i <= ns; i++) {
        s = sizes[i]
        if (s == "sample" || !runs[s, "full"]) continue
        n = v(s, "full", "resources")
        if (big == "" || n > v(big, "full", "resources")) big = s
        if (small == "" || n < v(small, "full", "resources")) small = s
      }
      print ""
      print "| goal | measured | next to | goal | result |"
      print "|---|---:|---|---|---|"
      if (big != "") {
        n = v(big, "full", "resources"); raw = v(big, "full", "raw-resources/s")
        note = (n < 1000000 ? " (fewer than the 1,000,000 the issue asks for)" : "")
        r = (raw == "" ? "" : 100 * v(big, "full", "resources/s") / raw)
        printf "| full export of %s resources%s, kick-off → last byte | %s resources/s, %s MB/s (%s ms) | raw scan + write of the same data, alternated with it: %s resources/s, %s MB/s | ≥ %d %% of the limit | %s %% %s |\n",
          num(n), note, num(v(big, "full", "resources/s")), f1(v(big, "full", "MB/s")), num(v(big, "full", "ms-to-last-byte")),
          num(raw), f1(v(big, "full", "raw-MB/s")), eg, (r == "" ? "–" : sprintf("%.0f", r)), (r == "" ? "" : ok(r >= eg))
        r = (raw == "" ? "" : 100 * v(big, "full", "manifest-resources/s") / raw)
        printf "| the same, kick-off → manifest | %s resources/s, %s MB/s (%s ms) | the same limit | (≥ %d %%) | %s %% %s |\n",
          num(v(big, "full", "manifest-resources/s")), f1(v(big, "full", "manifest-MB/s")), num(v(big, "full", "ms-to-manifest")),
          eg, (r == "" ? "–" : sprintf("%.0f", r)), (r == "" ? "" : ok(r >= eg))
        for (i = 1; i <= ns; i++) {
          s = sizes[i]
          if (!runs[s, "since"]) continue
          r = 100 * v(s, "since", "ms-to-last-byte") / v(s, "full", "ms-to-last-byte")
          printf "| `_since` export, %s of %s resources changed, kick-off → last byte | %s ms | full export of the same size: %s ms | %s | %.1f %% %s |\n",
            num(v(s, "since", "resources")), num(v(s, "full", "resources")), f1(v(s, "since", "ms-to-last-byte")),
            num(v(s, "full", "ms-to-last-byte")), (s == big ? "≤ " sg " % of its time" : "(the goal is for the largest size)"),
            r, (s == big ? ok(r <= sg) : "")
        }
        for (i = 1; i <= ns; i++) {
          s = sizes[i]
          if (!runs[s, "group"] || !runs[s, "full"]) continue
          r = 100 * v(s, "group", "ms-to-last-byte") / v(s, "full", "ms-to-last-byte")
          printf "| Group export of 1 %% of the patients (%s of %s) of %s resources, kick-off → last byte | %s ms (%s resources) | full export of the same size: %s ms | %s | %.1f %% %s |\n",
            num(v(s, "group", "members")), num(v(s, "group", "patients")), num(v(s, "full", "resources")),
            f1(v(s, "group", "ms-to-last-byte")), num(v(s, "group", "resources")), num(v(s, "full", "ms-to-last-byte")),
            (s == big ? "≤ " gg " % of its time" : "(the goal is for the largest size)"), r, (s == big ? ok(r <= gg) : "")
        }
        for (i = 1; i <= ns; i++) {
          s = sizes[i]
          if (s == "sample" || !runs[s, "full"]) continue
          pk = v(s, "full", "peak-RSS-MB")
          printf "| peak RSS of serve, full export of %s resources | %s MB (base %s MB: restarted after the load, idle, before the first export) | – | ≤ %d MB | %s |\n",
            num(v(s, "full", "resources")), num(pk), num(v(s, "full", "base-RSS-MB")), rg, ok(pk <= rg)
        }
        if (small != big) {
          r = v(big, "full", "peak-RSS-MB") / v(small, "full", "peak-RSS-MB")
          printf "| peak RSS, %s vs %s resources | %.2f× | – | ≤ %.1f× | %s |\n", num(v(big, "full", "resources")),
            num(v(small, "full", "resources")), r, rrg, ok(r <= rrg)
        }
      }
      if (runs["sample", "full"]) {
        ms = v("sample", "full", "ms-to-last-byte")
        x = smart / ms
        printf "| Synthea sample (%s resources), kick-off → last byte | %s ms, %s resources/s | SMART reference server ≈ %.0f s (≈ 2,600 resources/s) | ≥ %d× faster | %.0f× %s |\n",
          num(v("sample", "full", "resources")), f1(ms), num(v("sample", "full", "resources/s")), smart / 1000, smg, x, ok(x >= smg)
      }
    }' "$raw"
}

# ttd_summary: time to data of the Synthea sample for the three clients of
# BenchmarkExportE2E (sample/poll50ms, sample/retryafter,
# sample/preferwait), side by side, with the status answers each was given
# (from the "op N: <client>: ... status polls: ..." log lines).
ttd_summary() {
  awk -v pg="$TTD_PREFER_GOAL" -v rx="$TTD_RETRY_EXTRA_MS" -v rm="$TTD_RETRY_MS" -v pw="$TTD_PREFER_WAIT" "$e2e_awk"'
    / op [0-9]+: (poll50ms|retryafter|preferwait): / {
      k = $0; sub(/.* op [0-9]+: /, "", k); sub(/:.*/, "", k)
      t = $0; sub(/.*status polls: /, "", t)
      if (!((k, t) in tseen)) { tseen[k, t] = 1; traces[k] = traces[k] (traces[k] == "" ? "" : "; ") t }
    }
    function row(label, k, what, next_) {
      printf "| %s `%s` | %s | %s | %s | %s | %s | %s | %s |\n", label, k, what, num(v("sample", k, "status-polls")),
        num(v("sample", k, "retry-after-s")), num(v("sample", k, "ms-to-manifest")), num(v("sample", k, "ms-to-last-byte")), next_,
        (traces[k] == "" ? "–" : traces[k])
    }
    END {
      if (!runs["sample", "poll50ms"] || !runs["sample", "retryafter"] || !runs["sample", "preferwait"]) {
        print "The time-to-data benchmarks did not run (they need the sample size; see the output below)."; exit
      }
      a = v("sample", "poll50ms", "ms-to-last-byte"); b = v("sample", "retryafter", "ms-to-last-byte"); c = v("sample", "preferwait", "ms-to-last-byte")
      printf "Kick-off → last byte of the Synthea sample (%s resources), median of each client'"'"'s exports:\n\n", num(v("sample", "poll50ms", "resources"))
      print "| client | between status polls | status polls | Retry-After told, s in all | ms to manifest | ms to last byte | next to (a) | status answers (each distinct sequence seen) |"
      print "|---|---|---:|---:|---:|---:|---:|---|"
      row("(a)", "poll50ms", "50 ms, Retry-After ignored", "–")
      row("(b)", "retryafter", "max(Retry-After × 1000, 100) ms, as SMART bulk-data-client", sprintf("%+.0f ms", b - a))
      row("(c)", "preferwait", "none: every poll sends `Prefer: wait=" pw "`", pct(c, a))
      print ""
      print "| goal | measured | goal | result |"
      print "|---|---:|---|---|"
      printf "| (c) `Prefer: wait` client within %d %% of the 50 ms poller (a) | %s ms = %s of (a)'"'"'s %s ms | ≤ %d %% | %s |\n",
        pg - 100, num(c), pct(c, a), num(a), pg, ok(100 * c <= pg * a)
      printf "| (b) `Retry-After` client at most one forced wait behind (a) | %s ms = (a) %+.0f ms | ≤ (a) + %s ms | %s |\n",
        num(b), b - a, num(rx), ok(b <= a + rx)
      printf "| (b) for the whole sample | %s ms | ≤ %s ms | %s |\n", num(b), num(rm), ok(b <= rm)
    }' "$raw"
}

# The cluster section (make bench-cluster) is not this script's: kept as is.
cluster_section=$(sed -n '/^<!-- bench-cluster:begin/,/^<!-- bench-cluster:end -->$/p' "$OUT" 2>/dev/null)
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
  echo "  - \`$e2e_line\`"
  echo "  - \`$typefilter_line\`"
  echo "  - \`$auth_line\`"
  echo "  - \`$load_line\`"
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
  echo "CPU µs per message is the process's user + system CPU time (getrusage: every thread, the in-process"
  echo "NATS server and Pebble included) over the timed part, divided by the messages. Ingest does the work of"
  echo "both limits (and decodes, and reads and writes the r/ key) on the same cores, so their CPU per message"
  echo "added bounds its rate on this machine, whatever the overlap between them."
  echo
  echo "### Export: \`bulkstream serve\` end to end, next to the raw scan + write of the same data"
  echo
  export_summary
  echo
  cat <<EOF
\`BenchmarkExportE2E\` (cmd/bulkstream/exportbench_test.go) starts the real binary, \`serve\`, and
loads it with \`gen\` + \`publish\` (\`sample\`: the Synthea file itself; the other sizes:
ceil(n / (0.99 × 38,483)) copies, seed 1, so that n remain after the deletes). It waits until
everything is applied and Pebble's compactions have settled, and runs one untimed full export (the first
1.3 GB written into fresh page cache runs several times slower on this VM) and one untimed raw pass,
all outside the timer.
One op of \`full\` is GET \`\$export\` (Accept: application/fhir+json, Prefer: respond-async), status
polls every 2 ms until the 200 manifest, then every file downloaded over HTTP (identity encoding,
$EXPORT_BENCH_DOWNLOADS at a time, lines counted against the manifest); MB are the NDJSON bytes downloaded
(10^6). \`since\` does the same with \`_since\` = the transactionTime of an export taken after the load,
after which 1 % of the resources were changed (\`gen --changes\`: ~80 % updates, ~20 % deletes, which
come as deleted Bundles). \`group\` runs last, after every other kind: one Group is published then
(and waited for until applied) whose \`member\` lists 1 % of the patients (every hundredth Patient of
the data still live, at least one: the sample's is a Group of 1), and each op is GET
\`Group/<id>/\$export\`, timed and downloaded as \`full\`; it exports those patients' compartments,
the Group itself included (R4's CompartmentDefinition puts a Group in its members' compartments).
Each job is deleted after its op, outside the timer. \`raw\` is the limit:
a copy of serve's Pebble index taken while serve was stopped after the load (its sstables and blob
files hard links to serve's, so both read them through one page cache; what was still in the WAL each
flushes alike when it opens, so both scan the same LSM shape) opened in the benchmark, one snapshot,
every type scanned and each resource written with '\\n' to one bufio file (no fsync, no HTTP). Raw
passes and full exports alternate (raw, full, raw, full, …), and before each of them, outside the
timer, the previous one's output is removed and sync(2) flushes every dirty page, so the limit and the
product run under the same page cache and writeback conditions (run one after the other, the limit ran
behind the writeback of what the exports had just written). Every figure is the median of the ops of
its kind (\`-benchtime $E2E_BENCHTIME\`; the median of those medians over \`-count\` runs if more than
one), so "% of raw" compares medians of interleaved runs.

RSS of the serve process: serve connects to a NATS server in the benchmark process
(\`EXPORT_BENCH_NATS=embedded\` runs its embedded one instead, whose per-subject stream index alone
holds ~80 MB of Go heap at 100k resources and ~520 MB at 1M after a restart: memory of the stream,
not of exports). After the load, serve is stopped and restarted on the same data dir and waited for
until its RSS is still, so the numbers are what exporting costs a running server, not what the bulk
load left behind. Then the benchmark writes 5 to /proc/PID/clear_refs, which resets VmHWM to the
current RSS (the "base"), and after the last byte of the last op it reads VmHWM from
/proc/PID/status: the peak over the untimed and the timed full exports. For \`since\` the mark is
reset before each op (its base is what the full exports left). While the ops run, the RSS and the
Go runtime's share (/metrics) are sampled every 100 ms; the raw output below logs the peak split
into Go and non-Go (C: Pebble's block cache and memtables, malloc arenas, the binary's text).
The SMART reference figure (≈ 14 s for the sample on this machine) is a constant, not measured here.
EOF
  echo
  echo "### Time to data: the Synthea sample for three kinds of client"
  echo
  ttd_summary
  echo
  cat <<EOF
What a user waits for, kick-off to the last byte, depends on how their client polls. Three clients
of \`BenchmarkExportE2E\` export the whole sample (\`sample/poll50ms\`, \`sample/retryafter\`,
\`sample/preferwait\`, \`-benchtime $E2E_BENCHTIME\` exports each, sync(2) before each, medians); each
polls the status URL first right after the kick-off (as the Bulk Data test suite and SMART
bulk-data-client do, so the first poll answers 202 unless it asked to wait), then downloads every file
as \`full\` does. (a) polls every 50 ms and ignores Retry-After. (b) honours Retry-After as
bulk-data-client does: it reads the header of each 202 and waits max(Retry-After × 1000, 100) ms
before the next poll. (c) sends \`Prefer: wait=$TTD_PREFER_WAIT\` (RFC 7240) on every status request,
which the server holds until the job is done (or the wait passes), and polls again at once after a
202. "Retry-After told" adds up the Retry-After of every 202 a client got (also those (a) and (c)
ignore); the last column lists each distinct sequence of answers, from the per-export log lines in
the raw output below.
EOF
  echo
  echo "### \`_typeFilter\`: evaluation cost next to the scan it rides on"
  echo
  typefilter_summary
  echo
  cat <<EOF
\`BenchmarkTypeFilter\` (export/bench_test.go) builds one on-disk index of
\`TYPEFILTER_BENCH_SCALE=$TYPEFILTER_BENCH_SCALE\` copies of the Synthea sample (fresh ids, seed 1)
and then runs, round after round (\`-benchtime $TYPEFILTER_BENCHTIME\`), each kind once: the
scan of every Observation from one snapshot, reading each entry (the limit: no Observation export can
do less); the same scan calling the query's \`Match\` on each resource; and Manager exports of
\`_type=Observation\` without and with the query (kick-off to completed manifest: files written,
fsynced, manifest persisted). Each figure is the median of its rounds. The evaluation cost is the
filtered scan's time minus the plain scan's, per scanned Observation; the goal compares it with the
plain scan's time per Observation.
EOF
  echo
  echo "### Authorization (SMART Backend Services, \`internal/smart\`)"
  echo
  auth_summary
  echo
  echo "A token request costs one assertion check, one jti fsync and one Issue. Every protected request"
  echo "verifies its bearer token; the first request of a token pays the ES384 verification, later ones"
  echo "hit a bounded cache of verified signatures (expiry is still checked every time)."
  echo
  echo "### Load: 50 concurrent export clients while ingest runs (\`TestLoadConcurrentExports\`)"
  echo
  load_summary
  echo
  cat <<'EOF2'
The real binary (serve on its embedded NATS, `--max-export-jobs 16`) holds 800 resources (Patient and
Observation) at the start. First one client alone runs full exports back to back for 2 s: that is the
limit. Then a writer publishes about 1,000 events/s in batches of 20 (creates, updates, deletes of the
same 800 ids) while 50 clients export: half repeat full exports, half chain `_since` exports onto the
transactionTime of their previous one. Every client polls its status URL every 50 ms (the first poll of
a job always answers 202), downloads every file (gzip every other time) and checks each export, or
each chained state, against the publisher's log: it must equal the store after some prefix of the log,
exactly. A 429 is retried after its Retry-After; any other refusal fails the test. Time to manifest
counts from the kick-off that was accepted. RSS is sampled every 100 ms from /proc and /metrics.
The alone time to manifest is mostly the client's 50 ms poll interval, so the loaded/alone ratio
is what 50 clients and ingest add. `make test` runs the same test for 12 s.
EOF2
  echo
  echo "## Raw output"
  echo
  echo '```'
  cat "$raw"
  echo '```'
} >"$OUT"
[ -n "$cluster_section" ] && printf '\n%s\n' "$cluster_section" >>"$OUT"

echo "wrote $OUT (${elapsed}s)"
exit $status
