#!/usr/bin/env bash
# Runs the cluster-mode benchmarks (called by `make bench-cluster`), each
# next to its limit measured in the same run, and writes or replaces the
# section "## Cluster (make bench-cluster)" of BENCHMARKS.md, between the
# marker comments below (appended at the end if there is none); the rest
# of the file is left as it is.
#
#   ./jsstore/         BenchmarkObjectStoreFile: a 64 MiB export file put
#                      and got through jsstore.FileStore vs raw
#                      ObjectStore.Put/Get of the same bytes (embedded
#                      single-node server)
#   ./cmd/bulkstream/  BenchmarkClusterObjectStoreFile: the same on a
#                      3-node NATS cluster, R3 bucket
#                      BenchmarkClusterExport: the real binary on a 3-node
#                      cluster: a full export on a single node with local
#                      files vs cluster mode (kv + objectstore); K exports
#                      at once on 1 replica vs 2; takeover after kill -9
#                      of the owner (--job-lease 2s)
#                      BenchmarkReplicaBootstrap: a fresh replica applying
#                      the sample from the R3 stream vs raw consumers
#
# Environment:
#
#   GO                        go command (go)
#   CLUSTER_BENCH_RESOURCES   resources exported (200k; gen writes
#                             ceil(n / 38,483) copies of the sample). Not
#                             1M as in `make bench`: on the 2-core VM the
#                             R3 stream takes ~3,500 published events/s
#                             (about 5 min for 1M, with three replicas
#                             applying them), a cluster-mode export runs at
#                             ~15k resources/s (over a minute for 1M), and
#                             a default run does ~35 of them, 4 at once
#                             holding 4 × 1.3 GB × 3 copies in the bucket:
#                             about an hour; 200k, about 10 minutes
#                             (estimated from 38k-resource trial runs)
#   CLUSTER_BENCH_CONCURRENT  exports at once, K (4)
#   CLUSTER_BENCHTIME         -benchtime of BenchmarkClusterExport (3x:
#                             ops of each part; figures are medians)
#   OBJECTSTORE_BENCHTIME     -benchtime of the Object Store benchmarks (3x)
#   BOOTSTRAP_BENCHTIME       -benchtime of BenchmarkReplicaBootstrap (3x)
#   BENCH_OUT                 report file (BENCHMARKS.md)
#   CLUSTER_ONLY              comma-separated parts to run, of objectstore,
#                             export, bootstrap (all)
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DEFAULT_RESOURCES=200k
export CLUSTER_BENCH_RESOURCES=${CLUSTER_BENCH_RESOURCES:-$DEFAULT_RESOURCES}
export CLUSTER_BENCH_CONCURRENT=${CLUSTER_BENCH_CONCURRENT:-4}
CLUSTER_BENCHTIME=${CLUSTER_BENCHTIME:-3x}
OBJECTSTORE_BENCHTIME=${OBJECTSTORE_BENCHTIME:-3x}
BOOTSTRAP_BENCHTIME=${BOOTSTRAP_BENCHTIME:-3x}
OUT=${BENCH_OUT:-BENCHMARKS.md}
BEGIN='<!-- bench-cluster:begin (scripts/bench-cluster.sh writes this section; rerun `make bench-cluster`) -->'
END='<!-- bench-cluster:end -->'
LEASE_MS=7000 # --job-lease 2s + the 5 s grace before a takeover

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$work/raw.txt
: >"$raw"

