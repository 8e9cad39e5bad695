#!/usr/bin/env bash
# Instructions per request of a client sidecar → server sidecar pair, counted by valgrind's
# callgrind: a figure that does not depend on how busy the machine is (two runs of one binary
# agree within about 0.2 %), for the rule "a feature that is off costs the request that does
# not use it nothing" (issues 17 and 19). Every feature is off (no routes, policies, tracing,
# tap or access log): the plain meshed request.
#
#   bench/callgrind.sh [BIN_DIR]                     # BIN_DIR holds weft, weft-proxy, weft-bench
#   BASE_PROXY=/path/to/other/weft-proxy bench/callgrind.sh   # and the same pair run by another build
#   PROXIES="a=/path/weft-proxy b=/path/weft-proxy" ROUNDS=3 bench/callgrind.sh   # more builds, rotated
#   REQUESTS=2000 RATE=200 bench/callgrind.sh
#
# For each proxy binary: both sidecars start under `valgrind --tool=callgrind` (from files, no
# control plane), take a warm-up load, their counters are zeroed (`callgrind_control -z`), the
# measured load runs (HTTP/1.1 from the app side, 10 connections, open loop), and the counters
# are dumped. Printed per sidecar: instructions per request, and with SHOW=N the N costliest
# functions (inclusive) of that dump, for finding where a change went. Build with
# `--config profile.release.debug=1` for function names with line numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release}")
REQUESTS=${REQUESTS:-2000}
RATE=${RATE:-200}
SHOW=${SHOW:-0}
command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null 2>&1 || { echo "valgrind is needed (apt-get install valgrind)"; exit 1; }; }
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-callgrind.XXXXXX"); mkdir -p $W/tls
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT

$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api; do $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null; done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
$BIN/weft demo-app --name api --listen 127.0.0.1:0 > $W/app.log 2>&1 & pids+=($!)
for t in $(seq 50); do grep -q listening $W/app.log && break; sleep 0.1; done
APP=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app.log | head -1)

declare -A PROXY=([main]=$BIN/weft-proxy)
SETUPS=main
if [ -n "${BASE_PROXY:-}" ]; then PROXY[base]=$(realpath "$BASE_PROXY"); SETUPS="base main"; fi
# More builds side by side: PROXIES="name=/path/weft-proxy other=/path/weft-proxy".
for np in ${PROXIES:-}; do PROXY[${np%%=*}]=$(realpath "${np#*=}"); SETUPS="$SETUPS ${np%%=*}"; done
ROUNDS=${ROUNDS:-1}

measure() { # setup
  local s=$1 hop=$(free) h1=$(free)
  cat > $W/server-$s.yaml <<YAML
identity: { cert: "$W/tls/api.pem", key: "$W/tls/api-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
inbound:
  listen: "127.0.0.1:$hop"
  ports: [{ port: $APP }]
timeouts: { drain: 1s }
YAML
  cat > $W/client-$s.yaml <<YAML
identity: { cert: "$W/tls/web.pem", key: "$W/tls/web-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:$h1", service: api }] }
services:
  - name: api
    endpoints:
      - { address: "127.0.0.1:$APP", proxy: "127.0.0.1:$hop", identity: "spiffe://cluster.local/ns/default/sa/api" }
timeouts: { drain: 1s }
YAML
  local side pid
  declare -A PIDS
  for side in server client; do
    GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.cpu.x86_rep_movsb_threshold=2097152} valgrind --tool=callgrind --callgrind-out-file=$W/$s-$side.%p.out ${PROXY[$s]} run --workers 1 --config $W/$side-$s.yaml \
      > $W/$side-$s.log 2>&1 &
    PIDS[$side]=$!; pids+=($!)
  done
  local ok=""
  for i in $(seq 600); do curl -sf -m 5 -o /dev/null "http://127.0.0.1:$h1/bytes/10" && ok=1 && break; sleep 0.1; done
  [ -n "$ok" ] || { echo "setup $s does not answer 200"; cat $W/server-$s.log $W/client-$s.log; exit 1; }
  $BIN/weft-bench load --addr 127.0.0.1:$h1 --path /bytes/1024 --proto h1 -c 10 --rate $RATE --warmup 0s --duration 3s >/dev/null 2>&1
  for side in server client; do callgrind_control -z ${PIDS[$side]} >/dev/null; done
  local secs=$(( (REQUESTS + RATE - 1) / RATE ))
  local out=$($BIN/weft-bench load --addr 127.0.0.1:$h1 --path /bytes/1024 --proto h1 -c 10 --rate $RATE --warmup 0s --duration ${secs}s 2>&1 | tr '\n' ' ')
  local n=$(echo "$out" | sed -n 's/.* ok \([0-9]*\).*/\1/p')
  [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "setup $s: no request succeeded: $out"; exit 1; }
  for side in server client; do
    callgrind_control -d ${PIDS[$side]} >/dev/null
    local dump
    for t in $(seq 100); do
      dump=$(ls $W/$s-$side.${PIDS[$side]}.out.* 2>/dev/null | head -1) && [ -n "$dump" ] && break
      sleep 0.1
    done
    [ -n "$dump" ] || { echo "no callgrind dump for $s $side"; exit 1; }
    local total=$(callgrind_annotate "$dump" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
    echo "$s $side requests=$n instructions=$total per_request=$(( total / n ))"
    if [ "$SHOW" -gt 0 ]; then
      callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n "2,$((SHOW + 1))p" \
        | sed "s/^/    $s $side /" | cut -c1-220
    fi
    kill ${PIDS[$side]} 2>/dev/null || true
  done
}
# Rounds rotate the order: the count moves a little with how requests batch (a busier machine
# batches more per wake-up), so compare builds measured in the same run.
set -- $SETUPS
for r in $(seq $ROUNDS); do
  for s in "$@"; do measure $s; done
  set -- "${@:2}" "$1"
done
