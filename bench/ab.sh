#!/usr/bin/env bash
# A/B of two weft-proxy builds: each as a sidecar pair (bench/conf/weft-*.yaml) against one demo
# app, side by side, alternating which goes first each round. Prints one line per point: rps,
# percentiles and the pair's CPU ticks (utime + stime, 10 ms each) over warm-up + measurement.
#
#   bench/ab.sh OLD_WEFT_PROXY NEW_WEFT_PROXY          # ROUNDS=4 by default
#
# Build an older proxy in a git worktree with the release-proxy profile and copy the binary out
# (bench/README.md). Uses target/release/weft (demo app, certificates) and weft-bench (load).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: bench/ab.sh OLD_WEFT_PROXY NEW_WEFT_PROXY" >&2; exit 2; }
declare -A PROXY=([old]=$(realpath "$1") [new]=$(realpath "$2"))
BIN=target/release
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-ab.XXXXXX"); mkdir -p $W/tls
$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api; do $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null; done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
$BIN/weft demo-app --name api --listen 127.0.0.1:0 > $W/app.log 2>&1 & pids+=($!)
for i in $(seq 50); do grep -q listening $W/app.log && break; sleep 0.1; done
APP=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app.log | head -1)
declare -A CPORT CPID SPID
for v in old new; do
  H1=$(free); HOP=$(free)
  sed -e "s#{{TLS}}#$W/tls#g" -e "s#{{H1_PORT}}#$H1#g" -e "s#{{APP_PORT}}#$APP#g" -e "s#{{HOP_PORT}}#$HOP#g" bench/conf/weft-server.yaml > $W/$v-server.yaml
  sed -e "s#{{TLS}}#$W/tls#g" -e "s#{{H1_PORT}}#$H1#g" -e "s#{{APP_PORT}}#$APP#g" -e "s#{{HOP_PORT}}#$HOP#g" bench/conf/weft-client.yaml > $W/$v-client.yaml
  ${PROXY[$v]} run --config $W/$v-server.yaml > $W/$v-server.log 2>&1 & SPID[$v]=$!; pids+=($!)
  ${PROXY[$v]} run --config $W/$v-client.yaml > $W/$v-client.log 2>&1 & CPID[$v]=$!; pids+=($!)
  CPORT[$v]=$H1
done
for v in old new; do for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:${CPORT[$v]}/bytes/10 && break; sleep 0.1; done; done
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
run() { # variant label args...
  local v=$1 label=$2; shift 2
  local t0=$(ticks ${CPID[$v]} ${SPID[$v]})
  local out=$($BIN/weft-bench load --addr 127.0.0.1:${CPORT[$v]} --warmup 2s "$@" 2>&1)
  local t1=$(ticks ${CPID[$v]} ${SPID[$v]})
  echo "$v $label cpu_ticks=$((t1-t0)) :: $(echo "$out" | tr '\n' ' ' | tr -s ' ')"
}
ROUNDS=${ROUNDS:-4}
for r in $(seq $ROUNDS); do
  if (( r % 2 )); then order="old new"; else order="new old"; fi
  for v in $order; do
    run $v h1-peak --proto h1 -c 100 --duration 8s
    run $v h2-peak --proto h2 -c 100 --connections 10 --duration 8s
    run $v h1-1000rps --proto h1 -c 100 --rate 1000 --duration 8s
    run $v h1-1MiB-peak --proto h1 -c 10 --duration 8s --path /bytes/1048576
    run $v h2-1MiB-peak --proto h2 -c 10 --connections 2 --duration 8s --path /bytes/1048576
  done
done