os_single_cmd=("$GO" test -run '^$' -bench '^BenchmarkObjectStoreFile$' -benchtime "$OBJECTSTORE_BENCHTIME" -timeout 20m ./jsstore/)
os_cluster_cmd=("$GO" test -run '^$' -bench '^BenchmarkClusterObjectStoreFile$' -benchtime "$OBJECTSTORE_BENCHTIME" -timeout 20m ./cmd/bulkstream/)
export_cmd=("$GO" test -v -run '^$' -bench '^BenchmarkClusterExport$' -benchtime "$CLUSTER_BENCHTIME" -timeout 120m ./cmd/bulkstream/)
boot_cmd=("$GO" test -run '^$' -bench '^BenchmarkReplicaBootstrap$' -benchtime "$BOOTSTRAP_BENCHTIME" -timeout 30m ./cmd/bulkstream/)
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
os_single_line=$(show "${os_single_cmd[@]}")
os_cluster_line=$(show "${os_cluster_cmd[@]}")
export_line="CLUSTER_BENCH_RESOURCES=$CLUSTER_BENCH_RESOURCES CLUSTER_BENCH_CONCURRENT=$CLUSTER_BENCH_CONCURRENT $(show "${export_cmd[@]}")"
boot_line=$(show "${boot_cmd[@]}")

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
CLUSTER_ONLY=${CLUSTER_ONLY:-objectstore,export,bootstrap}
part() { [[ ,$CLUSTER_ONLY, == *,$1,* ]]; }
part objectstore && run "$os_single_line" "${os_single_cmd[@]}"
part objectstore && run "$os_cluster_line" "${os_cluster_cmd[@]}"
part export && run "$export_line" "${export_cmd[@]}"
part bootstrap && run "$boot_line" "${boot_cmd[@]}"
elapsed=$(($(date +%s) - start))

# Every benchmark line "Name-P N v unit v unit ..." becomes "Name unit v"
# lines (averaged over -count runs), which m looks up.
metrics=$work/metrics.txt
awk '/^Benchmark/ {
  name = $1; sub(/-[0-9]+$/, "", name)
  for (i = 3; i + 1 <= NF; i += 2) { k = name " " $(i + 1); s[k] += $i; c[k]++ }
}
END { for (k in s) print k, s[k] / c[k] }' "$raw" >"$metrics"
m() { awk -v k="$1 $2" '{ v = $NF; key = $1 " " $2 } key == k { print v; exit }' "$metrics"; }
# num value [decimals]: thousands separated; "–" when empty.
num() {
  awk -v x="$1" -v d="${2:-0}" 'BEGIN {
    if (x == "") { print "–"; exit }
    s = sprintf("%." d "f", x); frac = ""
    if (d > 0) { frac = substr(s, index(s, ".")); s = substr(s, 1, index(s, ".") - 1) }
    out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    print s out frac
  }'
}
# pct a b: a as a percentage of b.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.0f %%\n", 100 * a / b }'; }
# ratio a b: a / b, two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f×\n", a / b }'; }

# failed_note n: says how many exports failed (status 500) and were
# started again; their time is in the figures (see EXPORT FAILED in the
# raw output).
failed_note() {
  if [ -n "$1" ] && [ "$1" != 0 ]; then
    echo
    echo "**$(num "$1") export(s) failed (status 500) and were started again** in these ops; the retry's time is in the figures. See \`EXPORT FAILED\` in the raw output."
  fi
}

# rerun_note n: says how many export runs the replicas started again
# (a run that failed retried by cluster mode, or a job taken over).
rerun_note() {
  if [ -n "$1" ] && [ "$1" != 0 ]; then
    echo
    echo "**The replicas started $(num "$1") export run(s) again** in these ops (more \`export job started\` log lines than exports: a failed run retried, or a job taken over after a lost lease); the reruns' time is in the figures."
  fi
}

# retry503_note n: says how many downloads a replica answered 503 (shared
# files out of reach for a moment) and the client fetched again after
# Retry-After.
retry503_note() {
  if [ -n "$1" ] && [ "$1" != 0 ]; then
    echo
    echo "**$(num "$1") download(s) were answered 503 (the shared files out of reach for a moment, under this load) and fetched again after \`Retry-After\`**, as a polite client does; the waits are in the figures."
  fi
}

tmpdir=${TMPDIR:-/tmp}
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs=$(df -T "$tmpdir" | awk 'NR == 2 {print $2 " on " $1 " (mounted on " $7 ")"}')
rev=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
natsv=$("$GO" list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2 2>/dev/null || echo unknown)
resources=$(m BenchmarkClusterExport/full resources)
[ -n "$resources" ] || resources=$(m BenchmarkClusterExport/takeover resources)

