#!/usr/bin/env bash
# The cost of observability in the proxy (issue 19, "Cost"): CPU per request and latency of one
# client sidecar → server sidecar pair with
#   off    tracing off (the default)
#   p1     tracing on, 1 % of new traces sampled
#   p100   tracing on, every request sampled
#   tap    tracing off, a tap open on the server sidecar all along (its admin port's `/tap`, the
#          same tap the control plane opens for `weft tap`: every request summarized and filtered,
#          100 events/s sent, the rest dropped and counted)
# against the demo app called directly (direct) and, when BASE_PROXY names one, the same pair
# run by another weft-proxy binary (base: e.g. main's, "today's proxy"). Spans go to a real
# OTLP/gRPC receiver (crates/weft-testkit/src/otlp_receiver.py, its output discarded).
# Every pair is loaded in turn, the order rotated each round. One line per point: rps, latency
# percentiles, and both sidecars' CPU (utime + stime from /proc, in 10 ms ticks) over the
# measured window only (a separate warm-up run precedes it); CPU per request is
# ticks × 10 ms / requests.
#
#   bench/observe.sh [BIN_DIR]   # BIN_DIR holds weft, weft-proxy, weft-bench (target/release)
#   ROUNDS=3 DURATION=10s RATE=1000 BASE_PROXY=/path/to/other/weft-proxy bench/observe.sh
#
# The venv with grpcio and opentelemetry-proto is target/tmp/otlp-venv (what the tracing test
# makes), else made in target/bench-otlp-venv on first use (pip, PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release}")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
RATE=${RATE:-1000}
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-observe.XXXXXX"); mkdir -p $W/tls
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

# The OTLP receiver.
VENV=target/tmp/otlp-venv
if ! $VENV/bin/python -c 'import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc' 2>/dev/null; then
  VENV=target/bench-otlp-venv
  if ! $VENV/bin/python -c 'import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc' 2>/dev/null; then
    python3 -m venv $VENV
    $VENV/bin/python -m pip install --quiet --disable-pip-version-check grpcio==1.85.4 opentelemetry-proto==1.45.2
  fi
fi
mkfifo $W/receiver.in
$VENV/bin/python crates/weft-testkit/src/otlp_receiver.py < $W/receiver.in > $W/receiver.out 2>&1 & pids+=($!)
exec 9> $W/receiver.in   # held open: the receiver runs until this script ends
for t in $(seq 100); do grep -q '^OTLP ' $W/receiver.out && break; sleep 0.1; done
OTLP=$(sed -n 's/^OTLP \([0-9]*\)$/\1/p' $W/receiver.out | head -1)
[ -n "$OTLP" ] || { echo "the OTLP receiver did not start:"; cat $W/receiver.out; exit 1; }

$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api; do $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null; done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
$BIN/weft demo-app --name api --listen 127.0.0.1:0 > $W/app.log 2>&1 & pids+=($!)
for t in $(seq 50); do grep -q listening $W/app.log && break; sleep 0.1; done
APP=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app.log | head -1)

tracing() { # percent
  printf 'tracing: { sampling: %s, otlp: { endpoint: "http://127.0.0.1:%s" } }' "$1" "$OTLP"
}
declare -A EXTRA=([off]="" [p1]="$(tracing 1)" [p100]="$(tracing 100)" [tap]="")
declare -A PROXY=([off]=$BIN/weft-proxy [p1]=$BIN/weft-proxy [p100]=$BIN/weft-proxy [tap]=$BIN/weft-proxy)
SETUPS="off p1 p100 tap"
if [ -n "${BASE_PROXY:-}" ]; then
  EXTRA[base]=""; PROXY[base]=$(realpath "$BASE_PROXY"); SETUPS="base $SETUPS"
fi
declare -A CPORT SPID CPID SADMIN
for s in $SETUPS; do
  HOP=$(free); H1=$(free); SADMIN[$s]=$(free)
  cat > $W/server-$s.yaml <<YAML
