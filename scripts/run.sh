#!/usr/bin/env bash
# make run: start `bulkstream serve` (embedded NATS, Pebble under ./data),
# publish the Synthea sample built into the binary, print what to try, and
# serve until Ctrl-C.
#
# serve reads every flag from BULKSTREAM_<FLAG> as well; this script reads
# the same variables, so publish and the hints use serve's addresses. When
# 8080 or 4222 is taken:
#   BULKSTREAM_LISTEN=127.0.0.1:8081 BULKSTREAM_NATS_LISTEN=127.0.0.1:4223 make run
#
# Exit status: 0 when Ctrl-C (SIGINT) or SIGTERM stopped serve and serve
# shut down cleanly; serve's status if serve failed; nonzero if a step of
# the script failed.
set -euo pipefail
bin=${1:-bin/bulkstream}
listen=${BULKSTREAM_LISTEN:-127.0.0.1:8080}
nats_listen=${BULKSTREAM_NATS_LISTEN:-127.0.0.1:4222}
nats_url=${BULKSTREAM_NATS_URL:-nats://$nats_listen}
data_dir=${BULKSTREAM_DATA_DIR:-./data}
base=http://$listen${BULKSTREAM_BASE_PATH:-/fhir}

# tcp_open HOST:PORT succeeds if something accepts TCP connections there
# (an empty or wildcard host is tried on 127.0.0.1).
tcp_open() {
  local host=${1%:*} port=${1##*:}
  host=${host#[} host=${host%]}
  case $host in "" | 0.0.0.0 | ::) host=127.0.0.1 ;; esac
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

in_use() {
  cat >&2 <<MSG
make run: $1 is already in use (by another program, or a bulkstream still running).
Pick free addresses, e.g.:
  BULKSTREAM_LISTEN=127.0.0.1:8081 BULKSTREAM_NATS_LISTEN=127.0.0.1:4223 make run
MSG
  exit 1
}
if tcp_open "$listen"; then in_use "the HTTP address $listen (BULKSTREAM_LISTEN)"; fi
if [ -z "${BULKSTREAM_NATS_URL:-}" ] && tcp_open "$nats_listen"; then
  in_use "the NATS address $nats_listen (BULKSTREAM_NATS_LISTEN)"
fi

"$bin" serve &
pid=$!

# On Ctrl-C or SIGTERM: stop serve (Ctrl-C in a terminal reaches it too)
# and exit with its status, 0 after a clean shutdown, so that make does
# not report an error.
stop() {
  trap - INT TERM EXIT
  kill -TERM "$pid" 2>/dev/null || true
  local rc=0
  wait "$pid" || rc=$?
  exit "$rc"
}
trap stop INT TERM
# If a step below fails, do not leave serve running.
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT

ready=
for _ in $(seq 1 300); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rc=0
    wait "$pid" || rc=$?
    echo "make run: bulkstream serve exited with status $rc before serving" >&2
    exit $((rc == 0 ? 1 : rc))
  fi
  if tcp_open "$listen"; then ready=1 && break; fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "make run: bulkstream serve is not listening on $listen after 60s" >&2
  exit 1
fi

"$bin" publish --nats-url "$nats_url" --sample

cat <<MSG

bulkstream is running (pid $pid) with the Synthea sample published.
Try:
  curl -si '$base/\$export?_type=Patient' -H 'Accept: application/fhir+json' -H 'Prefer: respond-async'
  curl -s -H 'Prefer: wait=10' <the Content-Location it answers>   # the manifest once the job is done
  curl -s http://$listen/metrics | grep '^bulkstream_index_resources'
  curl -s http://$listen/readyz
  $bin gen --scale 2 --seed 7 | $bin publish --nats-url $nats_url -   # more data
  nats --server $nats_url stream info FHIR   # with the nats CLI (see README)
Ctrl-C stops it; the data stays in $data_dir.
MSG
rc=0
wait "$pid" || rc=$?
trap - EXIT
exit "$rc"