sizes="\`CLUSTER_BENCH_RESOURCES=$CLUSTER_BENCH_RESOURCES\` (exported: $(num "$resources") resources, whole copies of the Synthea sample), \`CLUSTER_BENCH_CONCURRENT=$CLUSTER_BENCH_CONCURRENT\`, \`-benchtime $CLUSTER_BENCHTIME\` (export), \`$OBJECTSTORE_BENCHTIME\` (Object Store), \`$BOOTSTRAP_BENCHTIME\` (bootstrap)"
trial=""
if [ "$CLUSTER_BENCH_RESOURCES" != "$DEFAULT_RESOURCES" ] || [ "$CLUSTER_ONLY" != objectstore,export,bootstrap ]; then
  trial="**Trial run, not the default sizes** (default \`CLUSTER_BENCH_RESOURCES=$DEFAULT_RESOURCES\`, every part): the figures below are from the sizes named here; rerun \`make bench-cluster\` for the real ones."
fi

section=$work/section.md
{
  echo "$BEGIN"
  echo "## Cluster (make bench-cluster)"
  echo
  echo "Generated by \`make bench-cluster\` (scripts/bench-cluster.sh) — do not edit by hand; rerun it."
  [ -n "$trial" ] && { echo; echo "$trial"; }
  if [ "$status" -ne 0 ]; then
    echo
    echo "**Some benchmarks failed in this run** (\`exit status\` and \`FAIL\` in the raw output below); what they did not report shows as –."
  fi
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- Revision: $rev"
  echo "- Machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r)"
  echo "- Go: $("$GO" version); nats-server $natsv (built from go.mod), 3 processes on loopback, one machine"
  echo "- Temp dir (NATS stores, Pebble dirs, local export files): \`$tmpdir\`, $fs"
  echo "- Sizes: $sizes"
  echo "- Wall time of the run: ${elapsed}s"
  echo "- Commands:"
  part objectstore && echo "  - \`$os_single_line\`"
  part objectstore && echo "  - \`$os_cluster_line\`"
  part export && echo "  - \`$export_line\`"
  part bootstrap && echo "  - \`$boot_line\`"
  echo
  echo "### Object Store: export files vs raw ObjectStore.Put/Get (64 MiB file)"
  echo
  echo "| operation | single node (embedded, R1) | next to its limit | 3-node cluster, R3 bucket | next to its limit |"
  echo "|---|---:|---:|---:|---:|"
  for op in put get; do
    s=$(m "BenchmarkObjectStoreFile/FileStore/$op" MB/s)
    sr=$(m "BenchmarkObjectStoreFile/raw/$op" MB/s)
    c=$(m "BenchmarkClusterObjectStoreFile/FileStore/$op" MB/s)
    cr=$(m "BenchmarkClusterObjectStoreFile/raw/$op" MB/s)
    echo "| \`FileStore\` $op ($([ $op = put ] && echo "export parts, written 256 KiB at a time" || echo "the file read whole")) | $(num "$s" 1) MB/s | $(pct "$s" "$sr") | $(num "$c" 1) MB/s | $(pct "$c" "$cr") |"
    echo "| raw \`ObjectStore.$([ $op = put ] && echo Put || echo Get)\` (limit) | $(num "$sr" 1) MB/s | 100 % | $(num "$cr" 1) MB/s | 100 % |"
  done
  echo
  cat <<'EOF'
`jsstore.FileStore` writes an export file as parts of at most 64 MiB plus a file object naming them
(one part here) and reads it back whole; the limit is one `ObjectStore.Put`/`Get` of the same bytes in
one object of the same bucket. The single-node column is jsstore's `BenchmarkObjectStoreFile` (an
embedded server), the cluster column `BenchmarkClusterObjectStoreFile` (3 nats-server processes, the
bucket R3 as `serve --replicas 3` creates it: every put is stored by three servers on this machine's
disk and cores). MB are 10^6 bytes.
EOF
  echo
  echo "### Full export: single node vs cluster mode"
  echo
  f=BenchmarkClusterExport/full
  echo "| replica | resources | ms to manifest | ms to last byte | resources/s | next to single |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| single node: \`--job-store pebble --file-store local\` (the limit) | $(num "$(m $f resources)") | $(num "$(m $f single-ms-to-manifest)") | $(num "$(m $f single-ms-to-last-byte)") | $(num "$(m $f single-resources/s)") | 100 % |"
  echo "| cluster mode: \`--replica-id a --job-store kv --file-store objectstore\` | $(num "$(m $f resources)") | $(num "$(m $f cluster-ms-to-manifest)") | $(num "$(m $f cluster-ms-to-last-byte)") | $(num "$(m $f cluster-resources/s)") | $(pct "$(m $f single-ms-to-last-byte)" "$(m $f cluster-ms-to-last-byte)") |"
  echo
  echo "A full export in cluster mode, kick-off to last byte, takes $(ratio "$(m $f cluster-ms-to-last-byte)" "$(m $f single-ms-to-last-byte)") the time of the same export on a single node with local files."
  cmb=$(awk -v mb="$(m $f MB)" -v ms="$(m $f cluster-ms-to-manifest)" 'BEGIN { if (mb != "" && ms > 0) print mb / ms * 1000 }')
  dmb=$(awk -v mb="$(m $f MB)" -v a="$(m $f cluster-ms-to-manifest)" -v z="$(m $f cluster-ms-to-last-byte)" 'BEGIN { if (mb != "" && z > a) print mb / (z - a) * 1000 }')
  echo
  echo "In cluster mode the export writes its $(num "$(m $f MB)" 1) MB of NDJSON into the R3 Object Store at $(num "$cmb" 1) MB/s (kick-off → manifest),"
  echo "$(pct "$cmb" "$(m BenchmarkClusterObjectStoreFile/raw/put MB/s)") of a raw R3 \`ObjectStore.Put\` above, and the client downloads it (2 files at a time, through the replica) at"
  echo "$(num "$dmb" 1) MB/s (manifest → last byte), $(pct "$dmb" "$(m BenchmarkClusterObjectStoreFile/raw/get MB/s)") of a raw R3 \`ObjectStore.Get\`. One op is a full export on the single node and"
  echo "one on replica a (the order alternating), each after sync(2), status polled every 2 ms, every file downloaded"
  echo "over HTTP from the replica asked (identity encoding, 2 at a time, lines counted against the manifest), the job deleted"
  echo "after it; replica b runs too, and its workers may claim the job (both with the default \`--job-lease 15s\`). The three serve processes and the three NATS"
  echo "servers share the machine. Medians over the ops."
  failed_note "$(m $f failed-exports)"
  rerun_note "$(m $f runs-started-again)"
  echo
  c=BenchmarkClusterExport/concurrent
  echo "### $CLUSTER_BENCH_CONCURRENT concurrent exports: 2 replicas vs 1"
  echo
  echo "| setup | first kick-off → last byte of the last export, ms | next to 1 replica |"
  echo "|---|---:|---:|"
  echo "| $CLUSTER_BENCH_CONCURRENT exports on replica a alone (b stopped) | $(num "$(m $c one-replica-ms)") | 100 % |"
  echo "| $CLUSTER_BENCH_CONCURRENT exports kicked off half on a, half on b | $(num "$(m $c two-replicas-ms)") | $(pct "$(m $c two-replicas-ms)" "$(m $c one-replica-ms)") of the time ($(ratio "$(m $c one-replica-ms)" "$(m $c two-replicas-ms)") the throughput) |"
  echo
  echo "**On this $(nproc)-core machine the replicas, the three NATS servers and the clients share the same CPUs and disk,"
  echo "so this measures what spreading exports over replicas costs, not scale-out.** Each replica runs"
  echo "\`--export-workers 2\` and \`--job-lease 15s\` (the defaults), so 1 replica runs 2 of the exports at a time and 2 replicas all 4;"
  echo "any replica's worker may claim a job kicked off on another (the raw output logs which replica wrote"
  echo "how many resources per op)."
  failed_note "$(m $c failed-exports)"
  rerun_note "$(m $c runs-started-again)"
  retry503_note "$(m $c downloads-retried-after-503)"
  echo
  t=BenchmarkClusterExport/takeover
  echo "### Takeover: kill -9 of the replica running an export (\`--job-lease 2s\`)"
  echo
  echo "| from the kill to | ms | next to |"
  echo "|---|---:|---|"
  echo "| the survivor taking the job over (its status stops naming the dead owner) | $(num "$(m $t ms-kill-to-takeover)") | \`--job-lease\` + 5 s grace: $(num $LEASE_MS) ms |"
  echo "| the manifest on the survivor | $(num "$(m $t ms-kill-to-manifest)") | takeover → manifest, the export's own run on the survivor: $(num "$(m $t ms-takeover-to-manifest)") ms (a cluster export on a live replica: $(num "$(m $f cluster-ms-to-manifest)") ms to manifest) |"
  echo "| the last byte downloaded from the survivor | $(num "$(m $t ms-kill-to-last-byte)") | – |"
  echo
  cat <<EOF