identity: { cert: "$W/tls/api.pem", key: "$W/tls/api-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:${SADMIN[$s]}" }
inbound:
  listen: "127.0.0.1:$HOP"
  ports: [{ port: $APP }]
timeouts: { drain: 1s }
${EXTRA[$s]}
YAML
  ${PROXY[$s]} run --config $W/server-$s.yaml > $W/server-$s.log 2>&1 & SPID[$s]=$!; pids+=($!)
  cat > $W/client-$s.yaml <<YAML
identity: { cert: "$W/tls/web.pem", key: "$W/tls/web-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:$H1", service: api }] }
services:
  - name: api
    endpoints:
      - { address: "127.0.0.1:$APP", proxy: "127.0.0.1:$HOP", identity: "spiffe://cluster.local/ns/default/sa/api" }
timeouts: { drain: 1s }
${EXTRA[$s]}
YAML
  ${PROXY[$s]} run --config $W/client-$s.yaml > $W/client-$s.log 2>&1 & CPID[$s]=$!; pids+=($!)
  CPORT[$s]=$H1
done
for s in $SETUPS; do
  ok=""
  for i in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:${CPORT[$s]}/bytes/10" && ok=1 && break; sleep 0.1; done
  [ -n "$ok" ] || { echo "setup $s does not answer 200"; cat $W/server-$s.log $W/client-$s.log; exit 1; }
done
# The tap setup's server sidecar is tapped for as long as the script runs (a tap ends after 10,000
# events or 600 s: it is opened again at once).
( while true; do curl -sfN -o /dev/null "http://127.0.0.1:${SADMIN[tap]}/tap?seconds=600&max=10000" || sleep 0.2; done ) &
pids+=($!)
# A traced pair must really export (else its figures measure nothing).
for t in $(seq 100); do grep -q '^SPAN ' $W/receiver.out && break; sleep 0.1; done
grep -q '^SPAN ' $W/receiver.out || { echo "no span reached the OTLP receiver"; cat $W/client-p100.log; exit 1; }
# From here on the receiver's output is not kept (it would grow by two lines per traced request).
: > $W/receiver.out

ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # setup label args...
  local s=$1 label=$2; shift 2
  local addr
  if [ $s = direct ]; then addr=127.0.0.1:$APP; else addr=127.0.0.1:${CPORT[$s]}; fi
  $BIN/weft-bench load --addr $addr --path /bytes/1024 --warmup 0s --duration $WARMUP "$@" >/dev/null 2>&1
  local t0=0 t1=0
  [ $s = direct ] || t0=$(( $(ticks ${SPID[$s]}) + $(ticks ${CPID[$s]}) ))
  local out=$($BIN/weft-bench load --addr $addr --path /bytes/1024 --warmup 0s --duration $DURATION "$@" 2>&1 | tr '\n' ' ' | tr -s ' ')
  [ $s = direct ] || t1=$(( $(ticks ${SPID[$s]}) + $(ticks ${CPID[$s]}) ))
  local n=$(echo "$out" | sed -n 's/.* ok \([0-9]*\).*/\1/p')
  local per="-"
  [ $s = direct ] || per=$(awk -v t=$((t1-t0)) -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.1f", t * 10000 / n; else print "-" }')
  echo "$s $label pair_cpu_ticks=$((t1-t0)) cpu_us_per_request=$per :: $out"
}
set -- direct $SETUPS
for r in $(seq $ROUNDS); do
  for s in "$@"; do
    run $s h1-${RATE}rps --proto h1 -c 100 --rate $RATE
  done
  set -- "${@:2}" "$1"
done
# The tap must have seen requests (else its figures measure nothing).
[ "$(curl -sf "http://127.0.0.1:${SADMIN[tap]}/metrics" | sed -n 's/^weft_tap_events_dropped_total \([0-9]*\).*/\1/p')" != "0" ] \
  || echo "warning: the tap setup's server dropped no tap event (was the tap open?)"
