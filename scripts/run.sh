#!/usr/bin/env bash
# make run: serve on the embedded default, publish the sample, keep serving.
set -euo pipefail
bin=${1:-bin/bulkstream}
listen=${BULKSTREAM_LISTEN:-127.0.0.1:8080}
sample=testdata/synthea-r4-100-patients.ndjson.gz

"$bin" serve &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM EXIT

host=${listen%:*} port=${listen##*:}
for _ in $(seq 1 150); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  if ! kill -0 $pid 2>/dev/null; then echo "bulkstream serve exited" >&2; exit 1; fi
  sleep 0.2
done

"$bin" publish "$sample"

cat <<MSG

bulkstream is running (pid $pid) with the Synthea sample published.
Try:
  curl -si 'http://$listen/fhir/\$export?_type=Patient' -H 'Accept: application/fhir+json' -H 'Prefer: respond-async'
  curl -s <the Content-Location it answers>            # 202 while running, then the manifest
  curl -s http://$listen/metrics | grep '^bulkstream_index_resources'
  curl -s http://$listen/readyz
  $bin gen --scale 2 --seed 7 | $bin publish -      # more data
  nats --server nats://127.0.0.1:4222 stream info FHIR   # with the nats CLI
Ctrl-C stops it; the data stays in ./data.
MSG
wait $pid