One op kicks off a full export ($(num "$(m $t resources)") resources) on replica a, finds the replica whose worker
claimed it (the other one's status answers \`running on replica <owner>\`), kills that one with SIGKILL
$(num "$(m $t ms-run-before-kill)") ms after the kick-off (median), and polls the survivor's status every 5 ms. The owner renewed its lease
every third of it, so the survivor takes over between 2/3 of the lease and the lease after the kill,
plus the 5 s grace, plus up to a third of the lease until its lease loop looks; the job then runs again
from scratch. Both cluster replicas are restarted with \`--job-lease 2s\` before the first op, and the killed one
on its data dir after each op, outside the timer.
EOF
  echo
  echo "### Bootstrap: a fresh replica applying the Synthea sample from the R3 stream"
  echo
  bo=BenchmarkReplicaBootstrap
  echo "| reader | events/s | replica next to it |"
  echo "|---|---:|---:|"
  echo "| new serve replica: process start → last sequence applied | $(num "$(m $bo replica-events/s)") | – |"
  echo "| raw durable consumer, pulled as serve pulls (limit) | $(num "$(m $bo raw-durable-events/s)") | $(num "$(m $bo %-of-durable)") % |"
  echo "| raw ordered consumer, no acks (limit) | $(num "$(m $bo raw-ordered-events/s)") | $(num "$(m $bo %-of-ordered)") % |"
  echo
  echo "\`BenchmarkReplicaBootstrap\` (cmd/bulkstream/cluster_bench_test.go): each op starts the real binary on an"
  echo "empty data dir with its own durable consumer and times it until it reports the stream's last sequence"
  echo "applied (its start is part of it); both limits read the same 38,483 events in the same op, on the same cluster."
  echo
  echo "### Raw output of the cluster run"
  echo
  echo '```'
  cat "$raw"
  echo '```'
  echo "$END"
} >"$section"

# Replace the section between the markers, or append it.
if [ -f "$OUT" ] && grep -qF "$BEGIN" "$OUT" && grep -qF "$END" "$OUT"; then
  awk -v b="$BEGIN" -v e="$END" -v f="$section" '
    $0 == b { while ((getline l < f) > 0) print l; skip = 1; next }
    $0 == e { skip = 0; next }
    !skip' "$OUT" >"$work/out.md"
else
  { [ -f "$OUT" ] && cat "$OUT" && echo; cat "$section"; } >"$work/out.md"
fi
cat "$work/out.md" >"$OUT"

echo "wrote the cluster section of $OUT (${elapsed}s)"
exit $status
